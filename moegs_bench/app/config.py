"""The settings of ``moegs-bench run`` and ``train-expert`` as one typed tree (README, "Settings").

Keys (``--set KEY=VALUE``; the README lists every one):

- ``profile``: ``tiny``, ``small`` or ``paper``, the defaults every other key starts from;
- ``seed``;
- ``expert_iterations``: every expert's schedule stretched to N steps (``with_iterations``);
- ``scene.spec``, ``scene.downscale``, ``scene.frames`` (``START:END``, END exclusive), ``scene.frame_stride``,
  ``scene.test_cameras`` (``A,B``: the held-out cameras);
- ``experts.<ID>.<field>``: the expert's configuration (``train.*`` and its own fields);
- ``router.<field>`` (``run`` only): :class:`~moegs_bench.router.config.RouterConfig`.

A tree is resolved from :class:`Assignment` s, in order: ``profile`` and ``expert_iterations``
first pick the defaults (the profile's configs, stretched), then every other assignment is
written into the plain-data form of the tree, and the tree is rebuilt by its ``from_dict``,
which validates every value (:mod:`moegs_bench.config`). The last assignment of a key wins;
the CLI gives its shortcut flags first and ``--set`` after them, so ``--set`` wins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from moegs_bench.adapters.base import Expert, ExpertConfig
from moegs_bench.config import (
    ConfigError, Text, check_config, coerce, config_from_dict, config_to_dict, field_types, parse_assignment, set_key,
    setting,
)
from moegs_bench.router.config import ROUTER_PROFILES, RouterConfig

__all__ = ["Assignment", "ExpertsConfig", "OpenedScene", "RunConfig", "SceneConfig", "open_configured_scene",
           "scene_config_from_id", "text_assignments"]

C = TypeVar("C", bound="ExpertsConfig")


@dataclass(frozen=True)
class SceneConfig:
    """Which data: ``spec`` as ``--scene`` takes it (``None``: ``synthetic:kitchen``), the image
    ``downscale`` (``None``: the dataset protocol's), ``frames`` ``(start, end)`` of the
    sequence (``None``: the protocol's), of which every ``frame_stride``-th is used, and the
    ``test_cameras`` held out (``None``: the dataset's own split)."""

    spec: str | None = None
    downscale: int | None = setting(None, ge=1)
    frames: tuple[int, int] | None = None
    frame_stride: int = setting(1, ge=1)
    test_cameras: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_config(self)
        if self.frames is not None and not 0 <= self.frames[0] < self.frames[1]:
            raise ConfigError("frames", f"expected START:END with 0 <= START < END, got "
                                        f"{self.frames[0]}:{self.frames[1]}")


@dataclass(frozen=True)
class Assignment:
    """One setting from the command line: ``value`` is a :class:`~moegs_bench.config.Text` from
    ``--set`` or a typed value from a shortcut flag; ``origin`` the flag (``--set``, ``--temperature``)."""

    key: str
    value: Any
    origin: str = "--set"


@dataclass(frozen=True)
class ExpertsConfig:
    """The settings of ``train-expert`` (one expert) and the expert part of ``run``."""

    experts: Mapping[str, ExpertConfig]  # id -> configuration, in the run's order
    profile: str = "tiny"
    seed: int = setting(0, ge=0)
    expert_iterations: int | None = setting(None, ge=1)
    scene: SceneConfig = setting(default_factory=SceneConfig)

    #: Keys that pick the defaults the other keys start from (resolved first).
    SELECTORS: ClassVar[tuple[str, ...]] = ("profile", "expert_iterations")

    def __post_init__(self) -> None:
        check_config(self)

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], classes: Mapping[str, type[Expert]]) -> C:
        """Rebuild from :meth:`to_dict` output; ``classes`` are the experts' classes by id (each
        ``experts.<ID>`` is built by its class's ``config_class.from_dict``)."""

        def experts(value: Any, key: str) -> dict[str, ExpertConfig]:
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected a group of settings per expert, got {type(value).__name__}")
            missing = [e for e in classes if e not in value]
            if missing or len(value) != len(classes):
                raise ConfigError(key, f"expected the experts {', '.join(classes)}, got {', '.join(map(str, value))}")
            return {eid: classes[eid].config_class.from_dict(value[eid], key=f"{key}.{eid}") for eid in classes}

        return config_from_dict(cls, data, parsers={"experts": experts})

    # ------------------------------------------------------------------ resolution
    @classmethod
    def defaults(cls: type[C], classes: Sequence[type[Expert]], *, profile: str | None = None,
                 expert_iterations: int | None = None) -> C:
        """Every setting at ``profile``'s value (default: the field's, ``tiny``); each expert's
        schedule stretched to ``expert_iterations`` steps when given."""
        profile = cls.__dataclass_fields__["profile"].default if profile is None else profile
        configs = {}
        for e in classes:
            if profile not in e.profiles:
                raise ConfigError("profile", f"expected one of {', '.join(sorted(e.profiles))} (the profiles of "
                                             f"{e.info.id}), got {profile!r}")
            config = e.profile(profile)
            configs[e.info.id] = config if expert_iterations is None else config.with_iterations(expert_iterations)
        return cls(experts=configs, profile=profile, expert_iterations=expert_iterations,
                   **cls._profile_defaults(profile))

    @classmethod
    def _profile_defaults(cls, profile: str) -> dict[str, Any]:
        """The profile's values of the fields a subclass adds (the router of a run)."""
        return {}

    @classmethod
    def resolve(cls: type[C], classes: Sequence[type[Expert]], assignments: Sequence[Assignment] = ()) -> C:
        """The tree of ``assignments`` applied in order to the defaults they select (module doc)."""
        types_ = field_types(cls)
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
        picked = {a.key: a.value for a in assignments if a.key in cls.SELECTORS}  # the last one wins
        selected = {k: coerce(v, types_[k], k, meta[k]) for k, v in picked.items()}
        tree = cls.defaults(classes, **selected).to_dict()
        for a in assignments:
            if a.key not in cls.SELECTORS:
                set_key(tree, a.key, a.value)
        return cls.from_dict(tree, {e.info.id: e for e in classes})

    def with_experts(self: C, configs: Mapping[str, ExpertConfig]) -> C:
        """The same settings with some experts' configurations replaced (``--expert-run`` folders)."""
        unknown = sorted(set(configs) - set(self.experts))
        if unknown:
            raise ConfigError("experts", f"{', '.join(unknown)} is not one of this run's experts")
        return replace(self, experts={e: configs.get(e, c) for e, c in self.experts.items()})


@dataclass(frozen=True)
class RunConfig(ExpertsConfig):
    """The settings of ``moegs-bench run``: the experts' and the router's."""

    router: RouterConfig = setting(default_factory=RouterConfig)

    @classmethod
    def _profile_defaults(cls, profile: str) -> dict[str, Any]:
        if profile not in ROUTER_PROFILES:
            raise ConfigError("profile", f"expected one of {', '.join(ROUTER_PROFILES)}, got {profile!r}")
        return {"router": ROUTER_PROFILES[profile]}


@dataclass(frozen=True)
class OpenedScene:
    scene: Any  # moegs_bench.data.Scene
    config: SceneConfig  # resolved: canonical spec, the downscale used
    scene_id: str  # names the data in records, run folders and cache keys


def open_configured_scene(config: SceneConfig, cache_dir: Path | None) -> OpenedScene:
    """Load the scene of ``config``. Its id is the canonical spec (``synthetic:NAME`` or
    ``FORMAT:/absolute/path``), followed by ``;downscale=F`` when the downscale is not the
    protocol's, ``;frames=START:END`` when frames were chosen, ``;stride=S`` when strided and
    ``;test_cameras=A,B`` when the test split was chosen: the same data, the same id. A scene
    without test views (a capture without a test split) is refused, naming ``scene.test_cameras``."""
    from moegs_bench.data import Scene, open_scene
    from moegs_bench.data.scene import test_cameras_problem

    scene, spec = open_scene(config.spec, cache_dir=cache_dir, downscale=1, frame_range=config.frames,
                             frame_stride=config.frame_stride)
    downscale = scene.data.default_downscale if config.downscale is None else config.downscale
    _check_downscale(scene, downscale, given=config.downscale is not None)
    if config.test_cameras is not None and (problem := test_cameras_problem(scene.data, config.test_cameras)):
        raise ConfigError("scene.test_cameras", problem)
    if downscale != 1 or config.test_cameras is not None:  # the Scene open_scene(...) builds, once checked
        scene = Scene(scene.data, downscale=downscale, cache_dir=scene.cache_dir, test_cameras=config.test_cameras)
    if not scene.test:
        raise ConfigError("scene.test_cameras", f"{scene.data.root} has no test split; hold out cameras with "
                                                f"--test-cameras ID[,ID] (its cameras: "
                                                f"{', '.join(map(str, scene.camera_ids))})")
    parts = [spec]
    if scene.downscale != scene.data.default_downscale:
        parts.append(f"downscale={scene.downscale}")
    if config.frames is not None:
        parts.append(f"frames={config.frames[0]}:{config.frames[1]}")
    if config.frame_stride != 1:
        parts.append(f"stride={config.frame_stride}")
    if config.test_cameras is not None:
        parts.append(f"test_cameras={','.join(map(str, config.test_cameras))}")
    resolved = replace(config, spec=spec, downscale=scene.downscale)
    return OpenedScene(scene, resolved, ";".join(parts))


def scene_config_from_id(scene_id: str) -> SceneConfig:
    """The :class:`SceneConfig` whose :func:`open_configured_scene` gives ``scene_id`` (the id a
    ``train-expert`` or ``import`` folder's ``run.json`` names its scene by)."""
    spec, *parts = scene_id.split(";")
    downscale, frames, stride, test_cameras = None, None, 1, None
    for part in parts:
        key, _, value = part.partition("=")
        if key == "downscale":
            downscale = int(value)
        elif key == "frames":
            start, _, end = value.partition(":")
            frames = (int(start), int(end))
        elif key == "stride":
            stride = int(value)
        elif key == "test_cameras":
            test_cameras = tuple(int(v) for v in value.split(","))
        else:
            raise ConfigError("scene", f"scene id {scene_id!r}: unknown part {part!r}")
    return SceneConfig(spec=spec, downscale=downscale, frames=frames, frame_stride=stride, test_cameras=test_cameras)


def _check_downscale(scene: Any, downscale: int, *, given: bool) -> None:
    """A ConfigError on ``scene.downscale`` (the CLI names ``--downscale`` when that flag set it)
    when ``downscale`` leaves a camera of ``scene`` (loaded at full resolution) without pixels."""
    from moegs_bench.cameras import downscale_problem

    problem = downscale_problem((f.camera for f in scene.data.frames), downscale)
    if problem is not None:
        if not given:
            problem = (f"not set, and the {scene.format} default {problem}; set a smaller one with --downscale "
                       f"or --set scene.downscale=N")
        raise ConfigError("scene.downscale", problem)


def text_assignments(items: Sequence[str]) -> list[Assignment]:
    """``--set`` items (``KEY=VALUE``) as assignments, in order."""
    out = []
    for item in items:
        key, value = parse_assignment(item)
        out.append(Assignment(key, Text(value), "--set"))
    return out
