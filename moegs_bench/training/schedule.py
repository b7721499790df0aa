"""Optimiser groups and their learning-rate schedules (3DGS, Kerbl et al. 2023:
graphdeco-inria/gaussian-splatting ``utils/general_utils.py``, ``get_expon_lr_func``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ParamGroup:
    """One optimiser group: its parameters, learning rate and optional exponential decay
    (3DGS's ``get_expon_lr_func``: log-linear from ``lr`` to ``lr_final`` over ``max_steps``)."""

    name: str
    params: list[nn.Parameter]
    lr: float
    lr_final: float | None = None
    max_steps: int = 0
    delay_mult: float = 1.0
    delay_steps: int = 0

    def lr_at(self, step: int) -> float:
        if self.lr_final is None or self.max_steps <= 0:
            return self.lr
        if self.lr == 0.0 and self.lr_final == 0.0:
            return 0.0
        if self.delay_steps > 0:
            delay = self.delay_mult + (1 - self.delay_mult) * math.sin(
                0.5 * math.pi * min(max(step / self.delay_steps, 0.0), 1.0))
        else:
            delay = 1.0
        s = min(max(step / self.max_steps, 0.0), 1.0)
        return delay * math.exp(math.log(self.lr) * (1 - s) + math.log(self.lr_final) * s)


def optimizer_groups(groups: Sequence[ParamGroup]) -> list[dict[str, Any]]:
    """``torch.optim`` parameter groups of ``groups`` (named, at their initial rates)."""
    return [{"params": g.params, "lr": g.lr, "name": g.name} for g in groups]


def set_learning_rates(optimizer: torch.optim.Optimizer, groups: Sequence[ParamGroup], step: int) -> None:
    """Give each optimiser group its schedule's rate at ``step`` (groups in the same order).

    The optimiser's groups hold the current parameters (densification replaces them); ``groups``
    only supply the schedules.
    """
    for g, group in zip(groups, optimizer.param_groups):
        group["lr"] = g.lr_at(step)
