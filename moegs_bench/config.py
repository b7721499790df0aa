"""Typed configuration trees: dataclasses as data, ``KEY=VALUE`` overrides, one validation.

A configuration is a (frozen) dataclass whose fields are plain values (``int``, ``float``,
``bool``, ``str``, tuples, lists, ``X | None``, ``Literal``), mappings or nested configuration
dataclasses. Its dotted keys (``router.temperature``, ``experts.4dgs.train.iterations``) are the
paths through the tree, and the README's "Settings" section lists those of ``moegs-bench run``.

* :func:`config_from_dict` builds a dataclass from plain data (its own :func:`config_to_dict`
  output, a ``run.json``) and validates every field by its annotated type: a wrong type, a
  non-finite float (unless the field allows it, :func:`setting`), a value outside the field's
  bounds or choices, or an unknown key raises :class:`ConfigError` naming the key.
* :class:`Text` marks a value typed on the command line (``--set KEY=TEXT``): it is parsed by
  the field's type (``0.1``, ``true``, ``none``, ``64,64,64,150``, ``0:10``) instead of being
  type-checked as data.
* :func:`set_key` writes one assignment into the plain-data form of a tree; an unknown key is a
  :class:`ConfigError` that lists the closest valid keys (:mod:`difflib`).

So a new setting is one new dataclass field: parsing, validation, ``--set``, error messages and
the run record follow from its annotation (and its :func:`setting` bounds, if any).

Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from moegs_bench.errors import UserInputError

__all__ = [
    "ConfigError", "Text", "check_config", "config_from_dict", "config_to_dict", "leaf_keys", "parse_assignment",
    "set_key", "setting",
]

T = TypeVar("T")

#: Field metadata keys understood by the validation (set them with :func:`setting`).
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


class ConfigError(UserInputError):
    """A bad configuration value or an unknown key; ``key`` is its dotted path in the tree
    (``router.temperature``), ``problem`` what was wrong (``expected a finite number > 0, got inf``)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key moved under ``prefix`` (a parent config's key)."""
        moved = type(self)(join_key(prefix, self.key), self.problem)
        moved.__cause__ = self.__cause__
        return moved


class Text(str):
    """A value as typed on the command line: parsed by the type of the field it is given to."""


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
            choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None, nonfinite: bool = False) -> Any:
    """A dataclass field with validation data: bounds (``gt`` ...), allowed ``choices`` (values, or a
    callable giving them when validating, for registries) and ``nonfinite=True`` for a float field
    that may be inf or NaN (every other float must be finite)."""
    meta = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    if choices is not None:
        meta["choices"] = choices if callable(choices) else tuple(choices)
    if nonfinite:
        meta["nonfinite"] = True
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- plain data


def config_to_dict(obj: Any) -> Any:
    """Plain JSON data of a config tree (dataclasses become dicts, tuples lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    return obj


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every dataclass field of ``cls`` (``from __future__`` strings
    resolved; a field whose annotation cannot be resolved is typed by its default, or ``Any``)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation naming something the module does not define: best effort
        hints = {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in hints:
            out[f.name] = hints[f.name]
        elif f.default is not dataclasses.MISSING and f.default is not None:
            out[f.name] = type(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = type(f.default_factory())
        else:
            out[f.name] = Any
    return out


def config_from_dict(cls: type[T], data: Any, *, key: str = "", error: type[ConfigError] = ConfigError,
                     parsers: Mapping[str, Callable[[Any, str], Any]] | None = None) -> T:
    """Build the dataclass ``cls`` from ``data`` (a mapping of its fields; a missing field takes
    its default), checking every value by its field's type and :func:`setting` data. ``key`` is
    this config's own key in a larger tree (error messages name ``key.field``); ``parsers`` maps a
    field name to a function ``(value, key) -> value`` that builds it instead (a mapping of
    configs whose classes a registry knows)."""
    if not isinstance(data, Mapping):
        raise error(key, f"expected a group of settings ({cls.__name__}), got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        name = str(unknown[0])
        raise error(join_key(key, name), f"unknown key (not a setting of {cls.__name__})"
                    + _suggestion(name, fields, prefix=key))
    types_ = field_types(cls)
    kwargs = {}
    for name, value in data.items():
        sub = join_key(key, name)
        if parsers and name in parsers:
            kwargs[name] = parsers[name](value, sub)
        else:
            kwargs[name] = coerce(value, types_[name], sub, fields[name].metadata, error=error)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # the class's own validation names keys relative to itself
        raise exc.under(key) from exc.__cause__


def check_config(obj: Any, *, error: type[ConfigError] = ConfigError) -> None:
    """Validate the fields of the config instance ``obj`` by their types and :func:`setting`
    data (for ``__post_init__``, so a config built in code is checked like one read from data)."""
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Text):  # a command-line value given straight to the constructor
            raise error(f.name, f"expected a parsed value, got the text {str(value)!r}")
        coerce(value, types_[f.name], f.name, f.metadata, error=error)


def coerce(value: Any, tp: Any, key: str, meta: Mapping[str, Any] | None = None, *,
           error: type[ConfigError] = ConfigError) -> Any:
    """``value`` as the type ``tp`` (a :class:`Text` is parsed, other values are checked and kept
    as they are: an ``int`` given to a ``float`` field stays an ``int``), then checked against
    ``meta`` (bounds, choices, finiteness)."""
    out = _coerce(value, tp, key, meta or {}, error)
    _check_meta(out, key, meta or {}, error)
    return out


def _coerce(value: Any, tp: Any, key: str, meta: Mapping[str, Any], error: type[ConfigError]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, Text) and value.strip().lower() in _NONE_WORDS)):
            return None
        arms = [a for a in args if a is not type(None)]
        expected = []
        for arm in arms:
            try:
                return _coerce(value, arm, key, meta, error)
            except ConfigError as exc:
                if len(arms) == 1 and exc.key != key:  # an element of a tuple: its own message
                    raise
                expected.append(exc.problem.split(", got ")[0].removeprefix("expected "))
        if type(None) in args:
            expected.append("none")
        raise error(key, f"expected {' or '.join(expected)}, got {_describe(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise error(key, f"expected none, got {_describe(value)}")
    if origin is typing.Literal:
        if isinstance(value, Text):
            for a in args:
                if str(a) == value.strip():
                    return a
        elif any(type(value) is type(a) and value == a for a in args):
            return value
        raise error(key, f"expected one of {', '.join(map(str, args))}, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, Text):
            word = value.strip().lower()
            if word in _TRUE_WORDS or word in _FALSE_WORDS:
                return word in _TRUE_WORDS
        elif isinstance(value, bool):
            return value
        raise error(key, f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, Text):
            try:
                return int(value.strip())
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise error(key, f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, Text):
            try:
                value = float(value.strip())
            except ValueError:
                raise error(key, f"expected a number, got {_describe(value)}") from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(key, f"expected a number, got {_describe(value)}")
        if not meta.get("nonfinite") and not math.isfinite(value):
            raise error(key, f"expected a finite number{_bounds_text(meta)}, got {_describe(value)}")
        return value
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise error(key, f"expected a string, got {_describe(value)}")
    if origin in (tuple, list) or tp in (tuple, list):
        return _sequence(value, tp, origin or tp, args, key, error)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise error(key, f"expected a group of settings, got {_describe(value)}")
        value_type = args[1] if len(args) == 2 else Any
        return {k: coerce(v, value_type, join_key(key, str(k)), error=error) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Text):
            keys = [join_key(key, f.name) for f in dataclasses.fields(tp)]
            raise error(key, f"is a group of settings; set one of its keys ({', '.join(keys[:6])}"
                             f"{', ...' if len(keys) > 6 else ''})")
        return config_from_dict(tp, value, key=key, error=error)
    if isinstance(tp, type) and not isinstance(value, Text) and not isinstance(value, tp):
        raise error(key, f"expected a {tp.__name__}, got {_describe(value)}")
    return value


def _sequence(value: Any, tp: Any, origin: Any, args: tuple, key: str, error: type[ConfigError]) -> Any:
    if isinstance(value, Text):
        text = value.strip()
        if text[:1] + text[-1:] in ("()", "[]"):
            text = text[1:-1]
        sep = ":" if ":" in text and "," not in text else ","
        items: list[Any] = [Text(t) for t in text.split(sep)] if text.strip() else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise error(key, f"expected a list of values, got {_describe(value)}")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise error(key, f"expected {len(args)} values, got {len(items)} ({_describe(value)})")
        kinds = list(args)
    else:
        kinds = [args[0] if args else Any] * len(items)
    out = [coerce(v, k, f"{key}[{i}]", error=error) for i, (v, k) in enumerate(zip(items, kinds))]
    return tuple(out) if origin is tuple else out


def _check_meta(value: Any, key: str, meta: Mapping[str, Any], error: type[ConfigError]) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        for name, op in _BOUNDS.items():
            if name in meta and not _compare(value, op, meta[name]):
                kind = "an integer" if isinstance(value, int) else "a finite number"
                raise error(key, f"expected {kind}{_bounds_text(meta)}, got {_describe(value)}")
    if "choices" in meta:
        choices = tuple(meta["choices"]() if callable(meta["choices"]) else meta["choices"])
        if value not in choices:
            raise error(key, f"expected one of {', '.join(map(str, choices))}, got {_describe(value)}")


def _compare(value: float, op: str, bound: float) -> bool:
    return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


def _bounds_text(meta: Mapping[str, Any]) -> str:
    parts = [f"{op} {meta[name]:g}" for name, op in _BOUNDS.items() if name in meta]
    return (" " + " and ".join(parts)) if parts else ""


def _describe(value: Any) -> str:
    """``value`` as a message shows it: text quoted, ``inf`` and ``nan`` bare, booleans lower case."""
    if isinstance(value, Text):
        return repr(str(value))
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, str)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a group of settings"
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------- overrides


def parse_assignment(text: str) -> tuple[str, Text]:
    """``"a.b.c=value"`` -> ``("a.b.c", Text("value"))`` (the value may contain ``=``)."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("", f"--set: expected KEY=VALUE (e.g. router.temperature=0.1), got {text!r}")
    return key, Text(value)


def leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every settable key of the plain-data tree ``tree`` (a group's keys, not the group)."""
    out = []
    for name, value in tree.items():
        sub = join_key(prefix, str(name))
        if isinstance(value, Mapping) and value:
            out.extend(leaf_keys(value, sub))
        else:
            out.append(sub)
    return out


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted) of the plain-data tree ``tree`` to ``value`` in place. The key must
    name an existing setting; otherwise the :class:`ConfigError` lists the closest valid keys."""
    node: Any = tree
    parts = key.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth])
        if not isinstance(node, dict):
            raise ConfigError(key, f"unknown key: {here} is a single setting, not a group")
        if part not in node:
            raise ConfigError(key, "unknown key" + _suggestion(key, leaf_keys(tree)))
        if depth == len(parts) - 1:
            if isinstance(node[part], dict) and node[part]:
                keys = leaf_keys(node[part], key)
                raise ConfigError(key, f"is a group of settings; set one of its keys ({', '.join(keys[:6])}"
                                       f"{', ...' if len(keys) > 6 else ''})")
            node[part] = value
            return
        node = node[part]


def _suggestion(name: str, candidates: Iterable[str], *, prefix: str = "") -> str:
    names = list(candidates)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if not close:
        # a misspelt group: compare the last part with the last parts of the keys
        last = name.rsplit(".", 1)[-1]
        by_last = {}
        for k in names:
            by_last.setdefault(k.rsplit(".", 1)[-1], k)
        close = [by_last[k] for k in difflib.get_close_matches(last, list(by_last), n=3, cutoff=0.6)]
    if close:
        return "; closest valid keys: " + ", ".join(join_key(prefix, c) for c in close)
    tops = sorted({k.split(".")[0] for k in names})
    return "; valid keys start with: " + ", ".join(join_key(prefix, t) for t in tops)
