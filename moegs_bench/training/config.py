"""The training schedule every expert shares (defaults: 3DGS, Kerbl et al. 2023,
graphdeco-inria/gaussian-splatting ``arguments/__init__.py``). Experts override fields in their
profiles; nothing here is expert-specific."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal


@dataclass
class TrainConfig:
    iterations: int = 30_000
    batch_size: int = 1  # views per step (gradients accumulated, as 4DGaussians' batch_size)
    # learning rates of the standard columns (means' rate is scaled by the scene extent)
    position_lr_init: float = 1.6e-4
    position_lr_final: float = 1.6e-6
    position_lr_delay_mult: float = 0.01
    position_lr_max_steps: int = 30_000
    feature_lr: float = 2.5e-3  # SH DC; the higher SH bands use feature_lr / 20
    opacity_lr: float = 0.05
    scaling_lr: float = 5e-3
    rotation_lr: float = 1e-3
    # loss: (1 - lambda_dssim) * L1 + lambda_dssim * (1 - SSIM)
    lambda_dssim: float = 0.2
    # SH: start at degree 0, one more band every sh_increase_every steps up to sh_degree
    sh_degree: int = 3
    sh_increase_every: int = 1000
    # adaptive density control (3DGS)
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4  # mean NDC-space gradient norm of the projected means
    percent_dense: float = 0.01  # split above percent_dense * extent, clone below
    opacity_reset_every: int = 3000
    prune_opacity: float = 0.005
    max_screen_size: float = 20.0  # px; prune larger (3DGS, after the first opacity reset; none without resets)
    max_gaussians: int = 0  # 0: no cap; otherwise densification stops growing past it
    # a collapsing Gaussian count or a diverging loss (moegs_bench.training.guard): stop with an
    # error naming the step, or warn and finish
    on_failure: Literal["stop", "warn"] = "stop"
    # bookkeeping
    checkpoint_every: int = 1000

    #: Fields that count steps (scaled together by ``ExpertConfig.with_iterations``).
    STEP_FIELDS: ClassVar[tuple[str, ...]] = (
        "position_lr_max_steps", "sh_increase_every", "densify_from", "densify_until", "densify_every",
        "opacity_reset_every", "checkpoint_every")
