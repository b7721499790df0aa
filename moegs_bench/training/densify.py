"""Adaptive density control of 3DGS (Kerbl et al. 2023, section 5.2; graphdeco-inria/
gaussian-splatting ``GaussianModel.densify_and_prune``), written once for every expert.

It works on an expert's :class:`~moegs_bench.gaussian_table.GaussianTable` through the columns'
roles: ``position`` columns get the split offsets (keyframe tensors ``[N, K, 3]`` get the same
offset at every keyframe), the ``log_scale`` column decides clone vs split and shrinks split
children by 1.6, ``quat`` orients the split samples and ``logit_opacity`` drives pruning and the
opacity reset. Every other column is copied, so embeddings and attached router weights follow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from moegs_bench.gaussian_table import GaussianTable
from moegs_bench.geometry import quat_to_rotmat
from moegs_bench.training.config import TrainConfig


@dataclass
class DensifyReport:
    cloned: int = 0
    split: int = 0
    pruned: int = 0  # in all; a Gaussian may meet several of the criteria below
    pruned_transparent: int = 0  # Gaussians with an opacity below prune_opacity
    pruned_screen: int = 0  # ... a screen radius above the screen-size limit
    pruned_world: int = 0  # ... a world scale above 0.1 x the extent
    kept_all: bool = False  # every Gaussian met a criterion: none was pruned (an empty model cannot recover)
    reset_opacity: bool = False


class Densifier:
    """Accumulates the screen-space gradient of each Gaussian and clones, splits, prunes and
    resets opacities on the 3DGS schedule of a :class:`TrainConfig`."""

    def __init__(self, cfg: TrainConfig, extent: float) -> None:
        self.cfg = cfg
        self.extent = float(extent)
        self.grad_accum = torch.zeros(0)  # [N] sum of NDC gradient norms
        self.count = torch.zeros(0)  # [N] views in which the Gaussian was visible
        self.max_radii = torch.zeros(0)  # [N] largest screen radius (px) seen

    def _fit(self, n: int, device: torch.device) -> None:
        if self.grad_accum.shape[0] != n or self.grad_accum.device != device:
            self.reset_stats(n, device)

    def reset_stats(self, n: int, device: torch.device) -> None:
        self.grad_accum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)

    @torch.no_grad()
    def observe(self, means2d: Tensor, radii: Tensor, width: int, height: int) -> None:
        """Record one rendered view: ``means2d`` ``[N, 2]`` (pixels, after backward, with .grad)
        and ``radii`` ``[N]`` or ``[N, 2]`` (0 = not visible)."""
        if means2d.grad is None:
            return
        n = means2d.shape[0]
        self._fit(n, means2d.device)
        # 3DGS measures the gradient w.r.t. NDC coordinates: d/dndc = d/dpx * (size / 2)
        scale = torch.tensor([width / 2.0, height / 2.0], device=means2d.device)
        g = (means2d.grad[:, :2] * scale).norm(dim=-1)  # [N]
        r = radii.reshape(n, -1).max(dim=-1).values.to(self.max_radii)  # [N]
        vis = (r > 0).to(g.dtype)
        self.grad_accum += g * vis
        self.count += vis
        self.max_radii = torch.maximum(self.max_radii, r)

    def is_refine_step(self, step: int) -> bool:
        c = self.cfg
        return c.densify_from < step <= c.densify_until and step % c.densify_every == 0

    def prunes_big(self, step: int) -> bool:
        """Whether a refinement at ``step`` also prunes Gaussians too large on screen or in the world:
        only after the first opacity reset, as 3DGS does (``size_threshold = 20 if iteration >
        opacity_reset_interval else None`` in graphdeco-inria/gaussian-splatting ``train.py``, kept
        by 4DGaussians, E-D3DGS and Spacetime Gaussians). A schedule without resets
        (``opacity_reset_every = 0``) never does, like upstream 4DGaussians on N3V (interval 60,000
        beyond its 14,000 steps), E-D3DGS (interval 6,000,000) and Ex4DGS (``size_threshold`` always
        None in its ``train.py``). Earlier, the Gaussians of a sparse initial cloud are still large,
        and most of them would go at the first refinement."""
        reset = self.cfg.opacity_reset_every
        return reset > 0 and step > reset

    def is_reset_step(self, step: int) -> bool:
        c = self.cfg
        return c.opacity_reset_every > 0 and step <= c.densify_until and step % c.opacity_reset_every == 0

    @torch.no_grad()
    def step(self, step: int, table: GaussianTable, optimizers: Iterable[torch.optim.Optimizer],
             generator: torch.Generator) -> DensifyReport:
        """Run what the schedule asks for after training step ``step`` (1-based)."""
        optimizers = list(optimizers)
        report = DensifyReport()
        if self.is_refine_step(step):
            report = self.densify_and_prune(table, optimizers, generator, prune_big=self.prunes_big(step))
        if self.is_reset_step(step):
            self.reset_opacity(table, optimizers)
            report.reset_opacity = True
        return report

    @torch.no_grad()
    def densify_and_prune(self, table: GaussianTable, optimizers: list, generator: torch.Generator,
                          *, prune_big: bool) -> DensifyReport:
        c, n = self.cfg, len(table)
        self._fit(n, table["means"].device)
        grads = torch.where(self.count > 0, self.grad_accum / self.count.clamp_min(1), 0.0)  # [N]
        log_s = table[_one(table, "log_scale")]  # [N, 3]
        max_scale = log_s.exp().max(dim=1).values  # [N]
        big = max_scale > c.percent_dense * self.extent
        hot = grads >= c.densify_grad_threshold
        clone, split = hot & ~big, hot & big
        if c.max_gaussians > 0:  # keep the highest gradients within the cap (a split adds one net)
            room = max(c.max_gaussians - n, 0)
            cand = torch.nonzero(hot).squeeze(1)
            if cand.numel() > room:
                keep = cand[grads[cand].argsort(descending=True, stable=True)[:room]]
                clone = torch.zeros_like(hot).index_fill_(0, keep, True) & ~big
                split = torch.zeros_like(hot).index_fill_(0, keep, True) & big
        report = DensifyReport(cloned=int(clone.sum()), split=int(split.sum()))

        new_rows = {}
        clone_idx = torch.nonzero(clone).squeeze(1)
        split_idx = torch.nonzero(split).squeeze(1).repeat(2)  # two children per split Gaussian
        stds = log_s[split_idx].exp()  # [2S, 3]
        samples = torch.randn(stds.shape, generator=generator, device=stds.device) * stds
        rot = quat_to_rotmat(table[_one(table, "quat")][split_idx])  # [2S, 3, 3]
        offsets = (rot @ samples[..., None]).squeeze(-1)  # [2S, 3]
        for name, col in table.items():
            role = table.columns[name].role
            children = col[split_idx]
            if role == "position":
                children = children + offsets.reshape(offsets.shape[:1] + (1,) * (col.dim() - 2) + (3,))
            elif role == "log_scale":
                children = children - math.log(1.6)  # 3DGS: scale / (0.8 * N) with N = 2
            new_rows[name] = torch.cat([col[clone_idx], children], 0)
        # the split parents are replaced by their children; then prune
        keep = ~split
        table.edit_rows(keep=keep, new_rows=new_rows, optimizers=optimizers)
        dev = keep.device
        new = clone_idx.numel() + split_idx.numel()  # rows appended after the kept ones
        max_radii = torch.cat([self.max_radii[keep], torch.zeros(new, device=dev)])

        opac = torch.sigmoid(table[_one(table, "logit_opacity")])
        prune = opac.reshape(len(table), -1).max(dim=1).values < c.prune_opacity
        report.pruned_transparent = int(prune.sum())
        if prune_big:
            too_wide = max_radii > c.max_screen_size
            too_big = table[_one(table, "log_scale")].exp().max(dim=1).values > 0.1 * self.extent
            report.pruned_screen, report.pruned_world = int(too_wide.sum()), int(too_big.sum())
            prune |= too_wide | too_big
        if prune.all():  # never prune everything (an empty model cannot recover)
            prune[:] = False
            report.kept_all = True
        report.pruned = int(prune.sum())
        if report.pruned:
            table.edit_rows(keep=~prune, optimizers=optimizers)
        self.reset_stats(len(table), dev)  # statistics restart after every refinement
        return report

    @torch.no_grad()
    def reset_opacity(self, table: GaussianTable, optimizers: list) -> None:
        """Clamp opacities to at most 0.01 and clear their optimiser state (3DGS)."""
        name = _one(table, "logit_opacity")
        p = table[name]
        p.copy_(torch.minimum(p, torch.full_like(p, math.log(0.01 / 0.99))))
        for opt in optimizers:
            state = opt.state.get(p)
            if state:
                for v in state.values():
                    if isinstance(v, Tensor) and v.shape == p.shape:
                        v.zero_()

    def state_dict(self) -> dict[str, Tensor]:
        return {"grad_accum": self.grad_accum, "count": self.count, "max_radii": self.max_radii}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.grad_accum, self.count, self.max_radii = state["grad_accum"], state["count"], state["max_radii"]


def _one(table: GaussianTable, role: str) -> str:
    names = table.names(role=role, attached=False)  # type: ignore[arg-type]
    if len(names) != 1:
        raise ValueError(f"densification needs exactly one {role!r} column, the table has {names}")
    return names[0]
