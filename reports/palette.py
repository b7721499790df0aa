"""One colour per expert id, the same in every figure: a run's gate maps and video, and a report's plots.

A colour depends on the expert's id, not on which other experts a run or a report holds, so that
4DGaussians is the same blue in a 2-expert run's winner map, in a 4-expert run's and in the
report's PSNR-vs-FPS plot. The built-in experts have fixed places in the palette
(:data:`BUILTIN_ORDER`); any other id (a plugin) gets a place from a hash of its id. Two ids of one
figure that land on the same place are told apart by moving the later one (in sorted order) to the
next free place, so the colours within one figure are always distinct (up to
:data:`MAX_EXPERTS`).

The palette (:data:`COLORS`) is seaborn's colour-blind-safe "colorblind" palette without its grey
(grey is the report's uniform average), followed by matplotlib's tab20 for larger sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from moegs_bench.errors import InputError

__all__ = ["BUILTIN_ORDER", "COLORS", "MAX_EXPERTS", "expert_colors", "expert_rgb"]

#: seaborn.color_palette("colorblind") without "#949494", then matplotlib's tab20.
COLORS: tuple[str, ...] = (
    "#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#ece133", "#56b4e9",
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
    "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
    "#17becf", "#9edae5",
)
#: The built-in experts' places in :data:`COLORS` (4DGaussians blue, E-D3DGS orange, Ex4DGS green,
#: Spacetime Gaussians vermilion, the static 3DGS baseline pink).
BUILTIN_ORDER: tuple[str, ...] = ("4dgs", "e-d3dgs", "ex4dgs", "stg", "static")
MAX_EXPERTS = 20  # distinct colours guaranteed up to this many experts in one figure


def _place(expert: str) -> int:
    if expert in BUILTIN_ORDER:
        return BUILTIN_ORDER.index(expert)
    free = len(COLORS) - len(BUILTIN_ORDER)
    return len(BUILTIN_ORDER) + int(hashlib.sha256(expert.encode()).hexdigest(), 16) % free


def expert_colors(experts: Sequence[str]) -> dict[str, str]:
    """``{expert id: "#rrggbb"}``, distinct within ``experts`` (see module doc).

    :class:`InputError` for no experts, repeated ids or more than :data:`MAX_EXPERTS`."""
    ids = list(experts)
    if not ids or len(ids) > MAX_EXPERTS:
        raise InputError(f"experts: expected 1..{MAX_EXPERTS} experts (distinct colours), got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise InputError(f"experts: expected distinct ids, got {ids}")
    taken: set[int] = {_place(x) for x in ids if x in BUILTIN_ORDER}
    out = {x: COLORS[_place(x)] for x in ids if x in BUILTIN_ORDER}
    for x in sorted(x for x in ids if x not in BUILTIN_ORDER):
        place = _place(x)
        while place in taken:
            place = place + 1 if place + 1 < len(COLORS) else len(BUILTIN_ORDER)
        taken.add(place)
        out[x] = COLORS[place]
    return {x: out[x] for x in ids}


def expert_rgb(experts: Sequence[str]) -> np.ndarray:
    """``[K, 3]`` uint8 colours of ``experts``, in their order (:func:`expert_colors`)."""
    colors = expert_colors(experts)
    return np.array([[int(colors[x][i:i + 2], 16) for i in (1, 3, 5)] for x in experts], dtype=np.uint8)
