"""The router variants and multi-expert render modes, by name: two small registries.

This module imports neither torch nor the router's code, so the command line builds its
``--router`` and ``--render-mode`` choices and help from it (``moegs-bench --help`` stays fast).
A built-in entry names its implementation as ``"module:attribute"``, imported on first use:

- a **router variant** is a :class:`moegs_bench.router.gate.PixelRouter` subclass (its ``logits``
  and, for gates that are not a softmax, ``gates``), built as ``cls(num_experts, temperature)``;
- a **render mode** is a function ``(ExpertInputs) -> MultiRender`` of
  :mod:`moegs_bench.router.render`; the ``MultiRender`` it returns knows its own blend.

Adding one is one class or function plus one :class:`Entry` below; outside code (a plugin, a
test) registers at run time with :meth:`Registry.register` / :meth:`Registry.registered`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # "module:attribute" (imported on first use) or the object itself
    help: str  # a few words for --help


class Registry(Sequence[str]):
    """Names -> implementations, in registration order. As a sequence it is the tuple of its
    names (``in``, iteration, ``", ".join``), so it reads as the valid choices in checks."""

    def __init__(self, kind: str, entries: Iterable[Entry]) -> None:
        self.kind = kind  # "router variant", "render mode": starts error messages
        self._entries: dict[str, Entry] = {}
        for e in entries:
            self.register(e.name, e.target, e.help)

    # -- reading -------------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, index):  # type: ignore[override]
        return self.names()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            from moegs_bench.errors import InputError

            raise InputError(f"{self.kind}: expected one of {', '.join(self._entries)}, got {name!r}")
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The implementation registered as ``name`` (imported now if given as ``module:attribute``)."""
        target = self.entry(name).target
        if not isinstance(target, str):
            return target
        module, _, attr = target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def help_text(self) -> str:
        """``[b]a[/b] (help a), [b]b[/b] (help b) or [b]c[/b] (help c).`` (rich markup, for --help)."""
        items = [f"[b]{e.name}[/b] ({e.help})" for e in self._entries.values()]
        return (", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)) + "."

    # -- registering ----------------------------------------------------------------------------
    def register(self, name: str, target: Any, help: str) -> None:  # noqa: A002 - the CLI's word
        """Add ``name``; refuses a name already registered."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"{self.kind}: a name must be a non-empty string without surrounding blanks, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name].target!r})")
        self._entries[name] = Entry(name, target, help)

    def unregister(self, name: str) -> None:
        self.entry(name)
        del self._entries[name]

    @contextmanager
    def registered(self, name: str, target: Any, help: str) -> Iterator[None]:  # noqa: A002
        """``register`` for the duration of a ``with`` block (tests, scoped plugins)."""
        self.register(name, target, help)
        try:
            yield
        finally:
            self.unregister(name)


#: Router variants (MoE-GS, arXiv 2510.19210, §3.2 and Table 4).
ROUTER_VARIANTS = Registry("router variant", [
    Entry("volume-aware", "moegs_bench.router.gate:VolumeAwareRouter", "the paper's"),
    Entry("volume", "moegs_bench.router.gate:VolumeRouter", "per-Gaussian weights, no per-pixel softmax"),
    Entry("pixel", "moegs_bench.router.gate:PixelOnlyRouter", "2D weights only"),
])

#: Ways to render K experts (README, "Multi-expert rendering").
RENDER_MODES = Registry("render mode", [
    Entry("reference", "moegs_bench.router.render:render_reference", "the released code's 2K passes"),
    Entry("separate", "moegs_bench.router.render:render_separate", "K passes"),
    Entry("merged", "moegs_bench.router.render:render_merged",
          "the paper's single pass: experts occlude each other"),
    Entry("exact", "moegs_bench.router.render:render_exact", "one pass, one transmittance per expert"),
])
