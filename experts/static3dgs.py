"""Static 3DGS (Kerbl et al., SIGGRAPH 2023): the no-deformation baseline every dynamic expert
must beat. The Gaussians do not depend on time."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo, SceneInit
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.training.config import TrainConfig

from moegs_bench.experts._profiles import small_from_tiny, tiny_train


@dataclass
class Static3DGSConfig(ExpertConfig):
    train: TrainConfig = field(default_factory=TrainConfig)


class Static3DGS(Expert):
    info = ExpertInfo(
        id="static", method="3D Gaussian Splatting (static baseline)", paper="Kerbl et al., SIGGRAPH 2023",
        repo="graphdeco-inria/gaussian-splatting", licence="Gaussian-Splatting License (non-commercial)",
        description="no deformation: one set of Gaussians for all times (the baseline)",
    )
    config_class = Static3DGSConfig
    profiles = {"paper": Static3DGSConfig(), "tiny": Static3DGSConfig(train=tiny_train()),
                "small": small_from_tiny(Static3DGSConfig(train=tiny_train()))}

    def __init__(self, config: Static3DGSConfig, init: SceneInit) -> None:
        super().__init__(config, init)
        self.add_standard_columns(init)

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        t = self.table
        return self.make_state(t["means"], t["quats"], torch.exp(t["scales"]), torch.sigmoid(t["opacities"]))
