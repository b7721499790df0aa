"""Real spherical harmonics for view-dependent colour (degrees 0-3).

Basis ordering and constants are those of the 3DGS reference code (Kerbl et al. 2023,
``utils/sh_utils.py``) and gsplat's ``spherical_harmonics``; colours are ``max(0, sum + 0.5)``
as in gsplat's ``rasterization``.
"""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """The DC coefficient whose degree-0 colour is ``rgb``: ``(rgb - 0.5) / C0`` (3DGS ``RGB2SH``)."""
    return (rgb - 0.5) / C0


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Basis values ``[..., (degree + 1)^2]`` at directions ``[..., 3]`` (normalised here)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree: expected 0..{MAX_SH_DEGREE}, got {degree}")
    d = torch.nn.functional.normalize(dirs, dim=-1)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Raw SH sum ``[..., C]`` of coefficients ``[..., K, C]`` (K >= (degree+1)^2) at ``dirs [..., 3]``."""
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"colors: SH degree {degree} needs {k} coefficients, got {coeffs.shape[-2]}")
    return (sh_basis(degree, dirs)[..., None] * coeffs[..., :k, :]).sum(-2)


def sh_to_rgb(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """View-dependent colour ``max(0, eval_sh + 0.5)`` as rendered by gsplat."""
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)


def colors_at(
    colors: Tensor,  # [N, D] features, or [N, K, 3] SH coefficients with sh_degree
    sh_degree: int | None,
    means: Tensor,  # [N, 3] world
    campos: Tensor,  # [3] camera centre, world
) -> Tensor:
    """``[N, C]`` colours seen from ``campos``: plain features as they are, SH coefficients
    evaluated along the view directions ``means - campos`` (:func:`sh_to_rgb`). The one SH path
    of every renderer (``rasterize`` and the multi-expert modes of ``moegs_bench.router``)."""
    if sh_degree is None:
        return colors
    return sh_to_rgb(sh_degree, colors, means - campos)
