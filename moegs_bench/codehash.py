"""Digests of the source code a result depends on (the code part of the expert cache key).

The *source closure* of some root modules is the roots plus every module they import, followed
transitively, restricted to the top-level packages named (``moegs_bench`` and, for a ``--plugin``
expert, the plugin's own package). Imports are read from the source with :mod:`ast`, not by
importing anything:

* ``import a.b`` and ``from a.b import c`` anywhere in a module, top level or inside functions
  (relative imports are resolved against the module's package), except in ``if TYPE_CHECKING:``
  blocks, which never run; ``c`` counts when it is a submodule of ``a.b``;
* a string constant that spells a module of the followed packages, alone or as ``module:attr``
  (``FORMATS = {"n3v": "moegs_bench.data.n3v"}`` whose modules are imported with
  :func:`importlib.import_module`): other dynamic imports, of names computed at run time, are not seen;
* the packages above every module of the closure (``moegs_bench.render`` for
  ``moegs_bench.render.sh``): Python runs their ``__init__`` when the module is imported.

Module names map to files as the import system maps them (the finders of :data:`sys.meta_path`,
which know the package-dir mapping of ``experts/``, ``adapters/``, ``router/`` and ``reports/``).

The digest hashes each module's name and its *normalised* source: the syntax tree without
docstrings, comments, blank lines or formatting (:func:`ast.dump`), so editing a comment or a
docstring does not invalidate a cache, while any change to the code does. The dump format belongs
to the Python version, so another Python minor version gives other digests (one retraining).

Nothing here imports torch, nor any module it hashes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModuleFile", "SourceFacts", "class_modules", "closure_digest", "locate_module", "source_closure",
           "source_facts"]

SCHEME = "moegs-bench/codehash/1"  # part of every digest: a new normalisation gives new digests

_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_][\w.]*)?")


@dataclass(frozen=True)
class ModuleFile:
    """Where a module's code lives: ``path`` is its source file (``.py``; another file such as an
    extension module is hashed as bytes), ``None`` for a namespace package (no code);
    ``locations`` are a package's folders (``None`` for a plain module)."""

    name: str
    path: Path | None
    locations: tuple[str, ...] | None = None

    @property
    def is_package(self) -> bool:
        return self.locations is not None


Locate = Callable[[str], "ModuleFile | None"]
Read = Callable[[Path], bytes]


def locate_module(name: str) -> ModuleFile | None:
    """The file of module ``name``, found as the import system finds it (``None`` when there is no
    such module, e.g. ``a.b.func``). Nothing is imported: the finders of :data:`sys.meta_path` are
    asked directly with the package's folders, so an editable install's mapping of
    ``moegs_bench.experts`` to ``experts/`` is honoured."""
    parent = name.rpartition(".")[0]
    path = None
    if parent:
        above = locate_module(parent)
        if above is None or above.locations is None:
            return None
        path = list(above.locations)
    spec = _find_spec(name, path)
    if spec is None:
        return None
    origin = spec.origin if spec.has_location and spec.origin else None
    locations = spec.submodule_search_locations
    return ModuleFile(name, Path(origin) if origin else None, None if locations is None else tuple(locations))


def _find_spec(name: str, path: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__spec__", None) is not None:
        return module.__spec__
    if module is not None and getattr(module, "__file__", None):  # a script run as __main__
        spec = importlib.machinery.ModuleSpec(name, None, origin=module.__file__)
        spec.has_location = True
        return spec
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(name, path)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            return spec
    return None


@dataclass(frozen=True)
class SourceFacts:
    """What the closure needs from one module's source."""

    imports: frozenset[str]  # absolute names it may import (candidates: not every one is a module)
    digest: str  # SHA-256 (hex) of the normalised source


@functools.lru_cache(maxsize=1024)
def source_facts(source: bytes, module: str, is_package: bool = False) -> SourceFacts:
    """Parse ``source`` (module ``module``) once: the names it may import, absolute (``import`` and
    ``from`` statements anywhere but under ``if TYPE_CHECKING:``, ``pkg.name`` for
    ``from pkg import name``, dotted string constants
    ``"a.b"`` / ``"a.b:attr"`` -> ``a.b``), and the digest of its syntax tree without docstrings,
    comments or positions (:func:`ast.dump`). Cached on the source bytes: a process parses each
    version of a file once."""
    tree = ast.parse(source, filename=module)
    package = module if is_package else module.rpartition(".")[0]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            pass
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            if base is not None:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            names.add(node.value.partition(":")[0])
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    dump = ast.dump(tree, annotate_fields=True, include_attributes=False)
    return SourceFacts(frozenset(names), hashlib.sha256(dump.encode()).hexdigest())


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (an ``if`` whose body never runs)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0] if node.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def _absolute(module: str | None, level: int, package: str) -> str | None:
    """``from <level dots><module> import ...`` in ``package`` -> the absolute base name."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        return None  # beyond the top-level package: Python raises, nothing to follow
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else [])) or None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def source_closure(roots: Iterable[str], *, packages: Iterable[str] | None = None,
                   locate: Locate = locate_module, read: Read = Path.read_bytes) -> dict[str, ModuleFile]:
    """The modules ``roots`` run through, by name (sorted): the roots, the modules they import and
    the packages above them, transitively, within the top-level ``packages`` (default: those of the
    roots). ``locate`` and ``read`` map names to files and files to bytes (injectable for tests)."""
    roots = list(roots)
    allowed = {r.partition(".")[0] for r in roots} if packages is None else set(packages)
    found: dict[str, ModuleFile] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found or name.partition(".")[0] not in allowed:
            continue
        mod = locate(name)
        if mod is None and name in roots:
            mod = ModuleFile(name, None)  # no source file (a class made in an interactive session): its name only
        if mod is None:
            continue
        found[name] = mod
        todo.extend(_parents(name))
        if mod.path is not None and mod.path.suffix == ".py":
            todo.extend(source_facts(read(mod.path), name, mod.is_package).imports)
    return dict(sorted(found.items()))


def closure_digest(roots: Iterable[str], *, packages: Iterable[str] | None = None,
                   locate: Locate = locate_module, read: Read = Path.read_bytes) -> str:
    """SHA-256 (hex) of the source closure of ``roots`` (:func:`source_closure`): each module's
    name and normalised source, in name order. Each version of a file is parsed once per process
    (:func:`source_facts`); every call reads the files again, so an edit is always seen."""
    h = hashlib.sha256(SCHEME.encode() + b"\0")
    for name, mod in source_closure(roots, packages=packages, locate=locate, read=read).items():
        if mod.path is None:
            digest = ""  # a namespace package: no code
        elif mod.path.suffix == ".py":
            digest = source_facts(read(mod.path), name, mod.is_package).digest
        else:  # an extension module: its bytes
            digest = hashlib.sha256(read(mod.path)).hexdigest()
        h.update(f"{name}\0{digest}\0".encode())
    return h.hexdigest()


def class_modules(cls: type, stop: type) -> tuple[str, ...]:
    """The modules defining ``cls`` and its base classes up to ``stop`` (a subclass of a built-in
    expert brings the built-in's module; ``nn.Module`` and ``object`` above ``stop`` do not count)."""
    return tuple(dict.fromkeys(c.__module__ for c in cls.__mro__ if issubclass(c, stop)))
