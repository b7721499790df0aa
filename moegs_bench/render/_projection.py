"""EWA projection of 3D Gaussians to the image plane (pure PyTorch, differentiable).

Semantics follow gsplat 1.5.3 ``fully_fused_projection`` for pinhole cameras
(``gsplat/cuda/include/Utils.cuh: persp_proj, add_blur``; ``ProjectionEWA3DGSFused.cu``):
the Jacobian uses the camera-space position clamped to 1.3x the field of view, a low-pass
``eps2d`` is added to the 2D covariance (no compensation: "classic" mode), and the
screen-space box is opacity aware (extent ``min(3.33, sqrt(2 ln(255 * opacity)))`` sigma per
axis). Culled Gaussians get ``radii == 0``; their other outputs are finite but meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0


@dataclass
class Projection:
    means2d: Tensor  # [N, 2] pixels
    conics: Tensor  # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor  # [N] camera-space z
    radii: Tensor  # [N, 2] int32 box half-size in pixels; 0 = culled


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] from quaternions [N, 4] (w, x, y, z), normalised here."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    mean_c = means @ R.T + t  # [N, 3]
    x, y, z = mean_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keep culled rows finite for autograd

    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] = R_g S
    Mc = R @ M  # [N, 3, 3] camera-space R_g S
    cov_c = Mc @ Mc.transpose(-1, -2)  # [N, 3, 3]

    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.clamp(x * rz, min=-lim_x_neg, max=lim_x_pos)
    ty = z * torch.clamp(y * rz, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(-1, 2, 3)  # [N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [N, 2, 2]
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    ok = in_depth & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)  # [N, 3]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [N, 2]

    with torch.no_grad():
        op = opacities.detach()
        ok = ok & (op >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(op.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=3.33)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp(min=0)))
        ok = ok & ((rx > 0) | (ry > 0))
        mx, my = means2d.detach().unbind(-1)
        ok = ok & ~((mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height))
        radii = torch.stack([rx, ry], dim=-1).to(torch.int32) * ok[:, None]
    return Projection(means2d=means2d, conics=conics, depths=mean_c[:, 2], radii=radii)
