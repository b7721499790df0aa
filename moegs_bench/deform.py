"""Building blocks that several deformation-field experts share (4DGaussians and E-D3DGS use the
same decoder shapes; E-D3DGS's code derives from 4DGaussians')."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def trunk(in_dim: int, width: int, depth: int) -> nn.Sequential:
    """``Linear(in, W)`` then ``depth - 1`` x ``[ReLU, Linear(W, W)]`` (4DGaussians ``feature_out``;
    depth 0 behaves like depth 1, as upstream)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, width)]
    for _ in range(max(depth, 1) - 1):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers)


def head(width: int, out_dim: int) -> nn.Sequential:
    """``ReLU, Linear(W, W), ReLU, Linear(W, out)`` (the 4DGaussians / E-D3DGS decoder heads; the
    indices 1 and 3 of the Sequential are the upstream state-dict keys)."""
    return nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out_dim))


def xavier_linear_weights(module: nn.Module) -> None:
    """4DGaussians' ``initialize_weights``: Xavier-uniform weights, biases left at PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=1.0)


def linear_interp_rows(table: Tensor, t: Tensor | float) -> Tensor:
    """Row-wise linear interpolation of ``table`` ``[R, D]`` at ``t`` in [0, 1] (t = 0 is the first
    row, t = 1 the last): ``[D]`` (or ``[..., D]`` for a tensor ``t``)."""
    r = table.shape[0]
    x = torch.as_tensor(t, dtype=table.dtype, device=table.device).clamp(0, 1) * (r - 1)
    i0 = x.floor().long().clamp(max=max(r - 2, 0))
    w = (x - i0.to(x.dtype)).unsqueeze(-1)
    i1 = (i0 + 1).clamp(max=r - 1)
    return table[i0] * (1 - w) + table[i1] * w
