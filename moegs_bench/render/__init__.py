"""Differentiable Gaussian rasterization: ``rasterize`` and its backends."""

from moegs_bench.render.api import BackendStatus, backend_status, rasterize
from moegs_bench.render.sh import eval_sh, sh_basis, sh_to_rgb

__all__ = ["BackendStatus", "backend_status", "eval_sh", "rasterize", "sh_basis", "sh_to_rgb"]
