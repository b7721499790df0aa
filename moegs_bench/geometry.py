"""Small geometric helpers shared by experts and training: quaternions, nearest neighbours."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def quat_to_rotmat(q: Tensor) -> Tensor:  # [..., 4] (w, x, y, z), any norm -> [..., 3, 3]
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


def slerp(q0: Tensor, q1: Tensor, u: Tensor, eps: float = 1e-4) -> Tensor:
    """Spherical linear interpolation of unit-normalised quaternions ``[..., 4]`` at ``u`` ``[...]``
    in [0, 1]. Like Ex4DGS's ``quat_slerp``, no sign flip: the shorter arc is not enforced, and
    the cosine is clamped to ``[-1 + eps, 1 - eps]`` so the weights stay finite."""
    a, b = F.normalize(q0, dim=-1), F.normalize(q1, dim=-1)
    d = (a * b).sum(-1).clamp(-1 + eps, 1 - eps)  # [...]
    theta = torch.acos(d)
    s = torch.sin(theta)
    w0 = torch.sin((1 - u) * theta) / s
    w1 = torch.sin(u * theta) / s
    total = w0 + w1
    out = (w0 / total)[..., None] * a + (w1 / total)[..., None] * b
    return F.normalize(out, dim=-1)


@torch.no_grad()
def knn(xyz: Tensor, k: int, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Squared distances and indices of each point's ``k`` nearest *other* points:
    ``([P, k], [P, k])``; memory O(chunk x P)."""
    n = xyz.shape[0]
    k = max(min(k, n - 1), 0)
    d2s, idxs = [], []
    pts = xyz.double()
    for s in range(0, n, chunk):
        d = torch.cdist(pts[s:s + chunk], pts).square_()  # [c, P]
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        v, i = d.topk(k, largest=False)
        d2s.append(v.float())
        idxs.append(i)
    return torch.cat(d2s), torch.cat(idxs)
