"""The two doors into single-set rendering: ``rasterize`` (tensors) and ``render`` (a
``GaussianState`` seen by a ``Camera``). Multi-set rendering is ``moegs_bench.render.grouped``."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from moegs_bench._checks import InputError, check_gaussian_values, check_tensor
from moegs_bench.render._inputs import check_geometry, check_numbers
from moegs_bench.render._projection import project_gaussians
from moegs_bench.render._torch_raster import rasterize_to_pixels
from moegs_bench.render.backends import BackendName, resolve_backend
from moegs_bench.render.sh import MAX_SH_DEGREE, colors_at, num_sh_bases

if TYPE_CHECKING:
    from moegs_bench.cameras import Camera
    from moegs_bench.gaussians import GaussianState

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]


def _validate(
    means, quats, scales, opacities, colors, viewmat, K, width, height, backgrounds, sh_degree,
    near_plane, far_plane, eps2d,
):
    n = check_geometry("", means, quats, scales, opacities)
    check_tensor("viewmat", viewmat, (4, 4))
    check_tensor("K", K, (3, 3))
    if sh_degree is None:
        check_tensor("colors", colors, (n, None))
    else:
        if not isinstance(sh_degree, int) or isinstance(sh_degree, bool) or not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise InputError(f"sh_degree: expected 0..{MAX_SH_DEGREE}, got {sh_degree}")
        check_tensor("colors", colors, (n, None, 3))
        if colors.shape[1] < num_sh_bases(sh_degree):
            raise InputError(
                f"colors: SH degree {sh_degree} needs [N, >={num_sh_bases(sh_degree)}, 3] coefficients, "
                f"got {tuple(colors.shape)}"
            )
    check_gaussian_values("", quats, scales, opacities)
    if bool(K[0, 0] <= 0) or bool(K[1, 1] <= 0):
        raise InputError(f"K: focal lengths must be positive, got fx={float(K[0, 0])}, fy={float(K[1, 1])}")
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise InputError(f"{name}: expected a positive int, got {v!r}")
    if backgrounds is not None:
        d = colors.shape[-1]
        check_tensor("backgrounds", backgrounds, (d,))
    geometry = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "viewmat": viewmat, "K": K}
    common = Counter(t.dtype for t in geometry.values()).most_common(1)[0][0]
    for name, t in geometry.items():
        if t.dtype != common:
            raise InputError(f"{name}: dtype {t.dtype} differs from the other tensors' {common}; use one floating dtype")
    check_numbers(near_plane, far_plane, eps2d)


def rasterize(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] (w, x, y, z), any norm
    scales: Tensor,  # [N, 3] linear, > 0
    opacities: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [N, D] features, or [N, K, 3] SH coefficients with sh_degree
    viewmat: Tensor,  # [4, 4] world-to-camera (OpenCV)
    K: Tensor,  # [3, 3] pixels
    width: int,
    height: int,
    *,
    backgrounds: Tensor | None = None,  # [D]
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    render_mode: RenderMode = "RGB",
    backend: BackendName = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render one camera: ``(render_colors [H, W, D'], render_alphas [H, W, 1], meta)``.

    Semantics of gsplat's ``rasterization(..., rasterize_mode="classic")``. ``render_mode``
    appends depth ("+D": accumulated, "+ED": expected) or renders depth alone ("D", "ED").
    ``backend="auto"`` uses gsplat for CUDA tensors and the PyTorch backend otherwise
    (:func:`moegs_bench.render.backends.resolve_backend`). Differentiable w.r.t. every tensor input.
    """
    _validate(
        means, quats, scales, opacities, colors, viewmat, K, width, height, backgrounds, sh_degree,
        near_plane, far_plane, eps2d,
    )
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise InputError(f"render_mode: expected RGB, D, ED, RGB+D or RGB+ED, got {render_mode!r}")
    backend = resolve_backend(backend, means.device)
    if backend == "gsplat":
        from moegs_bench.render._gsplat_backend import rasterize_gsplat

        return rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmat, K, width, height,
            backgrounds=backgrounds, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
            sh_degree=sh_degree, render_mode=render_mode,
        )

    proj = project_gaussians(
        means, quats, scales, opacities, viewmat, K, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
    )
    if sh_degree is not None:
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]  # [3]
        colors = colors_at(colors, sh_degree, means, campos)  # [N, 3]
    bg = backgrounds
    depth = proj.depths[:, None]
    if render_mode in ("D", "ED"):
        colors, bg = depth, None if bg is None else bg.new_zeros(1)
    elif render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depth], dim=-1)
        bg = None if bg is None else torch.cat([bg, bg.new_zeros(1)])
    img, alpha = rasterize_to_pixels(
        proj.means2d, proj.conics, colors, opacities, proj.radii, proj.depths, width, height, bg
    )
    if render_mode.endswith("ED"):
        img = torch.cat([img[..., :-1], img[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    meta = {"backend": "torch", "radii": proj.radii, "means2d": proj.means2d, "depths": proj.depths}
    return img, alpha, meta


def render(
    state: GaussianState,
    camera: Camera,
    *,
    background: Tensor | None = None,  # [D]
    render_mode: RenderMode = "RGB",
    backend: BackendName = "auto",
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, dict]:
    """Render ``state`` at ``camera``: exactly ``rasterize`` of the state's tensors with the
    camera's ``viewmat``, ``K``, size and near/far planes (``render_colors [H, W, D']``,
    ``render_alphas [H, W, 1]``, ``meta``)."""
    return rasterize(
        state.means, state.quats, state.scales, state.opacities, state.colors, camera.viewmat, camera.K,
        camera.width, camera.height, backgrounds=background, near_plane=camera.near, far_plane=camera.far,
        eps2d=eps2d, sh_degree=state.sh_degree, render_mode=render_mode, backend=backend,
    )
