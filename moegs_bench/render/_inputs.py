"""Input checks shared by ``rasterize`` and ``rasterize_grouped`` (one InputError naming the
argument, see ``moegs_bench._checks``)."""

from __future__ import annotations

import math

from moegs_bench._checks import InputError, check_tensor


def check_geometry(prefix: str, means: object, quats: object, scales: object, opacities: object) -> int:
    """Shapes and finiteness of one Gaussian set's geometry; returns its size N (value ranges:
    ``moegs_bench._checks.check_gaussian_values``).

    ``prefix`` starts every name in a message (``""`` for ``rasterize``, ``"expert 1: "`` for a group).
    """
    n = check_tensor(f"{prefix}means", means, (None, 3)).shape[0]
    check_tensor(f"{prefix}quats", quats, (n, 4))
    check_tensor(f"{prefix}scales", scales, (n, 3))
    check_tensor(f"{prefix}opacities", opacities, (n,))
    return n


def check_numbers(near_plane: object, far_plane: object, eps2d: object) -> None:
    """``0 < near_plane < far_plane`` and a finite ``eps2d >= 0``."""
    for name, v in (("near_plane", near_plane), ("far_plane", far_plane), ("eps2d", eps2d)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise InputError(f"{name}: expected a number, got {v!r}")
    if not near_plane > 0:  # type: ignore[operator]
        raise InputError(f"near_plane: expected > 0, got {near_plane}")
    if not far_plane > near_plane:  # type: ignore[operator]
        raise InputError(f"far_plane: expected > near_plane ({near_plane}), got {far_plane}")
    if not (eps2d >= 0 and math.isfinite(eps2d)):  # type: ignore[operator,arg-type]
        raise InputError(f"eps2d: expected a finite value >= 0, got {eps2d}")
