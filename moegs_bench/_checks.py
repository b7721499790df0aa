"""Input validation shared by the core types and the rasterizer.

Errors are ``ValueError`` subclasses whose message names the tensor and says what was expected,
so the CLI can print them as one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from moegs_bench.errors import InputError  # (torch-free, so the CLI can classify errors without torch)


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[int | None],
    *,
    floating: bool = True,
    finite: bool = True,
) -> Tensor:
    """Check that ``value`` is a tensor of ``shape`` (``None`` = any size) and return it.

    ``floating`` demands a floating dtype; ``finite`` rejects NaN and Inf.
    """
    if not isinstance(value, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor of shape {_fmt(shape)}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, value.shape)):
        raise InputError(f"{name}: expected shape {_fmt(shape)}, got {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    if finite and value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise InputError(f"{name}: contains {bad} NaN/Inf value(s)")
    return value


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def check_gaussian_values(prefix: str, quats: Tensor, scales: Tensor, opacities: Tensor) -> None:
    """Scales > 0, opacities in [0, 1], quaternions of non-zero norm; ``prefix`` starts the names."""
    bad = int((scales <= 0).sum())
    if bad:
        raise InputError(f"{prefix}scales: {bad} value(s) <= 0; scales are linear and must be positive")
    bad = int(((opacities < 0) | (opacities > 1)).sum())
    if bad:
        raise InputError(f"{prefix}opacities: {bad} value(s) outside [0, 1] (activated, not logits)")
    bad = int((quats == 0).all(dim=-1).sum())
    if bad:
        raise InputError(f"{prefix}quats: {bad} quaternion(s) with zero norm; expected (w, x, y, z)")
