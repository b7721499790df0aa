"""What every upstream importer shares: the :class:`Importer` contract, the result it returns
(:class:`Imported`), and the mechanics of reading upstream output folders with one-line errors
(iteration folders, Inria-style 3DGS PLY columns, ``torch.save``'d state dicts, ``cfg_args``).

An importer turns the folder an upstream code base saves (e.g. hustvl/4DGaussians'
``output/<exp>/``) into one of our experts whose :meth:`~moegs_bench.adapters.base.Expert.gaussians_at`
gives the Gaussians upstream's own code computes at the same time. It refuses, naming the setting,
an upstream configuration its expert does not implement, rather than import something that would
render differently.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from moegs_bench.adapters.base import Expert, ExpertConfig, SceneInit
from moegs_bench.errors import UserInputError
from moegs_bench.interop.ply import read_ply


class UpstreamError(UserInputError):
    """An upstream output folder that cannot be imported (layout, files, settings, scene)."""


@dataclass(frozen=True)
class UpstreamRef:
    """The upstream code base an importer follows: ``repo`` on GitHub at ``commit`` (the revision
    whose saving and deformation code the importer was checked against)."""

    repo: str
    commit: str


@dataclass
class Imported:
    """An imported model: our ``expert`` (built for the scene, in eval mode, its SH degree the
    checkpoint's), the upstream ``iteration`` it was saved at, every file that was read, and the
    upstream settings read (plain JSON data, recorded in the run's provenance)."""

    expert: Expert
    iteration: int
    files: list[Path]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the import assumed, shown to the user


class Importer(Protocol):
    """One upstream format (``moegs-bench import FORMAT``)."""

    format: str  # the CLI name, e.g. "4dgaussians"
    expert_id: str  # the expert it becomes, e.g. "4dgs"
    upstream: UpstreamRef
    layout: str  # one line: the files it reads, for --help and errors

    def load(self, folder: Path, scene: Any, *, iteration: int | None = None) -> Imported:
        """Read ``folder`` (an upstream output folder) into an expert for ``scene`` (a loaded
        :class:`~moegs_bench.data.scene.Scene`); :class:`UpstreamError` on anything that does not fit."""


# ---------------------------------------------------------------------------------------------- files
def require_file(path: Path, what: str) -> Path:
    """``path`` when it is a file, else an :class:`UpstreamError` saying what was expected there."""
    if not Path(path).is_file():
        raise UpstreamError(f"{path}: missing; expected {what}")
    return Path(path)


def iteration_folder(folder: Path, iteration: int | None, *, parent: str = "point_cloud",
                     prefix: str = "iteration_", need: Sequence[str] = ("point_cloud.ply",),
                     layout: str = "") -> tuple[int, Path]:
    """The ``folder/parent/<prefix>N`` folder of ``iteration`` (default: the largest N present)
    holding every file in ``need``; returns ``(N, path)``. An error lists what was expected
    (``layout``: the format's expected files, for the message)."""
    folder = Path(folder)
    expect = f" (expected {layout})" if layout else ""
    if not folder.is_dir():
        raise UpstreamError(f"{folder}: no such folder{expect}")
    base = folder / parent
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = {int(m.group(1)): p for p in (base.iterdir() if base.is_dir() else ()) if p.is_dir()
             for m in [pattern.match(p.name)] if m}
    if not found:
        raise UpstreamError(f"{folder}: no {parent}/{prefix}N folder; this is not the layout the format saves{expect}")
    if iteration is None:
        iteration = max(found)
    elif iteration not in found:
        raise UpstreamError(f"--iteration {iteration}: {base} holds iterations {', '.join(map(str, sorted(found)))}")
    path = found[iteration]
    for name in need:
        require_file(path / name, f"{name} in {path.name}{expect}")
    return iteration, path


def read_torch(path: Path, what: str, *, allowed: Sequence[Any] = ()) -> Any:
    """A ``torch.save``'d file read without executing code (``weights_only``; ``allowed``: the
    further globals it may hold); any failure is an :class:`UpstreamError` saying it is not a
    readable ``what``, with the unpickler's reason."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the file's problem
        text = " ".join(str(e).split())
        found = re.search(r"Unpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text)
        why = found.group(1) if found else text
        raise UpstreamError(f"{path}: not a readable {what} ({type(e).__name__}: {why[:200]})") from None


def load_state(path: Path, expected: Mapping[str, tuple[int, ...] | None], *,
               optional: Sequence[str] = (), ignore: Sequence[str] = ()) -> dict[str, Tensor]:
    """A ``torch.save``'d state dict (tensors only, read without executing code) checked against
    ``expected`` (key -> shape, None: any shape). Keys in ``optional`` may be absent, keys matching
    an ``ignore`` regex are dropped; a missing, extra or misshapen key is an :class:`UpstreamError`
    naming it."""
    state = read_torch(require_file(path, "a torch state dict"), "torch state dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UpstreamError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not any(re.fullmatch(p, k) for p in ignore)}
    missing = sorted(k for k in expected if k not in state and k not in optional)
    extra = sorted(k for k in state if k not in expected)
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:6])}{' ...' if len(extra) > 6 else ''}"] if extra else [])
        raise UpstreamError(f"{path}: keys do not match the upstream model: {'; '.join(parts)}")
    for k, shape in expected.items():
        if k in state and shape is not None and tuple(state[k].shape) != tuple(shape):
            raise UpstreamError(f"{path}: {k} has shape {list(state[k].shape)}, expected {list(shape)}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_cfg_args(path: Path) -> dict[str, Any]:
    """The ``cfg_args`` file Inria-style code bases write (``str(argparse.Namespace(...))``) as a
    dict, parsed as literals (nothing is executed)."""
    path = require_file(path, "the cfg_args file upstream's training writes")
    text = path.read_text(errors="replace").strip()
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Namespace"):
            raise ValueError("not Namespace(...)")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
    except (SyntaxError, ValueError) as e:
        raise UpstreamError(f"{path}: expected 'Namespace(key=value, ...)' as upstream writes it ({e})") from None


def refuse(setting: str, value: Any, why: str) -> UpstreamError:
    """The error for an upstream setting the expert does not implement."""
    return UpstreamError(f"upstream setting {setting}={value!r} is not supported: {why}")


# ---------------------------------------------------------------------------------------------- PLY
def ply_block(props: Mapping[str, np.ndarray], prefix: str, path: Path, *, count: int | None = None) -> np.ndarray:
    """The properties ``prefix0, prefix1, ...`` (numbered, in numeric order) as ``[N, k]`` float32;
    ``count``: how many there must be (default: as many as there are, at least one)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    idx = sorted(int(m.group(1)) for n in props for m in [pattern.match(n)] if m)
    if count is not None and idx != list(range(count)):
        raise UpstreamError(f"{path}: expected vertex properties {prefix}0..{prefix}{count - 1}, found "
                            f"{len(idx)} ({', '.join(f'{prefix}{i}' for i in idx[:4])}{' ...' if len(idx) > 4 else ''})")
    if not idx or idx != list(range(len(idx))):
        raise UpstreamError(f"{path}: expected vertex properties {prefix}0, {prefix}1, ... (numbered from 0), found "
                            f"{[f'{prefix}{i}' for i in idx] or 'none'}")
    return np.stack([props[f"{prefix}{i}"] for i in idx], 1).astype(np.float32)


def ply_property(props: Mapping[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    if name not in props:
        raise UpstreamError(f"{path}: no vertex property {name!r}")
    return props[name].astype(np.float32)


def gaussian_columns(path: Path, *, require_rest: bool = True) -> tuple[dict[str, Tensor], dict[str, np.ndarray], int]:
    """Read an Inria-style 3DGS PLY (graphdeco-inria/gaussian-splatting ``save_ply``): our table's
    standard columns (``means [N,3]``, log ``scales [N,3]``, raw ``quats [N,4]`` (w,x,y,z), logit
    ``opacities [N]``, ``sh_dc [N,1,3]``, ``sh_rest [N,K-1,3]``; ``f_rest_*`` is channel-major:
    ``reshape(N, 3, K-1).transpose(1, 2)``), all properties, and the SH degree."""
    props = read_ply(path)
    xyz = np.stack([ply_property(props, k, path) for k in ("x", "y", "z")], 1)
    n = xyz.shape[0]
    dc = ply_block(props, "f_dc_", path, count=3)
    has_rest = any(k.startswith("f_rest_") for k in props)
    rest = ply_block(props, "f_rest_", path) if has_rest else np.zeros((n, 0), np.float32)
    if rest.shape[1] % 3:
        raise UpstreamError(f"{path}: {rest.shape[1]} f_rest_* properties; expected 3 x ((degree + 1)^2 - 1)")
    k = rest.shape[1] // 3 + 1
    degree = int(round(math.sqrt(k))) - 1
    if (degree + 1) ** 2 != k:
        raise UpstreamError(f"{path}: {rest.shape[1]} f_rest_* properties are not 3 x ((degree + 1)^2 - 1) for any degree")
    if require_rest and not has_rest:
        raise UpstreamError(f"{path}: no f_rest_* properties; expected the SH coefficients of a 3DGS PLY")
    cols = {
        "means": torch.from_numpy(xyz),
        "scales": torch.from_numpy(ply_block(props, "scale_", path, count=3)),
        "quats": torch.from_numpy(ply_block(props, "rot_", path, count=4)),
        "opacities": torch.from_numpy(ply_property(props, "opacity", path)),
        "sh_dc": torch.from_numpy(dc)[:, None, :],
        "sh_rest": torch.from_numpy(rest).view(n, 3, k - 1).transpose(1, 2).contiguous(),
    }
    bad = [name for name, t in cols.items() if not torch.isfinite(t).all()]
    if bad:
        raise UpstreamError(f"{path}: non-finite values in {', '.join(bad)}")
    return cols, props, degree


# ---------------------------------------------------------------------------------------------- building
def build_expert(cls: type[Expert], config: ExpertConfig, scene: Any, columns: Mapping[str, Tensor],
                 params: Mapping[str, Tensor] | None = None) -> Expert:
    """``cls(config)`` for ``scene`` with its table replaced by ``columns`` (every column the expert
    has, with the rows of the import) and its other parameters and buffers set from ``params``
    (state-dict keys, e.g. ``deformation_net.feature_out.0.weight``); the active SH degree is the
    maximum. A key or shape the expert does not have is a bug of the importer (``KeyError`` /
    ``ValueError``), not the user's."""
    with torch.random.fork_rng(devices=[]):  # (what the constructor draws is overwritten below)
        torch.manual_seed(0)
        expert = cls(config, SceneInit.from_scene(scene))
    state = expert.state_dict()
    own = set(expert.table.names(attached=False))
    if set(columns) != own:
        raise KeyError(f"{cls.info.id} import: columns {sorted(columns)} != the expert's {sorted(own)}")
    rows = {t.shape[0] for t in columns.values()}
    if len(rows) != 1:
        raise ValueError(f"{cls.info.id} import: columns of different lengths {sorted(rows)}")
    for name, value in columns.items():
        want = state[f"table.{name}"]
        if tuple(value.shape[1:]) != tuple(want.shape[1:]):
            raise ValueError(f"{cls.info.id} import: column {name} has shape {list(value.shape)}, the expert "
                             f"{list(want.shape)}")
        state[f"table.{name}"] = value.to(want.dtype)
    for key, value in (params or {}).items():
        if key not in state:
            raise KeyError(f"{cls.info.id} import: the expert has no parameter {key!r}")
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(f"{cls.info.id} import: {key} has shape {list(value.shape)}, the expert "
                             f"{list(state[key].shape)}")
        state[key] = value.to(state[key].dtype)
    expert.load_state_dict(state)
    expert.active_sh_degree.fill_(expert.max_sh_degree)
    return expert.eval()
