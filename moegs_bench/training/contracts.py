"""What the training code needs of an expert, as Protocols (training does not import the adapters;
``moegs_bench.adapters.base.Expert`` satisfies these: README, "Adding an expert")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from moegs_bench.cameras import Camera
from moegs_bench.data.scene import Scene
from moegs_bench.gaussian_table import GaussianTable
from moegs_bench.gaussians import GaussianState
from moegs_bench.training.config import TrainConfig
from moegs_bench.training.schedule import ParamGroup


class ExpertDescription(Protocol):
    """Who an expert is (``adapters.base.ExpertInfo``)."""

    @property
    def id(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def paper(self) -> str: ...

    @property
    def repo(self) -> str: ...


class TrainableConfig(Protocol):
    """An expert's configuration: the shared schedule plus its own fields, as plain data."""

    @property
    def train(self) -> TrainConfig: ...

    def to_dict(self) -> dict[str, Any]: ...


class TrainableExpert(Protocol):
    """An expert as the training loop, evaluation and results records use it."""

    @property
    def info(self) -> ExpertDescription: ...

    @property
    def config(self) -> TrainableConfig: ...

    @property
    def table(self) -> GaussianTable: ...  # per-Gaussian tensors (densification edits its rows)

    @property
    def active_sh_degree(self) -> Tensor: ...  # 0-d long buffer: the SH degree rendered now

    @property
    def max_sh_degree(self) -> int: ...

    @property
    def spatial_lr_scale(self) -> float: ...  # the scene extent

    @property
    def num_gaussians(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def param_groups(self) -> list[ParamGroup]: ...

    def gaussians_at(self, when: Camera | float) -> GaussianState: ...

    def on_step(self, step: int) -> None: ...

    def regularization(self, step: int) -> Tensor | None: ...

    def refine(self, step: int, stats: Any, optimizers: Iterable[torch.optim.Optimizer]) -> None: ...

    def storage_bytes(self) -> int: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...


class ExpertClass(Protocol):
    """An expert class as :func:`moegs_bench.training.trainer.train_expert` uses it."""

    @property
    def info(self) -> ExpertDescription: ...

    @property
    def state_version(self) -> int: ...  # bumped when the saved state layout changes

    def from_scene(self, scene: Scene, config: Any = "tiny") -> TrainableExpert: ...
