"""Training checkpoints of every kind (expert, router, later distillation): one format, one
``save_checkpoint``, one ``load_checkpoint``.

A checkpoint is one ``torch.save`` file, written atomically (:func:`moegs_bench.io.atomic_write`)
and read only with ``torch.load(weights_only=True)``: it holds tensors and plain data (numbers,
strings, lists, dicts), never Python objects, so loading a crafted file cannot run code.

Layout (``format_version`` 2)::

    {"format": "moegs-bench/checkpoint", "format_version": 2,
     "kind": "expert" | "router" | "distill" | "prune" (a prune's importance scores),
     "identity": what the state belongs to, checked on load
                 (expert: {"expert": "4dgs", "state_version": 1}; router: {"experts": [...]}),
     "config": the training configuration (plain data, checked on load),
     "step": 3000, "finished": bool, "elapsed": seconds of training so far,
     "optimizer": optimizer.state_dict() | None,
     "components": ["model", "densifier"],   # the names of the state entries below
     "model": expert.state_dict(), "densifier": {...}}      # expert
     "router": mixture.router_state()                         # router

Version 1 files (``moegs-bench/expert-checkpoint`` and ``moegs-bench/router-checkpoint``, written
before the two trainers became one) are still read: they are translated to this layout on load.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moegs_bench.data.files import file_problem, os_reason
from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write

FORMAT = "moegs-bench/checkpoint"
FORMAT_VERSION = 2
KINDS = ("expert", "router", "distill", "prune")
#: Top-level keys of the layout; a component may not take one of these names.
HEADER = ("format", "format_version", "kind", "identity", "config", "step", "finished", "elapsed", "optimizer",
          "components")
_V1_FORMATS = {"moegs-bench/expert-checkpoint": "expert", "moegs-bench/router-checkpoint": "router"}


class CheckpointError(UserInputError):
    """A checkpoint is missing, unreadable, or belongs to another training (kind, expert, version)."""


@dataclass
class Checkpoint:
    kind: str  # one of KINDS
    identity: dict[str, Any]  # plain data naming what the state belongs to
    config: dict[str, Any]  # plain data: the training configuration
    step: int
    finished: bool
    elapsed: float  # seconds of training so far
    states: dict[str, Any]  # component name -> its state (tensors and plain data)
    optimizer: dict[str, Any] | None = None

    @property
    def model(self) -> dict[str, Any]:
        """An expert checkpoint's ``expert.state_dict()``."""
        return self.states["model"]

    @property
    def densifier(self) -> dict[str, Any] | None:
        """An expert checkpoint's densification statistics (None when not saved)."""
        return self.states.get("densifier")


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (a reader never sees a half-written file)."""
    if ckpt.kind not in KINDS:
        raise ValueError(f"checkpoint kind {ckpt.kind!r}: expected one of {', '.join(KINDS)}")
    clash = sorted(set(ckpt.states) & set(HEADER))
    if clash:
        raise ValueError(f"checkpoint components {clash} clash with header keys")
    payload: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": ckpt.kind, "identity": ckpt.identity,
        "config": ckpt.config, "step": ckpt.step, "finished": ckpt.finished, "elapsed": ckpt.elapsed,
        "optimizer": ckpt.optimizer, "components": list(ckpt.states), **ckpt.states,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # serialised in memory, then written with plain file I/O: a full disk is the OSError it is
    # (torch.save writing to a file reports it as a RuntimeError from its zip writer)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda p: p.write_bytes(buffer.getbuffer()))


def load_checkpoint(
    path: Path, *, kind: str | None = None, identity: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None, expert: str | None = None, state_version: int | None = None,
    map_location: str | torch.device = "cpu", config_defaults: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Read and check a checkpoint. ``kind``, the entries of ``identity`` and ``config`` are what
    the caller expects (``expert`` / ``state_version`` are shorthands for identity entries of an
    expert checkpoint); any mismatch is a one-line :class:`CheckpointError`. ``config_defaults``:
    the values of settings a checkpoint written before they existed lacks (nested like ``config``)."""
    path = Path(path)
    problem = file_problem(path)
    if problem == "missing":
        raise CheckpointError(f"{path}: no such checkpoint file")
    if problem is not None:
        raise CheckpointError(f"{path}: not a readable checkpoint file ({problem})")
    payload = _read(path, map_location)
    ckpt = _parse(path, payload)
    if kind is not None and ckpt.kind != kind:
        raise CheckpointError(f"{path}: {_a(ckpt.kind)} checkpoint, expected {_a(kind)} checkpoint")
    expected = dict(identity or {})
    if expert is not None:
        expected["expert"] = expert
    if state_version is not None:
        expected["state_version"] = state_version
    for key, want in expected.items():
        got = ckpt.identity.get(key)
        if got != want:
            raise CheckpointError(f"{path}: {_mismatch(ckpt, key, got, want)}")
    saved = with_defaults(ckpt.config, config_defaults or {})
    if config is not None and saved != dict(config):
        diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise CheckpointError(f"{path}: {ckpt.kind} checkpoint trained with another configuration (differs in "
                              f"{', '.join(diff)})")
    return ckpt


def with_defaults(saved: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with the keys of ``defaults`` it lacks added (recursively into nested dicts)."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(out[key], Mapping):
            out[key] = with_defaults(out[key], value)
    return out


def _read(path: Path, map_location: str | torch.device) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_why(e, path)})") from None


#: What the unpickler says about bytes that are not a pickle (a text or random file): a bare
#: ``KeyError: 101`` or ``invalid load key``, nothing a user can act on.
_NOT_A_PICKLE = (KeyError, IndexError, UnicodeDecodeError)


def _why(e: BaseException, path: Path) -> str:
    """A whole-sentence reason for a failed ``torch.load`` (never torch's advice to load unsafely)."""
    if isinstance(e, OSError) and e.errno is not None:  # permission denied, a loop, ...
        return os_reason(e, path)
    text = str(e).strip()
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]*\w)", text, flags=re.IGNORECASE)
        if found:
            return (f"it holds a Python object, {found.group(1)}, and checkpoints are read as tensors and plain data "
                    "only: nothing in it was run")
        return "not a file written by torch.save, or it holds more than tensors and plain data"
    if isinstance(e, EOFError) or not text:
        return "the file is empty or truncated"
    if "zip archive" in text:
        return "the file is corrupt or truncated"
    if isinstance(e, _NOT_A_PICKLE) or "load key" in text or "weights_only" in text or "pickle" in text.lower():
        return "not a file written by torch.save"
    first = " ".join(text.splitlines()[0].replace(str(path), "the file").split())
    return f"{type(e).__name__}: {first.rstrip('.:, ')}"


def _parse(path: Path, payload: Any) -> Checkpoint:
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a moegs-bench checkpoint (it holds a {type(payload).__name__})")
    fmt = payload.get("format")
    if fmt in _V1_FORMATS:
        if payload.get("format_version") != 1:
            raise CheckpointError(f"{path}: checkpoint format version {payload.get('format_version')}, this "
                                  f"moegs-bench reads version {FORMAT_VERSION} (and version 1)")
        payload = _from_v1(path, _V1_FORMATS[fmt], payload)
    elif fmt != FORMAT:
        got = "it has no 'format' entry" if fmt is None else f"format {fmt!r}"
        raise CheckpointError(f"{path}: not a moegs-bench checkpoint ({got}, expected {FORMAT!r})")
    elif payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('format_version')}, this "
                              f"moegs-bench reads version {FORMAT_VERSION} (and version 1)")
    kind = _field(path, payload, "kind", str)
    if kind not in KINDS:
        raise CheckpointError(f"{path}: checkpoint kind {kind!r}, expected one of {', '.join(KINDS)}")
    components = _field(path, payload, "components", list)
    missing = [c for c in components if not isinstance(c, str) or c in HEADER or c not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint components {missing} are missing or misnamed")
    optimizer = payload.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, dict):
        raise CheckpointError(f"{path}: checkpoint field 'optimizer': expected a dict or None, got "
                              f"{type(optimizer).__name__}")
    return Checkpoint(
        kind=kind, identity=_field(path, payload, "identity", dict), config=_field(path, payload, "config", dict),
        step=_field(path, payload, "step", int), finished=_field(path, payload, "finished", bool),
        elapsed=float(_field(path, payload, "elapsed", (int, float))),
        states={c: payload[c] for c in components}, optimizer=optimizer,
    )


def _from_v1(path: Path, kind: str, p: dict[str, Any]) -> dict[str, Any]:
    """A version-1 expert or router checkpoint in the version-2 layout."""
    if kind == "expert":
        identity = {"expert": p.get("expert"), "state_version": p.get("state_version")}
        states = {"model": p.get("model")}
        if p.get("densifier") is not None:
            states["densifier"] = p["densifier"]
        finished = p.get("finished")
    else:
        identity = {"experts": p.get("experts")}
        states = {"router": p.get("router")}
        finished = p.get("optimizer") is None  # version 1 wrote the optimiser only mid-training
    return {"kind": kind, "identity": identity, "config": p.get("config"), "step": p.get("step"),
            "finished": finished, "elapsed": p.get("elapsed"), "optimizer": p.get("optimizer"),
            "components": list(states), **states}


def _field(path: Path, payload: dict[str, Any], key: str, types: type | tuple[type, ...]) -> Any:
    value = payload.get(key)
    bad = not isinstance(value, types) or (isinstance(value, bool) and types in (int, (int, float)))
    if bad:
        want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise CheckpointError(f"{path}: checkpoint field {key!r}: expected {want}, got {type(value).__name__}")
    return value


def _mismatch(ckpt: Checkpoint, key: str, got: Any, want: Any) -> str:
    if key == "expert":
        return f"checkpoint of expert {got!r}, expected {want!r}"
    if key == "state_version":
        return (f"{ckpt.identity.get('expert', ckpt.kind)} checkpoint with state version {got}, this code expects "
                f"version {want} (trained with another moegs-bench?)")
    if key == "experts":
        return f"router checkpoint of experts {got}, this mixture has {want}"
    return f"{ckpt.kind} checkpoint with {key} {got!r}, expected {want!r}"


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word
