"""Differentiable Gaussian rasterization, the one door into rendering for every part of moegs-bench.

- ``render(state, camera)``: one ``GaussianState`` at one ``Camera``;
- ``rasterize(means, ..., viewmat, K, width, height)``: the same on raw tensors;
- ``rasterize_grouped(groups, camera)``: several Gaussian sets (``SplatGroup``) at once, each
  composited on its own or all as one (MoE-GS experts);
- ``resolve_backend``: the backend policy (``auto``: gsplat for CUDA tensors, else PyTorch);
- ``colors_at`` / ``sh_to_rgb``: the view-dependent colour every renderer evaluates.
"""

from moegs_bench.render.api import rasterize, render
from moegs_bench.render.backends import (
    BACKENDS,
    BackendName,
    BackendStatus,
    BackendUnavailable,
    backend_status,
    device_for,
    resolve_backend,
)
from moegs_bench.render.grouped import SplatGroup, rasterize_grouped
from moegs_bench.render.sh import colors_at, eval_sh, sh_basis, sh_to_rgb

__all__ = [
    "BACKENDS", "BackendName", "BackendStatus", "BackendUnavailable", "SplatGroup", "backend_status", "colors_at",
    "device_for", "eval_sh", "rasterize", "rasterize_grouped", "render", "resolve_backend", "sh_basis", "sh_to_rgb",
]
