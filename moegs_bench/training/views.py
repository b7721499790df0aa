"""Which training views a step uses: view policies of the training loop.

Each policy is deterministic for a seed and needs no state from earlier steps, so a resumed
training draws exactly the views an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor


class ViewPolicy(Protocol):
    def __call__(self, step: int, n: int) -> list[int]:
        """Indices into the ``n`` training views for step ``step`` (1-based): the views of the step."""
        ...


def view_order(seed: int, epoch: int, n: int) -> Tensor:
    """The training views of one epoch: a permutation fixed by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def view_at(seed: int, step: int, n: int) -> int:
    """The training view of ``step``: uniform, fixed by (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 7_919 + 5)
    return int(torch.randint(n, (1,), generator=g))


class EpochPermutations:
    """``batch_size`` views per step, walking through per-epoch permutations (:func:`view_order`):
    every view once per epoch, as 3DGS's viewpoint stack. The permutation is drawn once per epoch."""

    def __init__(self, seed: int, batch_size: int = 1) -> None:
        self.seed, self.batch_size = seed, batch_size
        self._key: tuple[int, int] = (-1, -1)  # (epoch, n) of the permutation held
        self._perm = torch.empty(0, dtype=torch.long)

    def _epoch(self, epoch: int, n: int) -> Tensor:
        if (epoch, n) != self._key:
            self._key, self._perm = (epoch, n), view_order(self.seed, epoch, n)
        return self._perm

    def __call__(self, step: int, n: int) -> list[int]:
        views = []
        for b in range(self.batch_size):
            k = (step - 1) * self.batch_size + b  # the k-th view drawn in the training
            views.append(int(self._epoch(k // n, n)[k % n]))
        return views


class OneViewPerStep:
    """One view per step, drawn by ``draw(seed, step, n)`` (default :func:`view_at`: uniform,
    independently per step, as the MoE-GS router training)."""

    def __init__(self, seed: int, draw: Callable[[int, int, int], int] = view_at) -> None:
        self.seed, self.draw = seed, draw

    def __call__(self, step: int, n: int) -> list[int]:
        return [self.draw(self.seed, step, n)]
