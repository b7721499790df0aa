"""A sweep's plan: every point of a spec, resolved, identified and put in stages.

A point's id is the hash of its resolved configuration (12 hex digits): the command, the scene,
the seed and the full settings tree the command would run with (for ``run``, the
:class:`~moegs_bench.app.config.RunConfig` every default and profile value filled in), so two
specs that mean the same point give it the same id, and a point whose settings change gets a
new one. Stages run in order:

1. ``experts``: each expert training the mixture points need, once per (scene, expert,
   configuration, seed): it is trained into the shared expert cache, the same entry ``run``
   would train (so a mixture point only reads it). The cache entry is also locked while it
   trains, so a ``run`` started beside the sweep waits for it instead of training it twice.
2. ``runs``: the mixture runs (a run sweep's points, or the source runs of a prune or distill
   sweep).
3. ``prune`` / ``distill``: the points that start from a finished run of stage 2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moegs_bench.config import ConfigError, Text
from moegs_bench.sweep.spec import LPIPS_CHOICES, RUN_OPTIONS, SpecError, SweepSpec, setting_text

__all__ = ["Point", "STAGES", "build_plan", "point_id", "stage_points"]

STAGES = ("experts", "runs", "prune", "distill")


@dataclass(frozen=True)
class Point:
    """One point of a sweep. ``values``: what varies (its axes, scene and seed: its label and its
    columns in ``sweep collect``); ``settings``: every point key it sets (spec settings and axes);
    ``identity``: the resolved configuration its id hashes; ``depends``: the points it needs
    finished first; ``source``: the run point a prune or distill point starts from."""

    id: str
    stage: str
    command: str  # expert | run | prune | distill
    scene: str
    seed: int
    values: dict[str, Any]
    settings: dict[str, Any]
    identity: dict[str, Any]
    depends: tuple[str, ...] = ()
    source: str | None = None
    plugins: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        parts = [f"{k}={_text(v)}" for k, v in self.values.items() if k not in ("scene", "seed")]
        return " ".join([_short_scene(self.scene), f"seed={self.seed}", *parts])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "stage": self.stage, "command": self.command, "scene": self.scene, "seed": self.seed,
                "values": self.values, "settings": self.settings, "identity": self.identity,
                "depends": list(self.depends), "source": self.source, "plugins": list(self.plugins)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Point:
        return cls(id=data["id"], stage=data["stage"], command=data["command"], scene=data["scene"],
                   seed=data["seed"], values=dict(data["values"]), settings=dict(data["settings"]),
                   identity=dict(data["identity"]), depends=tuple(data["depends"]), source=data["source"],
                   plugins=tuple(data.get("plugins", ())))


def point_id(identity: Mapping[str, Any]) -> str:
    """The id of a point: 12 hex digits of the SHA-256 of its identity (canonical JSON, a whole
    float written as an integer: ``temperature: 1`` and ``1.0`` are one setting)."""
    return hashlib.sha256(json.dumps(_canonical(identity), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def build_plan(spec: SweepSpec) -> list[Point]:
    """Every point of ``spec``, resolved and validated (a bad value is a :class:`SpecError` naming
    its place in the file), in stage order; points that resolve to the same id appear once."""
    from moegs_bench.adapters.registry import Registry

    registry = Registry.discover(spec.plugins)
    plan: dict[str, Point] = {}

    def add(point: Point) -> Point:
        return plan.setdefault(point.id, point)

    for scene in spec.scenes:
        for seed in spec.seeds:
            for values in spec.combinations():
                if spec.excluded({**values, "scene": scene, "seed": seed}):
                    continue
                settings = {**spec.settings, **values}
                where = _origin(spec, values)
                if spec.command == "run":
                    _run_point(spec, registry, scene, seed, settings, values, where, add)
                else:
                    source = _run_point(spec, registry, scene, seed, dict(spec.source), {},
                                        lambda k: f"source.{k}", add)
                    add(_derived_point(spec, registry, source, settings, values, where))
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(plan.values(), key=lambda p: order[p.stage])  # (stable: spec order within a stage)


def _origin(spec: SweepSpec, values: Mapping[str, Any]) -> Callable[[str], str]:
    """Where a key's value of this point comes from in the file (error messages)."""
    index = {a.key: a.values.index(values[a.key]) for a in spec.axes if a.key in values}

    def where(key: str) -> str:
        if key in index:
            return f"axes.{key}[{index[key]}]"
        return f"settings.{key}"
    return where


def _run_point(spec: SweepSpec, registry, scene: str, seed: int, settings: dict[str, Any], values: dict[str, Any],
               where: Callable[[str], str], add: Callable[[Point], Point]) -> Point:
    from moegs_bench.adapters.registry import parse_expert_list
    from moegs_bench.app.config import Assignment, RunConfig
    from moegs_bench.errors import UserInputError

    experts = settings.get("experts")
    if experts is None:
        raise SpecError(spec.file, where("experts"), "a run point needs its experts (two or more ids)")
    try:
        ids = parse_expert_list(",".join(experts) if isinstance(experts, list) else str(experts), registry)
        classes = [registry.get(e) for e in ids]
    except UserInputError as e:
        raise SpecError(spec.file, where("experts"), str(e)) from None
    if len(ids) < 2:
        raise SpecError(spec.file, where("experts"), f"a mixture needs at least two experts, got {', '.join(ids)}")
    lpips = _lpips(spec, settings, where)
    todo = [Assignment("scene.spec", scene, "scene"), Assignment("seed", seed, "seed")]
    todo += [Assignment(k, Text(setting_text(v)), where(k))  # (as the point's command line gives it)
             for k, v in settings.items() if k not in RUN_OPTIONS]
    try:
        config = RunConfig.resolve(classes, todo)
    except ConfigError as e:
        origin = next((a.origin for a in reversed(todo) if a.key == e.key), None)
        raise SpecError(spec.file, origin or where(e.key), e.problem) from None
    expert_points = []
    for eid in ids:
        identity = {"command": "expert", "expert": eid, "scene": _plain(config.scene), "profile": config.profile, "seed": seed,
                    "config": config.experts[eid].to_dict(), "plugins": list(spec.plugins)}
        expert_points.append(add(Point(point_id(identity), "experts", "expert", scene, seed,
                                       {"scene": scene, "seed": seed, "expert": eid}, {"expert": eid}, identity,
                                       plugins=spec.plugins)))
    identity = {"command": "run", "config": config.to_dict(), "lpips": lpips, "plugins": list(spec.plugins)}
    shown = {"scene": scene, "seed": seed, **values}
    return add(Point(point_id(identity), "runs", "run", scene, seed, shown, {**settings, "experts": ids}, identity,
                     depends=tuple(p.id for p in expert_points), plugins=spec.plugins))


def _derived_point(spec: SweepSpec, registry, source: Point, settings: dict[str, Any], values: dict[str, Any],
                   where: Callable[[str], str]) -> Point:
    from moegs_bench.router.config import DistillConfig, PruneConfig

    lpips = _lpips(spec, settings, where)
    fields = {k: v for k, v in settings.items() if k not in ("lpips", "baseline")}
    try:
        if spec.command == "prune":
            config = PruneConfig(**{"seed": source.seed, **fields}).to_dict()
        else:
            if "student" not in fields:
                raise ConfigError("student", "a distill point needs its student (one of the source run's experts)")
            if fields["student"] not in source.settings["experts"]:
                raise ConfigError("student", f"{fields['student']!r} is not one of the source run's experts "
                                             f"({', '.join(source.settings['experts'])})")
            config = DistillConfig(**fields).to_dict()
            if config["lam"] is None:
                raise ConfigError("lam", "expected a number in [0, 1] (the fair baseline is trained with every "
                                         "distillation: baseline: true)")
    except ConfigError as e:
        raise SpecError(spec.file, where(e.key), e.problem) from None
    except TypeError as e:  # (a key the config lacks: the spec checked the names, so a bug)
        raise RuntimeError(f"{spec.command} point settings {sorted(fields)}: {e}") from e
    baseline = settings.get("baseline", True)
    if not isinstance(baseline, bool):
        raise SpecError(spec.file, where("baseline"), f"expected true or false, got {baseline!r}")
    identity = {"command": spec.command, "source": source.id, "config": config, "lpips": lpips,
                "plugins": list(spec.plugins)}
    if spec.command == "distill":
        identity["baseline"] = baseline
    shown = {"scene": source.scene, "seed": source.seed, **values}
    return Point(point_id(identity), spec.command, spec.command, source.scene, source.seed, shown, dict(settings),
                 identity, depends=(source.id,), source=source.id, plugins=spec.plugins)


def _lpips(spec: SweepSpec, settings: Mapping[str, Any], where: Callable[[str], str]) -> str | None:
    value = settings.get("lpips")
    if value is not None and value not in LPIPS_CHOICES:
        raise SpecError(spec.file, where("lpips"), f"expected one of {', '.join(LPIPS_CHOICES)}, got {value!r}")
    return value


def _plain(obj: Any) -> Any:
    from moegs_bench.config import config_to_dict

    return config_to_dict(obj)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def _short_scene(scene: str) -> str:
    return scene.split(":", 1)[1] if scene.startswith("synthetic:") else scene.rsplit("/", 1)[-1]


def stage_points(plan: Sequence[Point]) -> dict[str, list[Point]]:
    """The plan's points by stage, in stage order (stages without points left out)."""
    out: dict[str, list[Point]] = {}
    for p in plan:
        out.setdefault(p.stage, []).append(p)
    return out
