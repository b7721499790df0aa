"""Gate-aware pruning of a trained mixture (MoE-GS, Jin et al., arXiv 2510.19210, §3.4, Eq. 10).

The paper scores Gaussian ``i`` of expert ``k`` by how much its expert's gate responds to its
router vector ``v_i = [w_i, w_dir_i, t * w_time_i]``, averaged over the training views:

    E_i = mean over views of || dG_k / dv_i ||

and removes the least important Gaussians. The paper does not say which norm of the Jacobian
``dG_k / dv_i`` (one row of 3 numbers per pixel) is meant. We take the sum over pixels of the
per-pixel Euclidean norm (an entrywise L2,1 norm):

    E_i = mean_views  sum_p || dG_k(p) / dv_i ||_2

It is exact and costs one backward pass per view, because of how the gate is built: the router
maps are alpha-composited, ``M_k(p) = sum_i c_i(p) v_i`` with ``c_i(p) = alpha_i T_i >= 0`` the
same for the three channels, and every router variant computes ``G(p)`` from the maps at pixel
``p`` alone (a softmax over experts of per-pixel 1x1 convolutions). So
``dG_k(p) / dv_i = c_i(p) g_k(p)`` with ``g_k(p) = dG_k(p) / dM_k(p)`` (3 numbers per pixel), and

    sum_p || dG_k(p) / dv_i || = sum_p c_i(p) ||g_k(p)||  =  d/dw_i  sum_p ||g_k(p)|| M_k(p)[0]

with ``||g_k(p)||`` held fixed: the gradient, with respect to the ``w`` column, of the w-map
weighted by the per-pixel gate sensitivity. (A Frobenius norm would need ``c_i(p)^2``, which no
single backward pass gives; the sum of per-pixel norms also reads naturally as "gate mass the
Gaussian moves".) :func:`gate_importance` computes it; ``tests/test_prune.py`` checks it against
the brute-force per-pixel Jacobian.

Gaussians are removed per expert (each loses the same fraction), not by one global ranking:
the scores of different experts are not on one scale (an expert of many small Gaussians spreads
its gate mass thinner), and a global cut could empty an expert the gates still use. Baseline
criteria for the same removal: ``opacity`` (mean opacity over the sequence's frame times) and
``random`` (seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from moegs_bench.data.scene import Frame
from moegs_bench.errors import InputError
from moegs_bench.router.config import PRUNING_CRITERIA
from moegs_bench.router.gate import ROUTER_COLUMNS
from moegs_bench.router.mixture import Mixture

#: Pruning criteria: what ranks the Gaussians of each expert (lowest score removed first).
CRITERIA = PRUNING_CRITERIA

__all__ = ["CRITERIA", "apply_pruning", "evenly_spaced", "gate_importance", "importance", "opacity_importance",
           "random_importance", "removal_masks"]


def evenly_spaced(frames: Sequence[Frame], count: int | None) -> list[Frame]:
    """``count`` evenly spaced frames of ``frames``, first and last included (all of them when
    ``count`` is None or not smaller): the views the gate importance averages over."""
    if count is None or count >= len(frames):
        return list(frames)
    return [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(count)]


def gate_importance(mixture: Mixture, frames: Sequence[Frame], background: Tensor | None = None,
                    progress: Callable[[int], None] | None = None) -> list[Tensor]:
    """Eq. 10 as documented above: per expert, ``[N_k]`` float64 scores averaged over ``frames``
    (at the mixture's current temperature: the test one after ``mixture.eval()``)."""
    if not mixture.router.uses_gaussian_weights:
        raise InputError(f"pruning criterion gate: the {mixture.config.variant} router has no per-Gaussian "
                         "router weights to differentiate; use the opacity or random criterion")
    if not frames:
        raise InputError("pruning criterion gate: no views to average over")
    columns = [e.table[ROUTER_COLUMNS[0]] for e in mixture.experts]  # w: the map channel M_k(p)[0]
    totals = [torch.zeros(c.shape[0], dtype=torch.float64) for c in columns]
    was = [c.requires_grad for c in columns]
    try:
        for c in columns:
            c.requires_grad_(True)
        for n, frame in enumerate(frames):
            with torch.enable_grad():
                maps = mixture.render_experts(frame.camera, background).router_maps  # [K, H, W, 3]
                sensitivity = _gate_sensitivity(mixture, maps.detach(), frame)  # [K, H, W]
                weighted = (sensitivity * maps[..., 0]).sum()
                grads = torch.autograd.grad(weighted, columns, allow_unused=True)
            for total, g in zip(totals, grads):
                if g is not None:
                    total += g.detach().double()
            if progress is not None:
                progress(n + 1)
    finally:
        for c, w in zip(columns, was):
            c.requires_grad_(w)
    return [t / len(frames) for t in totals]


def _gate_sensitivity(mixture: Mixture, maps: Tensor, frame: Frame) -> Tensor:
    """``||dG_k(p) / dM_k(p)||_2`` for every expert and pixel ``[K, H, W]``: the gradient of the
    sum of expert k's gate map with respect to its own maps is exactly the per-pixel derivative
    (a pixel's gate depends on that pixel's maps only)."""
    m = maps.clone().requires_grad_(True)  # [K, H, W, 3]
    with torch.enable_grad():
        gates = mixture.router.gates(m, frame.camera, mixture.temperature)  # [K, H, W]
        rows = []
        for k in range(gates.shape[0]):
            (g,) = torch.autograd.grad(gates[k].sum(), m, retain_graph=k + 1 < gates.shape[0])
            rows.append(g[k].norm(dim=-1))  # [H, W]
    return torch.stack(rows).detach()


def opacity_importance(mixture: Mixture, times: Sequence[float]) -> list[Tensor]:
    """Per expert, the mean opacity of each Gaussian over ``times`` ``[N_k]`` (the usual 3DGS
    pruning signal, as a baseline)."""
    out = []
    with torch.no_grad():
        for e in mixture.experts:
            total = torch.zeros(e.num_gaussians, dtype=torch.float64)
            for t in times:
                total += e.gaussians_at(float(t)).opacities.reshape(-1).double()
            out.append(total / max(len(times), 1))
    return out


def random_importance(mixture: Mixture, seed: int) -> list[Tensor]:
    """Per expert, seeded uniform scores ``[N_k]`` (pruning at random, as a baseline)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(e.num_gaussians, generator=g, dtype=torch.float64) for e in mixture.experts]


def importance(mixture: Mixture, criterion: str, frames: Sequence[Frame], times: Sequence[float], *,
               background: Tensor | None = None, seed: int = 0,
               progress: Callable[[int], None] | None = None) -> list[Tensor]:
    """The scores of ``criterion`` (one of :data:`CRITERIA`) per expert."""
    if criterion == "gate":
        return gate_importance(mixture, frames, background, progress)
    if criterion == "opacity":
        return opacity_importance(mixture, times)
    if criterion == "random":
        return random_importance(mixture, seed)
    raise InputError(f"pruning criterion: expected one of {', '.join(CRITERIA)}, got {criterion!r}")


def removal_masks(scores: Sequence[Tensor], *, ratio: float | None = None,
                  threshold: float | None = None) -> list[Tensor]:
    """``[N_k]`` bool masks of the Gaussians to remove: per expert the ``floor(ratio * N_k)``
    lowest scores (ties: the lower row first), or every score below ``threshold``."""
    if (ratio is None) == (threshold is None):
        raise InputError("pruning: give exactly one of ratio and threshold")
    masks = []
    for s in scores:
        if ratio is not None:
            if not 0.0 < ratio < 1.0:
                raise InputError(f"pruning ratio: expected a number in (0, 1), got {ratio!r}")
            order = torch.sort(s, stable=True).indices
            mask = torch.zeros(s.shape[0], dtype=torch.bool)
            mask[order[: int(ratio * s.shape[0])]] = True
        else:
            mask = s < threshold
        masks.append(mask)
    return masks


def apply_pruning(mixture: Mixture, masks: Sequence[Tensor]) -> None:
    """Remove the masked Gaussians of every expert: every column of its table, the router
    columns attached to it included, go together."""
    if len(masks) != len(mixture.experts):
        raise InputError(f"pruning: {len(masks)} masks for {len(mixture.experts)} experts")
    for e, mask in zip(mixture.experts, masks):
        if mask.shape != (e.num_gaussians,):
            raise InputError(f"pruning {e.info.id}: mask of {tuple(mask.shape)} for {e.num_gaussians} Gaussians")
        e.prune(mask.to(e.device))
