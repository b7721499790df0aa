"""The router's training configuration and its profiles (MoE-GS, arXiv 2510.19210, §4).

Torch-free: the command line resolves and validates a run's settings before importing torch.
Every field is a key of ``moegs-bench run`` under ``router.`` (``--set router.temperature=0.1``);
its type and :func:`~moegs_bench.config.setting` bounds are its validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from moegs_bench.config import ConfigError, check_config, config_from_dict, config_to_dict, setting
from moegs_bench.router.catalog import RENDER_MODES, ROUTER_VARIANTS


@dataclass(frozen=True)
class RouterConfig:
    """Router training (paper §4, N3V): RAdam, 0.5 for w and w_dir decaying to 1% over 10k
    steps, 0.05 for w_time and Phi, ``0.8 L1 + 0.2 D-SSIM`` on the blend, one view per step."""

    variant: str = setting("volume-aware", choices=lambda: tuple(ROUTER_VARIANTS))
    iterations: int = setting(5000, ge=1)
    temperature: float = setting(1.0, gt=0)  # T of the softmax in training
    eval_temperature: float | None = setting(None, gt=0)  # None: the training T (the reference code: 1.0)
    lr_w: float = setting(0.5, gt=0)  # w and w_dir
    lr_w_final: float = setting(0.005, gt=0)
    lr_decay_steps: int = setting(10000, ge=0)
    lr_w_time: float = setting(0.05, ge=0)
    lr_phi: float = setting(0.05, ge=0)
    lambda_dssim: float = setting(0.2, ge=0, le=1)
    render_mode: str = setting("exact", choices=lambda: tuple(RENDER_MODES))
    finetune_experts: bool = False
    checkpoint_every: int = setting(1000, ge=0)

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def test_temperature(self) -> float:
        return self.temperature if self.eval_temperature is None else self.eval_temperature

    def with_reference_temperature(self) -> RouterConfig:
        """What the authors' code does: train with T = 0.01, evaluate with T = 1."""
        return replace(self, temperature=0.01, eval_temperature=1.0)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, key: str = "") -> RouterConfig:
        """Rebuild from :meth:`to_dict` output; a bad value or an unknown key is a
        :class:`~moegs_bench.config.ConfigError` naming it (under ``key``, e.g. ``router``)."""
        return config_from_dict(cls, data, key=key)


#: Pruning criteria of ``moegs-bench prune`` (:mod:`moegs_bench.router.prune`): what ranks the
#: Gaussians of each expert, lowest removed first.
PRUNING_CRITERIA: tuple[str, ...] = ("gate", "opacity", "random")


@dataclass(frozen=True)
class PruneConfig:
    """The settings of ``moegs-bench prune``: the criterion, how much to remove (exactly one of
    ``ratio``, a fraction of each expert's Gaussians, and ``threshold``, a score below which a
    Gaussian goes), the training views the gate importance averages over (``None``: all; N: N
    evenly spaced ones), the seed of the random criterion and the router training steps after
    the cut (0: none)."""

    criterion: str = setting("gate", choices=PRUNING_CRITERIA)
    ratio: float | None = setting(None, gt=0, lt=1)
    threshold: float | None = setting(None, ge=0)
    views: int | None = setting(None, ge=1)
    seed: int = setting(0, ge=0)
    finetune_steps: int = setting(0, ge=0)  # router steps after the cut (experts too if the run fine-tuned them)

    def __post_init__(self) -> None:
        check_config(self)
        if (self.ratio is None) == (self.threshold is None):
            raise ConfigError("ratio", "give exactly one of a ratio and a threshold")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


@dataclass(frozen=True)
class DistillConfig:
    """The settings of ``moegs-bench distill`` (MoE-GS, arXiv 2510.19210, Eq. 11): the student (one
    of the run's experts), ``lam`` (the weight of the ground-truth term where the student's gate is
    high; the paper does not give it; ``None``: the fair baseline, the student's own training loss
    on the ground truth alone), the extra training steps (``None``: half the student's own
    schedule when it continues from its checkpoint, the whole schedule from scratch) and
    ``from_scratch`` (the student starts from its initialisation instead of its trained
    checkpoint)."""

    student: str
    lam: float | None = setting(0.5, ge=0, le=1)
    steps: int | None = setting(None, ge=1)
    from_scratch: bool = False

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def is_baseline(self) -> bool:
        return self.lam is None

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


#: ``paper``: the paper's N3V schedule. ``tiny``: a CPU budget with the same shape (the w rate
#: decays to 10% by the end, as 5k of 10k decay steps do in the paper).
ROUTER_PROFILES: dict[str, RouterConfig] = {
    "paper": RouterConfig(),
    "tiny": RouterConfig(iterations=300, lr_decay_steps=600, checkpoint_every=100),
    "small": RouterConfig(iterations=300, lr_decay_steps=600, checkpoint_every=100),
}
