"""Which experts exist and how to get their classes (``moegs-bench experts list``, ``--experts``).

Three sources, in this order of precedence:

* **built-in** experts of this package (:data:`BUILTIN_EXPERTS`);
* **entry points** of installed distributions in the group :data:`ENTRY_POINT_GROUP`
  (``name = module:Class``; the name is the expert id);
* **plugins** named on the command line (``--plugin module:Class``; the id is ``Class.info.id``).

A third-party id that clashes with a built-in is ignored (the built-in wins) and the clash is
reported in :attr:`Registry.notes`. A plugin overrides an entry point of the same id (it was asked
for explicitly), also with a note; a plugin whose id is built in is refused.

Built-in and entry-point classes are imported only when asked for (:meth:`Registry.status`,
:meth:`Registry.get`): a module that cannot be imported (a missing optional dependency, a module
not written yet) makes its expert *unavailable*, with the reason, instead of breaking the
listing. There is no module-level mutable state: build a :class:`Registry` per call with
:meth:`Registry.discover`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from moegs_bench.adapters.base import Expert, ExpertError

__all__ = [
    "BUILTIN_EXPERTS",
    "ENTRY_POINT_GROUP",
    "ExpertSpec",
    "Registry",
    "load_target",
    "parse_expert_list",
]

#: Built-in expert ids -> ``module:Class``, in listing order.
BUILTIN_EXPERTS: dict[str, str] = {
    "4dgs": "moegs_bench.experts.fourdgs:FourDGaussians",
    "e-d3dgs": "moegs_bench.experts.ed3dgs:ED3DGS",
    "ex4dgs": "moegs_bench.experts.ex4dgs:Ex4DGS",
    "stg": "moegs_bench.experts.stg:SpacetimeGaussians",
    "static": "moegs_bench.experts.static3dgs:Static3DGS",
}

#: Entry-point group of third-party experts: ``expert_id = "module:Class"``.
ENTRY_POINT_GROUP = "moegs_bench.experts"

BUILTIN = "built-in"
PLUGIN = "plugin"

_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class ExpertSpec:
    """Where an expert comes from (nothing imported yet)."""

    id: str
    target: str  # "module:Class"
    source: str  # "built-in" | "entry point (<distribution name>)" | "plugin"


def load_target(target: str, *, origin: str = "--plugin") -> type[Expert]:
    """Import ``"module:Class"`` and check it is a usable :class:`Expert` subclass.

    ``origin`` names where the target came from, for the format error (``--plugin 'x': expected
    module:Class``). Every failure is an :class:`ExpertError` with a one-line message.
    """
    target = str(target).strip()
    if not _TARGET.match(target):
        raise ExpertError(f"{origin} {target!r}: expected module:Class")
    module_name, _, attr_path = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        reason = "no such module" if exc.name == module_name else f"{type(exc).__name__}: {exc}"
        raise ExpertError(f"module {module_name!r} cannot be imported: {reason}") from None
    except Exception as exc:  # anything the module raises while importing
        raise ExpertError(f"module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    obj: object = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ExpertError(f"{target!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, Expert)):
        raise ExpertError(f"{target!r} is not an Expert subclass (moegs_bench.adapters.base.Expert)")
    info = getattr(obj, "info", None)
    expert_id = getattr(info, "id", None)
    if not (isinstance(expert_id, str) and expert_id.strip()):
        raise ExpertError(f"{target!r}: the class has no info (ExpertInfo) with a non-empty id")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise ExpertError(f"{target!r} is abstract: it does not implement {missing}")
    return obj


class Registry:
    """The experts known to one command: built-ins, entry points and ``--plugin`` classes."""

    def __init__(self, specs: Sequence[ExpertSpec], *, loaded: dict[str, type[Expert]] | None = None,
                 notes: Sequence[tuple[str, str]] = ()) -> None:
        order = {k: i for i, k in enumerate(BUILTIN_EXPERTS)}
        ordered = sorted(specs, key=lambda s: (0, order[s.id], "") if s.source == BUILTIN and s.id in order
                         else (1, 0, s.id))
        self._specs: dict[str, ExpertSpec] = {}
        for spec in ordered:
            if spec.id in self._specs:
                raise ExpertError(f"expert {spec.id!r} is registered twice ({self._specs[spec.id].target}, "
                                  f"{spec.target})")
            self._specs[spec.id] = spec
        self._notes: list[tuple[str, str]] = list(notes)  # (expert id, message)
        self._status: dict[str, tuple[bool, str, type[Expert] | None]] = {
            k: (True, "ok", cls) for k, cls in (loaded or {}).items()
        }

    # ------------------------------------------------------------------ building
    @classmethod
    def discover(cls, plugins: Sequence[str] = ()) -> Registry:
        """Built-ins, the installed entry points of :data:`ENTRY_POINT_GROUP` and ``plugins``
        (``"module:Class"`` strings, imported now: a broken one is an :class:`ExpertError`)."""
        specs: dict[str, ExpertSpec] = {k: ExpertSpec(k, v, BUILTIN) for k, v in BUILTIN_EXPERTS.items()}
        notes: list[tuple[str, str]] = []

        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            spec = ExpertSpec(ep.name, ep.value, f"entry point ({dist})")
            other = specs.get(ep.name)
            if other is None:
                specs[ep.name] = spec
            elif other.target != spec.target or other.source != spec.source:
                notes.append((ep.name, f"{spec.source}: {ep.name} = {ep.value} is ignored: the id {ep.name!r} "
                                       f"is already taken by the {other.source} expert {other.target}"))

        loaded: dict[str, type[Expert]] = {}
        for target in plugins:
            target = str(target).strip()
            if not _TARGET.match(target):
                raise ExpertError(f"--plugin {target!r}: expected module:Class")
            try:
                expert_cls = load_target(target)
            except ExpertError as exc:
                raise ExpertError(f"--plugin: {exc}") from None
            expert_id = expert_cls.info.id
            other = specs.get(expert_id)
            if other is not None and other.target == target and other.source == PLUGIN:
                continue  # the same plugin named twice
            if other is not None and other.source == PLUGIN:
                raise ExpertError(f"--plugin {target!r}: id {expert_id!r} is already used by --plugin "
                                  f"{other.target!r}")
            if other is not None and other.source == BUILTIN:
                raise ExpertError(f"--plugin {target!r}: id {expert_id!r} is a built-in expert; give the "
                                  "plugin another info.id")
            if other is not None:
                notes.append((expert_id, f"plugin {target} replaces the {other.source} expert {expert_id!r} "
                                         f"({other.target})"))
            specs[expert_id] = ExpertSpec(expert_id, target, PLUGIN)
            loaded[expert_id] = expert_cls
        return cls(list(specs.values()), loaded=loaded, notes=notes)

    # ------------------------------------------------------------------ queries
    def specs(self) -> list[ExpertSpec]:
        """Every expert: built-ins in :data:`BUILTIN_EXPERTS` order, then the others by id."""
        return list(self._specs.values())

    @property
    def notes(self) -> list[str]:
        """What discovery reports: ignored entry points (id clashes), plugins replacing them."""
        return [message for _, message in self._notes]

    def notes_for(self, expert_id: str) -> list[str]:
        """The notes about ``expert_id`` (e.g. an entry point it shadows)."""
        return [message for k, message in self._notes if k == expert_id]

    def ids(self) -> list[str]:
        return list(self._specs)

    def spec(self, expert_id: str) -> ExpertSpec:
        if expert_id not in self._specs:
            raise ExpertError(f"unknown expert {expert_id!r}; valid ids: {', '.join(self._specs)}")
        return self._specs[expert_id]

    def __contains__(self, expert_id: object) -> bool:
        return expert_id in self._specs

    def status(self, expert_id: str) -> tuple[bool, str, type[Expert] | None]:
        """``(available, detail, cls)``: imports the class once; ``detail`` is the reason when it
        cannot be used (``"ok"`` otherwise)."""
        spec = self.spec(expert_id)
        if expert_id not in self._status:
            origin = f"{spec.source} target"
            try:
                expert_cls = load_target(spec.target, origin=origin)
            except ExpertError as exc:
                self._status[expert_id] = (False, str(exc), None)
            else:
                if expert_cls.info.id != expert_id:
                    self._status[expert_id] = (
                        False, f"{spec.target} has info.id {expert_cls.info.id!r}, registered as {expert_id!r}", None)
                else:
                    self._status[expert_id] = (True, "ok", expert_cls)
        return self._status[expert_id]

    def get(self, expert_id: str) -> type[Expert]:
        """The expert class of ``expert_id`` (:class:`ExpertError` if unknown or unavailable)."""
        available, detail, expert_cls = self.status(expert_id)
        if not available or expert_cls is None:
            raise ExpertError(f"expert {expert_id!r} is unavailable: {detail}")
        return expert_cls

    def __repr__(self) -> str:
        return f"Registry({', '.join(f'{s.id}={s.target}' for s in self._specs.values())})"


def parse_expert_list(text: str, registry: Registry) -> list[str]:
    """``"4dgs, e-d3dgs"`` -> ``["4dgs", "e-d3dgs"]``: no empty items, duplicates or unknown ids."""
    items = [item.strip() for item in str(text).split(",")]
    if items == [""]:
        raise ExpertError(f"expected a comma-separated list of experts; valid ids: {', '.join(registry.ids())}")
    out: list[str] = []
    for item in items:
        if not item:
            raise ExpertError(f"empty item in the expert list {text!r}")
        if item in out:
            raise ExpertError(f"expert {item!r} is listed twice")
        if item not in registry:
            raise ExpertError(f"unknown expert {item!r}; valid ids: {', '.join(registry.ids())}")
        out.append(item)
    return out
