"""The CPU ``tiny`` training schedule the experts share (synthetic suite, 96x72, 2 cores)."""

from __future__ import annotations

from dataclasses import replace

from moegs_bench.training.config import TrainConfig


def tiny_train(**overrides) -> TrainConfig:
    """A 3DGS schedule compressed to a few minutes of CPU: fewer steps, earlier and more
    frequent densification, a cap on the number of Gaussians."""
    base = TrainConfig(
        iterations=1200, position_lr_max_steps=1200, sh_degree=1, sh_increase_every=400,
        densify_from=150, densify_until=900, densify_every=100, opacity_reset_every=0,
        max_gaussians=5000, checkpoint_every=400,
    )
    return replace(base, **overrides)
