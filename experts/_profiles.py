"""The CPU profiles the experts share: ``tiny`` (the synthetic suite, 96x72, minutes on 2 cores)
and ``small`` (real captures downscaled to about 160x90, a 2-expert run in about 22 minutes)."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from moegs_bench.adapters.base import ExpertConfig
from moegs_bench.training.config import TrainConfig

C = TypeVar("C", bound=ExpertConfig)

#: steps of the ``small`` profile
SMALL_ITERATIONS = 3000
#: its cap on the Gaussian count (a scene without a point cloud starts from 10,000 ray samples)
SMALL_MAX_GAUSSIANS = 20_000


def tiny_train(**overrides) -> TrainConfig:
    """A 3DGS schedule compressed to a few minutes of CPU: fewer steps, earlier and more
    frequent densification, a cap on the number of Gaussians."""
    base = TrainConfig(
        iterations=1200, position_lr_max_steps=1200, sh_degree=1, sh_increase_every=400,
        densify_from=150, densify_until=900, densify_every=100, opacity_reset_every=0,
        max_gaussians=5000, checkpoint_every=400, on_failure="warn",
    )
    return replace(base, **overrides)


def small_from_tiny(tiny: C) -> C:
    """The ``small`` profile of an expert: its ``tiny`` settings over :data:`SMALL_ITERATIONS` steps
    (every step count stretched with them: densification, decays, the expert's own stages) with
    room for :data:`SMALL_MAX_GAUSSIANS` Gaussians, for the richer content of a real capture."""
    c = tiny.with_iterations(SMALL_ITERATIONS)
    return replace(c, train=replace(c.train, max_gaussians=SMALL_MAX_GAUSSIANS))
