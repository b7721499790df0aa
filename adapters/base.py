"""The adapter interface: the one thing the trainer, router, pruning, distillation, sweeps and
reports know about an expert (README, "Experts" and "Adding an expert"; the contract is checked by
:func:`moegs_bench.adapters.testing.check_expert`).

An expert is a ``torch.nn.Module`` subclass of :class:`Expert`. It keeps its per-Gaussian tensors
in ``self.table`` (a :class:`~moegs_bench.gaussian_table.GaussianTable`, so densification and
pruning edit every row-aligned tensor at once) and its networks as ordinary sub-modules, and it
answers :meth:`Expert.gaussians_at` with a differentiable :class:`GaussianState` in the common
conventions. Everything else (optimisation, densification, SH ramp, losses, checkpoints) lives
once in :mod:`moegs_bench.training`.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from moegs_bench.errors import InputError
from moegs_bench.config import ConfigError, config_from_dict, config_to_dict
from moegs_bench.errors import UserInputError
from moegs_bench.cameras import Camera
from moegs_bench.gaussian_table import GaussianTable
from moegs_bench.geometry import knn
from moegs_bench.gaussians import GaussianState
from moegs_bench.render.sh import num_sh_bases, rgb_to_sh
from moegs_bench.training.config import TrainConfig
from moegs_bench.training.schedule import ParamGroup  # noqa: F401 (re-exported: experts import it here)


class ExpertError(UserInputError):
    """An expert cannot be built or loaded as asked (unknown id, wrong checkpoint, short scene)."""


class ExpertConfigError(ExpertError, ConfigError):
    """A bad value or an unknown key in an expert's configuration (``key`` names it)."""


@dataclass(frozen=True)
class ExpertInfo:
    """Who an expert is: shown by ``moegs-bench experts list`` and stored in results."""

    id: str  # registry id, e.g. "4dgs"
    method: str  # e.g. "4DGaussians"
    paper: str  # e.g. "Wu et al., CVPR 2024"
    repo: str  # upstream repository, e.g. "hustvl/4DGaussians"
    description: str  # one line: what the deformation prior models
    licence: str = "unknown"
    upstream_commit: str = ""  # the upstream revision the paper profile follows, when known


@dataclass(frozen=True)
class SceneInit:
    """What an expert needs from a scene to initialise itself (no images)."""

    points: Tensor  # [P, 3] world
    colors: Tensor  # [P, 3] in [0, 1]
    bounds: tuple[Tensor, Tensor]  # ([3], [3]) robust axis-aligned box of the points
    extent: float  # scene radius as in 3DGS: 1.1 x the largest camera distance to their centroid
    num_frames: int
    num_train_views: int
    train_camera_ids: tuple[int, ...] = ()  # sorted ids of the training cameras
    camera_centres: Tensor | None = None  # [C, 3] world positions of those cameras

    @classmethod
    def from_scene(cls, scene: Any) -> SceneInit:
        cams = {f.camera.camera_id: f.camera.campos for f in scene.train}
        centres = torch.stack(list(cams.values())).double()  # [C, 3]
        radius = float((centres - centres.mean(0)).norm(dim=1).max()) if len(cams) > 1 else 1.0
        return cls(
            points=scene.points.xyz.float(),
            colors=scene.points.rgb.float(),
            bounds=(scene.bounds[0].float(), scene.bounds[1].float()),
            extent=1.1 * max(radius, 1e-6),
            num_frames=scene.num_frames,
            num_train_views=len(scene.train),
            train_camera_ids=tuple(sorted(cams)),
            camera_centres=torch.stack([cams[k] for k in sorted(cams)]).float(),
        )


@dataclass
class ExpertConfig:
    """Base of every expert's configuration: the shared training schedule plus the expert's own
    fields (subclasses add them). Profiles are instances of the subclass."""

    train: TrainConfig = field(default_factory=TrainConfig)

    #: The expert's own fields that count training steps; :meth:`with_iterations` scales them.
    STEP_FIELDS: ClassVar[tuple[str, ...]] = ()

    def with_iterations(self, iterations: int) -> ExpertConfig:
        """The same schedule stretched to ``iterations`` steps: every step count (densification,
        decays, SH ramp, checkpoints and the expert's ``STEP_FIELDS``) keeps its proportion."""
        f = iterations / self.train.iterations
        scale = lambda v: max(int(round(v * f)), 1) if v else 0  # noqa: E731
        tc = self.train
        train = dataclasses.replace(tc, iterations=iterations, **{
            k: scale(getattr(tc, k)) for k in TrainConfig.STEP_FIELDS})
        return dataclasses.replace(self, train=train, **{k: scale(getattr(self, k)) for k in self.STEP_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples become lists; :meth:`from_dict` turns them back)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, key: str = "") -> ExpertConfig:
        """Rebuild a config from :meth:`to_dict` output, every value checked by its field's type
        (floats finite); a bad value or an unknown key is an :class:`ExpertConfigError` naming
        it (under ``key``, e.g. ``experts.4dgs``)."""
        return config_from_dict(cls, data, key=key, error=ExpertConfigError)


class Expert(nn.Module, ABC):
    """Base class of every expert (the adapter interface).

    Subclasses set ``info``, ``config_class`` and ``profiles`` (at least ``"tiny"`` and
    ``"paper"``), build their tensors in ``__init__(config, init)`` and implement
    :meth:`gaussians_at`. They may override the hooks :meth:`extra_param_groups`,
    :meth:`on_step`, :meth:`regularization`, :meth:`refine` and :meth:`check_scene`.
    """

    info: ClassVar[ExpertInfo]
    config_class: ClassVar[type[ExpertConfig]] = ExpertConfig
    profiles: ClassVar[dict[str, ExpertConfig]] = {}
    #: Bump when the saved state layout changes: older checkpoints are then refused clearly.
    state_version: ClassVar[int] = 1
    #: The fewest frames the method can model (e.g. two keyframes need a few frames).
    min_frames: ClassVar[int] = 1

    def __init__(self, config: ExpertConfig, init: SceneInit) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ExpertError(f"{self.info.id}: expected a {self.config_class.__name__}, got "
                              f"{type(config).__name__}")
        self.config = config
        self.check_scene(init)
        self._extent = float(init.extent)
        self.table = GaussianTable()
        self.max_sh_degree = int(config.train.sh_degree)
        self.register_buffer("active_sh_degree", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ construction
    @classmethod
    def profile(cls, name: str) -> ExpertConfig:
        if name not in cls.profiles:
            raise ExpertError(f"{cls.info.id}: no profile {name!r}; profiles are {sorted(cls.profiles)}")
        return dataclasses.replace(cls.profiles[name])

    @classmethod
    def from_scene(cls, scene: Any, config: ExpertConfig | str = "tiny") -> Expert:
        """Build the expert for a loaded :class:`~moegs_bench.data.Scene` (config or profile name)."""
        cfg = cls.profile(config) if isinstance(config, str) else config
        return cls(cfg, SceneInit.from_scene(scene))

    def check_scene(self, init: SceneInit) -> None:
        """Refuse scenes the method cannot model (default: fewer than ``min_frames`` frames)."""
        if init.num_frames < self.min_frames:
            raise ExpertError(f"{self.info.id}: the scene has {init.num_frames} frame(s), the method needs at "
                              f"least {self.min_frames}")

    # ------------------------------------------------------------------ the interface
    @abstractmethod
    def gaussians_at(self, when: Camera | float) -> GaussianState:
        """The Gaussians at a camera's time (or a time in [0, 1]), differentiable, one row per
        table row in table order, SH colours of the active degree, attached columns in extras."""

    def param_groups(self) -> list[ParamGroup]:
        """Optimiser groups: the standard 3DGS columns, then :meth:`extra_param_groups`."""
        tc = self.config.train
        groups = []
        standard = {
            "means": dict(lr=tc.position_lr_init * self.spatial_lr_scale,
                          lr_final=tc.position_lr_final * self.spatial_lr_scale,
                          max_steps=tc.position_lr_max_steps, delay_mult=tc.position_lr_delay_mult),
            "sh_dc": dict(lr=tc.feature_lr),
            "sh_rest": dict(lr=tc.feature_lr / 20.0),
            "opacities": dict(lr=tc.opacity_lr),
            "scales": dict(lr=tc.scaling_lr),
            "quats": dict(lr=tc.rotation_lr),
        }
        for name, kw in standard.items():
            if name in self.table:
                groups.append(ParamGroup(name, [self.table[name]], **kw))
        groups += self.extra_param_groups()
        return groups

    def extra_param_groups(self) -> list[ParamGroup]:
        """The expert's own groups (networks, embeddings, keyframes, ...)."""
        return []

    def on_step(self, step: int) -> None:
        """Called before every training step (stage switches, schedules)."""

    def regularization(self, step: int) -> Tensor | None:
        """An extra loss term of the method (e.g. HexPlane smoothness), or None."""
        return None

    def refine(self, step: int, stats: Any, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Called after the shared densification at each refinement step (method-specific edits)."""

    # ------------------------------------------------------------------ attached columns, pruning
    def attach(self, name: str, init: Tensor, *, trainable: bool = True) -> None:
        """Attach a per-Gaussian tensor ``init`` ``[N, ...]`` (e.g. router weights). It follows
        every densification and pruning and appears in ``gaussians_at(...).extras[name]``."""
        if init.shape[0] != self.num_gaussians:
            raise InputError(f"{self.info.id}.attach({name!r}): expected {self.num_gaussians} rows, got "
                             f"{tuple(init.shape)}")
        self.table.add(name, init.to(self.device), attached=True, trainable=trainable)

    def detach_column(self, name: str) -> None:
        if name not in self.table.names(attached=True):
            raise InputError(f"{self.info.id}: nothing attached under {name!r}")
        self.table.remove(name)

    def attached(self) -> dict[str, Tensor]:
        return {k: self.table[k] for k in self.table.names(attached=True)}

    def prune(self, remove: Tensor, optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        """Remove the Gaussians where ``remove`` ([N] bool) is true, from every table column
        (the expert's own and the attached ones) and from ``optimizers``' state."""
        self.table.edit_rows(keep=~remove, optimizers=optimizers)

    @property
    def num_gaussians(self) -> int:
        return len(self.table)

    def storage_bytes(self) -> int:
        """Bytes the expert needs on disk: its own per-Gaussian tensors and its networks (what the
        router attached is not counted)."""
        own = self.table.nbytes(attached=False)
        nets = sum(p.numel() * p.element_size() for n, p in self.named_parameters() if not n.startswith("table."))
        bufs = sum(b.numel() * b.element_size() for n, b in self.named_buffers()
                   if not n.startswith("table.") and b.dim() > 0)
        return own + nets + bufs

    @property
    def device(self) -> torch.device:
        return next(iter(self.table.parameters()), torch.empty(0)).device

    @property
    def spatial_lr_scale(self) -> float:
        return float(self._extent)

    # ------------------------------------------------------------------ shared building blocks
    def add_standard_columns(self, init: SceneInit, *, initial_opacity: float = 0.1) -> None:
        """The 3DGS columns from the point cloud: means, log-scales from the mean distance to the
        3 nearest points, identity rotations, logit opacities, SH from the point colours."""
        xyz = init.points  # [P, 3]
        n = xyz.shape[0]
        d2 = knn(xyz, 3)[0].mean(1).clamp_min(1e-7) if n > 1 else torch.ones(n)  # [P]
        scales = torch.log(d2.sqrt())[:, None].repeat(1, 3)  # [P, 3]
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        opac = torch.full((n,), math.log(initial_opacity / (1 - initial_opacity)))
        k = num_sh_bases(self.max_sh_degree)
        sh_dc = rgb_to_sh(init.colors)[:, None, :]  # [P, 1, 3]
        sh_rest = torch.zeros(n, k - 1, 3)
        self.table.add("means", xyz, role="position")
        self.table.add("scales", scales, role="log_scale")
        self.table.add("quats", quats, role="quat")
        self.table.add("opacities", opac, role="logit_opacity")
        self.table.add("sh_dc", sh_dc)
        self.table.add("sh_rest", sh_rest)

    def colors(self) -> Tensor:  # [N, K, 3]
        return torch.cat([self.table["sh_dc"], self.table["sh_rest"]], 1)

    def make_state(self, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                   colors: Tensor | None = None) -> GaussianState:
        """A GaussianState with the active SH degree and the attached columns as extras."""
        return GaussianState(
            means=means, quats=quats, scales=scales, opacities=opacities,
            colors=self.colors() if colors is None else colors,
            sh_degree=int(self.active_sh_degree), extras=self.attached(),
        )

    def activated(self, means: Tensor, log_scales: Tensor, quats: Tensor, logit_opacities: Tensor,
                  colors: Tensor | None = None) -> GaussianState:
        """:meth:`make_state` from pre-activation values (3DGS: exp scales, sigmoid opacities)."""
        return self.make_state(means, quats, torch.exp(log_scales), torch.sigmoid(logit_opacities), colors)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        # A column the checkpoint holds but this expert does not (an attached one, e.g. a router's
        # weights) is not created here: loading refuses it; attach the column first, then load
        # (its rows are resized to the checkpoint's like every other column).
        for key, value in state_dict.items():
            if key.startswith("table.") and key[6:] not in self.table and isinstance(value, Tensor):
                raise ExpertError(f"{self.info.id}: the checkpoint has a column {key[6:]!r} this expert "
                                  "does not; attach it before loading")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def get_extra_state(self) -> dict[str, Any]:
        return {"extent": float(self._extent)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._extent = float(state["extent"])
