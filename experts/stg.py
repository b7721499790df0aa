"""Spacetime Gaussians (Li et al., "Spacetime Gaussian Feature Splatting for Real-Time Dynamic
View Synthesis", CVPR 2024; upstream oppo-us-research/SpacetimeGaussians).

Each Gaussian lives around its own time centre ``mu_t``: with ``dt = t - mu_t``,
position ``xyz + b1 dt + b2 dt^2 + b3 dt^3`` (``motion [N, 9]`` = b1, b2, b3), rotation
``normalize(q + omega dt)``, opacity ``sigmoid(o) * exp(-(dt / exp(trbf_scale))^2)``; ``dt`` is
detached in the motion terms, so the time centre learns through opacity only, as upstream
(``renderer/__init__.py``, ``train_ours_full``). As in MoE-GS, colour is SH instead of STG's
feature splatting. Columns keep upstream's PLY names: ``trbf_center``, ``trbf_scale``,
``motion``, ``omega``.

Upstream trains one model per segment of ``duration`` frames (50 in its configs; ``train.py
--duration``, time ``(j - start) / duration`` inside the segment, ``scene/dataset_readers.py``).
Imported models (``moegs-bench import stg``) put every segment in one table with its times rescaled
to ours and set :attr:`STGConfig.time_windows`: a ``time_window`` column ``[N, 2]`` then holds the
times ``[from, to)`` in which a Gaussian's segment is shown; outside it its opacity is 0. The
default (no windows) is the expert as trained here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo, ParamGroup, SceneInit
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.training.config import TrainConfig

from moegs_bench.experts._profiles import small_from_tiny, tiny_train


@dataclass
class STGConfig(ExpertConfig):
    motion_lr_scale: float = 0.5 * 3.5  # motion lr = position_lr_init * extent * 0.5 * movelr(3.5)
    trbf_center_lr: float = 1e-4
    trbf_scale_lr: float = 0.03
    trbf_scale_init: float = 0.0  # log-width: exp(0) = 1, nearly constant over the sequence
    omega_lr: float = 1e-4
    # Imported upstream models (moegs_bench.interop.stg): per-Gaussian time windows, one per
    # upstream segment (oppo-us-research/SpacetimeGaussians trains one model per `duration`
    # frames, train.py); opacity is 0 outside [from, to). Off: no column, every Gaussian always shown.
    time_windows: bool = False
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=30_000, batch_size=2, scaling_lr=1.5e-3, densify_until=9000, opacity_reset_every=3000))


def temporal_opacity(dt: Tensor, trbf_scale: Tensor) -> Tensor:
    """STG's temporal radial basis ``exp(-(dt / exp(s))^2)``: 1 at the time centre."""
    return torch.exp(-(dt / torch.exp(trbf_scale)).square())


def polynomial_motion(motion: Tensor, dt: Tensor) -> Tensor:  # [N, 9], [N, 1] -> [N, 3]
    return motion[:, 0:3] * dt + motion[:, 3:6] * dt**2 + motion[:, 6:9] * dt**3


#: The window of a Gaussian shown at every time in [0, 1] (and beyond): what a new row gets.
OPEN_WINDOW = (-1.0, 2.0)


def in_window(t: float, window: Tensor) -> Tensor:  # [N, 2] -> [N]
    """1 where ``from <= t < to`` (``window = [from, to)``), else 0, in the window's dtype."""
    return ((window[:, 0] <= t) & (t < window[:, 1])).to(window.dtype)


#: the ``tiny`` profile (``small`` stretches it: experts/_profiles.py)
_TINY = STGConfig(train=tiny_train(opacity_reset_every=0))


class SpacetimeGaussians(Expert):
    """STG with SH colour; with ``config.time_windows`` (set by ``moegs-bench import stg``) each
    Gaussian is shown only in its upstream segment's time window (see the module doc)."""

    info = ExpertInfo(
        id="stg", method="Spacetime Gaussians", paper="Li et al., CVPR 2024",
        repo="oppo-us-research/SpacetimeGaussians", licence="Other (Oppo; research only)",
        upstream_commit="427abfc (thirdparty/gaussian_splatting/renderer/__init__.py, train_ours_lite)",
        description=(
            "per-Gaussian time centre: cubic polynomial trajectory, linear rotation, temporal RBF "
            "opacity; SH colour (MoE-GS variant)"),
    )
    config_class = STGConfig
    profiles = {
        "paper": STGConfig(),
        "tiny": _TINY,
        "small": small_from_tiny(_TINY),
    }
    min_frames = 2

    def __init__(self, config: STGConfig, init: SceneInit) -> None:
        super().__init__(config, init)
        self.add_standard_columns(init)
        n = self.num_gaussians
        # Upstream takes each point's time from the per-frame SfM cloud it came from; our clouds
        # have no per-point time, so centres start uniform in [0, 1) (what upstream gives clones).
        self.table.add("trbf_center", torch.rand(n, 1))
        self.table.add("trbf_scale", torch.full((n, 1), config.trbf_scale_init))
        self.table.add("motion", torch.zeros(n, 9))
        self.table.add("omega", torch.zeros(n, 4))
        if config.time_windows:
            self.table.add("time_window", torch.tensor([OPEN_WINDOW]).repeat(n, 1), trainable=False)

    def extra_param_groups(self) -> list[ParamGroup]:
        c, tab = self.config, self.table
        motion_lr = c.train.position_lr_init * self.spatial_lr_scale * c.motion_lr_scale
        return [
            ParamGroup("trbf_center", [tab["trbf_center"]], c.trbf_center_lr),
            ParamGroup("trbf_scale", [tab["trbf_scale"]], c.trbf_scale_lr),
            ParamGroup("motion", [tab["motion"]], motion_lr),
            ParamGroup("omega", [tab["omega"]], c.omega_lr),
        ]

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        t = float(when.time if isinstance(when, Camera) else when)
        tab = self.table
        dt = t - tab["trbf_center"]  # [N, 1]
        dt_motion = dt.detach()
        means = tab["means"] + polynomial_motion(tab["motion"], dt_motion)
        quats = tab["quats"] + dt_motion * tab["omega"]
        opac = torch.sigmoid(tab["opacities"]) * temporal_opacity(dt, tab["trbf_scale"])[:, 0]
        if self.config.time_windows:
            opac = opac * in_window(t, tab["time_window"])
        return self.make_state(means, quats, torch.exp(tab["scales"]), opac)
