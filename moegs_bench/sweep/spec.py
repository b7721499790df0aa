"""Sweep specs: the YAML file that describes an ablation (README, "Sweeps").

A spec::

    name: expert-subsets          # optional (default: the file's name without .yaml)
    command: run                  # run | prune | distill: what every point runs
    scenes: [synthetic:kitchen, synthetic:windy]
    seeds: [0, 1]
    settings:                     # every point: the command's keys (below)
      profile: tiny
    axes:                         # each key: a list of values, or a generator
      experts: {subsets_of: [4dgs, e-d3dgs, ex4dgs, stg], min_size: 2}
      router.temperature: [0.5, 1.0]
    combine: product              # product (every combination) | zip (the i-th values together)
    exclude:                      # a point matching every key of one entry is left out
      - {experts: [4dgs, stg], router.temperature: 0.5}
    source:                       # prune / distill: the run every point starts from (run keys)
      experts: [4dgs, e-d3dgs]
    plugins: [my_module:MyExpert] # Expert classes not installed as entry points
    resources:                    # how points are launched (Resources)
      launcher: local
      time_min: 120
      cpus_per_task: 2

The keys of a point. ``run``: ``experts`` (two or more ids, a list or ``a,b``), ``lpips``, and every
key of ``moegs-bench run --set`` (``profile``, ``expert_iterations``, ``scene.downscale``,
``scene.frames``, ``router.*``, ``experts.<ID>.*``; README, "Settings"). ``prune``: ``criterion``,
``ratio``, ``threshold``, ``views``, ``finetune_steps``, ``lpips``. ``distill``: ``student``,
``lam``, ``steps``, ``from_scratch``, ``baseline``, ``lpips``. Scenes and seeds have their own
lists (``seed`` and ``scene.spec`` are not point keys). Values are validated when the spec is
planned (:mod:`moegs_bench.sweep.plan`): a bad one is an error naming its place in the file
(``axes.router.temperature[1]``).

Importing this module does not import torch.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moegs_bench.config import ConfigError, config_from_dict, config_to_dict, setting
from moegs_bench.errors import UserInputError

__all__ = ["Axis", "COMMANDS", "LAUNCHERS", "Resources", "SpecError", "SweepSpec", "load_spec", "parse_override",
           "setting_text"]

COMMANDS = ("run", "prune", "distill")
LAUNCHERS = ("debug", "local", "slurm")
#: The point keys of each command besides run's dotted settings keys (module doc).
RUN_OPTIONS = ("experts", "lpips")
RUN_SETTING_PREFIXES = ("router.", "experts.", "scene.")
RUN_SETTING_KEYS = ("profile", "expert_iterations")
PRUNE_KEYS = ("criterion", "ratio", "threshold", "views", "finetune_steps", "lpips")
DISTILL_KEYS = ("student", "lam", "steps", "from_scratch", "baseline", "lpips")
LPIPS_CHOICES = ("alex", "vgg", "none")
_TOP_KEYS = ("name", "command", "scenes", "seeds", "settings", "axes", "combine", "exclude", "source", "plugins",
             "resources")


class SpecError(UserInputError):
    """A sweep spec that cannot be used: ``where`` is the file, ``path`` the place inside it."""

    def __init__(self, where: str, path: str, problem: str) -> None:
        self.where, self.path, self.problem = where, path, problem
        super().__init__(f"{where}: {path}: {problem}" if path else f"{where}: {problem}")


@dataclass(frozen=True)
class Resources:
    """How the points are launched. ``launcher`` is the default of ``sweep run --launcher``; the rest
    are the SLURM job's (``time_min`` per point, requeued on timeout up to ``max_requeues`` times;
    the job is signalled ``signal_delay_s`` before its limit to save and requeue). ``cpus_per_task``
    is also each local point's thread count (``OMP_NUM_THREADS``), and ``array_parallelism`` the
    number of points run at once (SLURM's ``%N``; the local pool's size unless ``--max-parallel``).
    ``sbatch``: extra ``#SBATCH`` options, e.g. ``--qos=normal`` or ``--account=lab``."""

    launcher: str = setting("local", choices=LAUNCHERS)
    partition: str | None = None
    time_min: int = setting(60, ge=1)
    cpus_per_task: int = setting(1, ge=1)
    gpus_per_node: int = setting(0, ge=0)
    mem_gb: float | None = setting(None, gt=0)
    array_parallelism: int = setting(4, ge=1)
    max_requeues: int = setting(3, ge=0)
    signal_delay_s: int = setting(120, ge=10)
    sbatch: tuple[str, ...] = ()

    def sbatch_parameters(self) -> dict[str, str | bool]:
        """The extra ``sbatch`` options as submitit's ``slurm_additional_parameters``."""
        out: dict[str, str | bool] = {}
        for item in self.sbatch:
            key, sep, value = item.strip().removeprefix("--").partition("=")
            out[key.replace("-", "_")] = value if sep else True
        return out


@dataclass(frozen=True)
class Axis:
    """One axis: a key and its values (a generator already expanded)."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    command: str
    scenes: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: Mapping[str, Any]
    axes: tuple[Axis, ...]
    combine: str
    exclude: tuple[Mapping[str, Any], ...]
    source: Mapping[str, Any]
    plugins: tuple[str, ...]
    resources: Resources
    file: str = ""  # where it was read (error messages)
    overrides: tuple[str, ...] = field(default=())  # the --set items applied on top of the file

    def combinations(self) -> list[dict[str, Any]]:
        """The axis values of every point (before scenes, seeds and exclusions), in order."""
        keys = [a.key for a in self.axes]
        if not keys:
            return [{}]
        rows = (itertools.product(*(a.values for a in self.axes)) if self.combine == "product"
                else zip(*(a.values for a in self.axes)))
        return [dict(zip(keys, row)) for row in rows]

    def excluded(self, values: Mapping[str, Any]) -> bool:
        """Whether a point's values (its axes, ``scene`` and ``seed``) match an ``exclude`` entry."""
        return any(all(k in values and same_value(values[k], v) for k, v in entry.items()) for entry in self.exclude)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the sweep folder's frozen copy; what makes two specs the same sweep)."""
        return {"name": self.name, "command": self.command, "scenes": list(self.scenes), "seeds": list(self.seeds),
                "settings": dict(self.settings), "axes": {a.key: list(a.values) for a in self.axes},
                "combine": self.combine, "exclude": [dict(e) for e in self.exclude], "source": dict(self.source),
                "plugins": list(self.plugins), "resources": config_to_dict(self.resources)}


def same_value(a: Any, b: Any) -> bool:
    """Values compare as the spec means them: expert lists as sets, numbers by value."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return sorted(map(str, a)) == sorted(map(str, b))
    return a == b


def setting_text(value: Any) -> str:
    """A spec value as ``--set`` text (``true``, ``none``, ``a,b``): a run point resolves its
    settings from this text, exactly as its command line does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(setting_text(v) for v in value)
    return str(value)


def parse_override(item: str) -> tuple[str, Any]:
    """``sweep --set KEY=VALUE``: the value is read as YAML (``0.1``, ``true``, ``[a, b]``)."""
    key, sep, text = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserInputError(f"--set: expected KEY=VALUE (e.g. profile=paper), got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def load_spec(path: Path | str, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and check the spec file ``path``; ``overrides`` (``(key, value)`` pairs, see
    :func:`parse_override`) set keys of ``settings`` (or of ``source``, for a run key of a prune or
    distill sweep), or of ``resources`` (``resources.time_min``), on top of the file."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such sweep spec file") from None
    except IsADirectoryError:
        raise UserInputError(f"{path}: is a folder; expected a sweep spec (.yaml) file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: cannot read it ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise SpecError(where, "", f"{at}not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise SpecError(where, "", f"expected a mapping of keys ({', '.join(_TOP_KEYS)}), got {_kind(data)}")
    return parse_spec(data, where=where, default_name=path.stem, overrides=overrides)


def parse_spec(data: Mapping[str, Any], *, where: str, default_name: str, overrides: Sequence[str] = ()) -> SweepSpec:
    """A :class:`SweepSpec` from the plain data of a spec file (module doc)."""
    for key in data:
        if key not in _TOP_KEYS:
            raise SpecError(where, str(key), f"unknown key; expected one of {', '.join(_TOP_KEYS)}"
                            + _close(str(key), _TOP_KEYS))
    command = data.get("command")
    if command not in COMMANDS:
        raise SpecError(where, "command", f"expected one of {', '.join(COMMANDS)}, got {_show(command)}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise SpecError(where, "name", f"expected a folder name (letters, digits, _ . + -), got {_show(name)}")
    scenes = _str_list(data.get("scenes", ["synthetic:kitchen"]), where, "scenes")
    seeds = _list(data.get("seeds", [0]), where, "seeds")
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise SpecError(where, f"seeds[{i}]", f"expected an integer >= 0, got {_show(s)}")
    _unique(scenes, where, "scenes")
    _unique(seeds, where, "seeds")
    settings = _mapping(data.get("settings", {}), where, "settings")
    source = _mapping(data.get("source", {}), where, "source")
    if command == "run" and source:
        raise SpecError(where, "source", "only a prune or distill sweep has a source run; a run sweep sets its "
                                         "keys in settings")
    if command != "run" and "experts" not in source:
        raise SpecError(where, "source.experts", f"a {command} sweep needs the experts of the run it starts from")
    resources_data = _mapping(data.get("resources", {}), where, "resources")
    for key, value in overrides:
        if key.startswith("resources."):
            resources_data[key.removeprefix("resources.")] = value
            continue
        target = settings if command == "run" or point_key_kind(command, key) == "point" else source
        target[key] = value
    for key in settings:
        _check_point_key(command, key, where, f"settings.{key}")
    for key in source:
        _check_point_key("run", key, where, f"source.{key}")
    combine = data.get("combine", "product")
    if combine not in ("product", "zip"):
        raise SpecError(where, "combine", f"expected product or zip, got {_show(combine)}")
    axes = []
    for key, value in _mapping(data.get("axes", {}), where, "axes").items():
        _check_point_key(command, key, where, f"axes.{key}")
        if key in settings:
            raise SpecError(where, f"axes.{key}", "is also set in settings; set it in one place")
        axes.append(Axis(key, _axis_values(key, value, where)))
    if combine == "zip" and len({len(a.values) for a in axes}) > 1:
        lengths = ", ".join(f"{a.key}: {len(a.values)}" for a in axes)
        raise SpecError(where, "axes", f"combine: zip needs axes of one length, got {lengths}")
    exclude = []
    known = {a.key for a in axes} | {"scene", "seed"}
    for i, entry in enumerate(_list(data.get("exclude", []), where, "exclude")):
        entry = _mapping(entry, where, f"exclude[{i}]")
        for key in entry:
            if key not in known:
                raise SpecError(where, f"exclude[{i}].{key}", f"not an axis (axes: {', '.join(sorted(known))})")
        exclude.append(entry)
    plugins = _str_list(data.get("plugins", []), where, "plugins")
    try:
        resources = config_from_dict(Resources, resources_data, key="resources")
    except ConfigError as e:
        raise SpecError(where, e.key, e.problem) from None
    return SweepSpec(name=name, command=command, scenes=tuple(_absolute_scene(s) for s in scenes),
                     seeds=tuple(seeds), settings=settings, axes=tuple(axes), combine=combine, exclude=tuple(exclude),
                     source=source, plugins=tuple(plugins), resources=resources, file=where,
                     overrides=tuple(f"{k}={v}" for k, v in overrides))


def point_key_kind(command: str, key: str) -> str | None:
    """``"point"`` when ``key`` is a point key of ``command``, else None."""
    if command == "run":
        ok = (key in RUN_OPTIONS or key in RUN_SETTING_KEYS or key.startswith(RUN_SETTING_PREFIXES)) \
            and key != "scene.spec"
    else:
        ok = key in (PRUNE_KEYS if command == "prune" else DISTILL_KEYS)
    return "point" if ok else None


def _check_point_key(command: str, key: str, where: str, path: str) -> None:
    if point_key_kind(command, key) is not None:
        return
    if key in ("seed", "scene", "scene.spec"):
        raise SpecError(where, path, "scenes and seeds have their own lists (scenes:, seeds:)")
    valid = {"run": [*RUN_OPTIONS, *RUN_SETTING_KEYS, "router.*", "experts.<ID>.*", "scene.downscale",
                     "scene.frames"], "prune": list(PRUNE_KEYS), "distill": list(DISTILL_KEYS)}[command]
    raise SpecError(where, path, f"not a key of a {command} point; expected one of {', '.join(valid)}"
                    + _close(key, [v for v in valid if "*" not in v and "<" not in v]))


def _axis_values(key: str, value: Any, where: str) -> tuple[Any, ...]:
    path = f"axes.{key}"
    if isinstance(value, dict):
        if key != "experts" or set(value) - {"subsets_of", "min_size", "max_size"} or "subsets_of" not in value:
            raise SpecError(where, path, "expected a list of values"
                            + (", or {subsets_of: [ID, ...], min_size: N, max_size: M}" if key == "experts" else ""))
        pool = _str_list(value["subsets_of"], where, f"{path}.subsets_of")
        _unique(pool, where, f"{path}.subsets_of")
        lo, hi = value.get("min_size", 2), value.get("max_size", len(pool))
        for name, n in (("min_size", lo), ("max_size", hi)):
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(pool):
                raise SpecError(where, f"{path}.{name}", f"expected an integer in 1..{len(pool)}, got {_show(n)}")
        if lo > hi:
            raise SpecError(where, path, f"min_size {lo} is above max_size {hi}")
        values: list[Any] = [list(c) for size in range(lo, hi + 1) for c in itertools.combinations(pool, size)]
    else:
        values = _list(value, where, path)
        if not values:
            raise SpecError(where, path, "expected at least one value")
        if key == "experts":
            values = [_expert_list(v, where, f"{path}[{i}]") for i, v in enumerate(values)]
    for i, v in enumerate(values):
        if any(same_value(v, w) for w in values[:i]):
            raise SpecError(where, f"{path}[{i}]", f"{_show(v)} is listed twice")
    return tuple(values)


def _expert_list(value: Any, where: str, path: str) -> list[str]:
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise SpecError(where, path, f"expected a list of expert ids or 'ID,ID', got {_show(value)}")
    return items


def _absolute_scene(spec: str) -> str:
    """A scene spec whose path is absolute (jobs may start in another folder); ``synthetic:`` kept."""
    from moegs_bench.data import FORMATS  # (a plain table; imports no loader)

    fmt, sep, rest = spec.partition(":")
    if sep and fmt == "synthetic":
        return spec
    if sep and fmt in FORMATS:
        return f"{fmt}:{Path(rest).expanduser().resolve()}"
    return str(Path(spec).expanduser().resolve())


def _list(value: Any, where: str, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(where, path, f"expected a list, got {_kind(value)}")
    return value


def _str_list(value: Any, where: str, path: str) -> list[str]:
    items = _list(value, where, path)
    for i, v in enumerate(items):
        if not isinstance(v, str) or not v.strip():
            raise SpecError(where, f"{path}[{i}]", f"expected a non-empty text, got {_show(v)}")
    return items


def _mapping(value: Any, where: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(where, path, f"expected a mapping of keys to values, got {_kind(value)}")
    for k in value:
        if not isinstance(k, str):
            raise SpecError(where, f"{path}.{k}", f"expected a text key, got {_kind(k)}")
    return dict(value)


def _unique(items: list[Any], where: str, path: str) -> None:
    for i, v in enumerate(items):
        if v in items[:i]:
            raise SpecError(where, f"{path}[{i}]", f"{_show(v)} is listed twice")


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


def _show(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def _close(name: str, candidates: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
