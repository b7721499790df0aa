"""Float64 dense reference rasterizer, written for the tests only (the oracle of the backends).

It follows gsplat's CUDA kernels literally and shares no code with ``moegs_bench.render``:
every Gaussian is evaluated at every pixel (no boxes, no tiles, no sparsity) and composited in a
plain front-to-back loop with the same skip and stop rules. Gradients come from autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rotation(q: Tensor) -> Tensor:
    """Rotation matrices from (w, x, y, z) via R = I + 2w[v]x + 2[v]x^2 on the unit quaternion."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[:, 0], q[:, 1:]
    zero = torch.zeros_like(w)
    vx = torch.stack(
        [zero, -v[:, 2], v[:, 1], v[:, 2], zero, -v[:, 0], -v[:, 1], v[:, 0], zero], -1
    ).view(-1, 3, 3)
    eye = torch.eye(3, dtype=q.dtype).expand_as(vx)
    return eye + 2 * w[:, None, None] * vx + 2 * vx @ vx


def reference_rasterize(
    means, quats, scales, opacities, colors, viewmat, K, width, height,
    backgrounds=None, near_plane=0.01, far_plane=1e10, eps2d=0.3,
) -> tuple[Tensor, Tensor]:
    """Render in float64: (colors [H, W, D], alphas [H, W, 1])."""
    f64 = lambda t: t.double()  # noqa: E731
    means, quats, scales, opacities, colors, viewmat, K = map(
        f64, (means, quats, scales, opacities, colors, viewmat, K)
    )
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = torch.einsum("ij,nj->ni", R, means) + t
    x, y, z = pc[:, 0], pc[:, 1], pc[:, 2]
    depth_ok = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(depth_ok, z, torch.ones_like(z))
    Rg = _rotation(quats)
    cov = torch.einsum("nij,nj,nkj->nik", Rg, scales**2, Rg)
    cov_c = torch.einsum("ij,njk,lk->nil", R, cov, R)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # Jacobian with the camera-space point clamped to 1.3x the field of view (gsplat persp_proj)
    lx = torch.minimum(torch.maximum(x / zs, -(cx / fx + 0.15 * width / fx)), (width - cx) / fx + 0.15 * width / fx)
    ly = torch.minimum(torch.maximum(y / zs, -(cy / fy + 0.15 * height / fy)), (height - cy) / fy + 0.15 * height / fy)
    J = torch.zeros(len(z), 2, 3, dtype=torch.float64)
    J[:, 0, 0] = fx / zs
    J[:, 0, 2] = -fx * lx / zs
    J[:, 1, 1] = fy / zs
    J[:, 1, 2] = -fy * ly / zs
    cov2d = J @ cov_c @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=torch.float64)
    det = torch.linalg.det(cov2d)
    ok = depth_ok & (det > 0) & (opacities >= 1 / 255)
    safe = torch.where(ok[:, None, None], cov2d, torch.eye(2, dtype=torch.float64).expand_as(cov2d))
    conic = torch.linalg.inv(safe)  # [N, 2, 2]
    mean2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)

    vs, us = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    pix = torch.stack([us.reshape(-1), vs.reshape(-1)], -1)  # [HW, 2]
    d = mean2d[:, None, :] - pix[None]  # [N, HW, 2]
    sigma = 0.5 * torch.einsum("npi,nij,npj->np", d, conic, d)
    alpha = torch.clamp(opacities[:, None] * torch.exp(-sigma), max=0.999)

    T = torch.ones(width * height, dtype=torch.float64)
    out = torch.zeros(width * height, colors.shape[1], dtype=torch.float64)
    done = torch.zeros(width * height, dtype=torch.bool)
    for g in torch.sort(z.detach(), stable=True).indices.tolist():
        if not bool(ok[g]):
            continue
        a = alpha[g]
        live = (sigma[g] >= 0) & (a >= 1 / 255) & ~done
        nxt = T * (1 - a)
        stop = live & (nxt <= 1e-4)
        done = done | stop
        use = live & ~stop
        out = out + torch.where(use, T * a, torch.zeros_like(a))[:, None] * colors[g]
        T = torch.where(use, nxt, T)
    if backgrounds is not None:
        out = out + T[:, None] * backgrounds.double()
    return out.view(height, width, -1), (1 - T).view(height, width, 1)
