"""``moegs-bench export-ply``: the deformed Gaussians of a finished run at one time as a standard
3DGS PLY, the layout graphdeco-inria/gaussian-splatting's ``GaussianModel.save_ply`` writes and
its viewers (SIBR, SuperSplat, antimatter15/splat, ...) read:

``x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2 rot_0..3`` as float32, with
``f_rest`` channel-major (all red coefficients of degree >= 1, then green, then blue), the
opacity as a logit, the scales as logs and the rotation a unit quaternion (w, x, y, z); normals
are zero. For the experts of a mixture run the Gaussians of every expert are written together,
padded to the highest SH degree (the padding is zero, so each renders as before), with an extra
``uchar expert_id`` property (0, 1, ... in the run's expert order, also listed in the header's
comments). A viewer shows the experts' Gaussians all at once: the router's per-pixel blend is not
something a PLY can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moegs_bench.adapters.base import Expert
from moegs_bench.adapters.registry import Registry
from moegs_bench.errors import UserInputError
from moegs_bench.gaussians import GaussianState
from moegs_bench.interop.ply import write_ply
from moegs_bench.run_folder import EXPERT_RUN, MIXTURE_RUN, RunFolderError, read_identity, run_kind

#: Opacities are clamped to [EPS, 1 - EPS] before the logit (0 and 1 have none).
OPACITY_EPS = 1e-7


@dataclass
class Exported:
    counts: dict[str, int]  # expert id -> Gaussians written, in file order
    sh_degree: int
    with_ids: bool  # the file has the expert_id property


def open_run_experts(run_dir: Path, *, registry: Registry, cache_dir: Path | None) -> dict[str, Expert]:
    """The trained experts of a finished run folder: a ``train-expert``, ``import`` or ``distill``
    folder (one expert) or a ``moegs-bench run`` folder (its experts, in order); scene reloaded."""
    from moegs_bench.app.config import open_configured_scene, scene_config_from_id
    from moegs_bench.app.finished import load_expert_run, open_finished_run

    run_dir = Path(run_dir)
    where = f"RUN_DIR {run_dir}"
    if not run_dir.is_dir():
        raise RunFolderError(f"{where}: no such folder; expected a finished run folder")
    identity = read_identity(run_dir)
    kind = run_kind(identity) if identity is not None else None
    if kind == MIXTURE_RUN:
        run = open_finished_run(run_dir, registry=registry, cache_dir=cache_dir)
        return dict(zip(run.config.experts, run.mixture.experts))
    if kind != EXPERT_RUN:
        raise RunFolderError(f"{where}: not a finished run folder (no run.json of a train-expert, import, distill "
                             "or run folder)")
    cls = registry.get(identity["expert"])
    opened = open_configured_scene(scene_config_from_id(identity["scene"]), cache_dir)
    return {cls.info.id: load_expert_run(cls, opened.scene, run_dir, opened.scene_id, where=where)}


def ply_columns(gs: GaussianState, sh_degree: int) -> dict[str, np.ndarray]:
    """The standard 3DGS PLY columns of ``gs`` with SH coefficients up to ``sh_degree``
    (missing ones zero)."""
    n = gs.means.shape[0]
    k = (sh_degree + 1) ** 2
    sh = torch.zeros(n, k, 3, dtype=torch.float64)  # [N, K, 3]
    have = min(k, (gs.sh_degree + 1) ** 2)
    sh[:, :have] = gs.colors[:, :have].double()
    rest = sh[:, 1:].transpose(1, 2).reshape(n, 3 * (k - 1))  # channel-major, as save_ply
    opac = gs.opacities.double().clamp(OPACITY_EPS, 1 - OPACITY_EPS)
    quats = torch.nn.functional.normalize(gs.quats.double(), dim=-1)
    cols: dict[str, torch.Tensor] = {}
    for i, axis in enumerate("xyz"):
        cols[axis] = gs.means[:, i].double()
    for axis in "xyz":
        cols[f"n{axis}"] = torch.zeros(n, dtype=torch.float64)
    for i in range(3):
        cols[f"f_dc_{i}"] = sh[:, 0, i]
    for i in range(rest.shape[1]):
        cols[f"f_rest_{i}"] = rest[:, i]
    cols["opacity"] = torch.log(opac) - torch.log1p(-opac)
    for i in range(3):
        cols[f"scale_{i}"] = torch.log(gs.scales[:, i].double())
    for i in range(4):
        cols[f"rot_{i}"] = quats[:, i]
    return {name: t.numpy().astype(np.float32) for name, t in cols.items()}


@torch.no_grad()
def export_ply(run_dir: Path, time: float, out: Path, *, expert: str | None = None, registry: Registry,
               cache_dir: Path | None = None) -> Exported:
    """Write the Gaussians of ``run_dir``'s experts (or of ``expert`` only) at normalised time
    ``time`` to ``out`` (see the module doc)."""
    if not 0.0 <= time <= 1.0:
        raise UserInputError(f"--time {time:g}: expected a normalised time in [0, 1] (frame / number of frames)")
    experts = open_run_experts(run_dir, registry=registry, cache_dir=cache_dir)
    if expert is not None:
        if expert not in experts:
            raise UserInputError(f"--expert {expert}: {run_dir} holds {', '.join(experts)}")
        experts = {expert: experts[expert]}
    states = {}
    for eid, model in experts.items():
        model.eval()
        gs = model.gaussians_at(float(time))
        if gs.sh_degree is None:
            raise UserInputError(f"{eid}: its colours are features, not SH coefficients; a 3DGS PLY holds SH")
        states[eid] = gs
    degree = max(gs.sh_degree for gs in states.values())
    parts = [ply_columns(gs, degree) for gs in states.values()]
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    with_ids = len(states) > 1
    comments = [f"moegs-bench export-ply of {Path(run_dir).resolve()} at t={time:g}"]
    if with_ids:
        columns["expert_id"] = np.concatenate([np.full(p["x"].shape[0], i, np.uint8) for i, p in enumerate(parts)])
        comments += [f"expert_id {i} = {eid}" for i, eid in enumerate(states)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_ply(Path(out), columns, comments=tuple(comments))
    return Exported({eid: int(gs.means.shape[0]) for eid, gs in states.items()}, degree, with_ids)
