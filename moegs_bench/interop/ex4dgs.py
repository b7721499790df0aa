"""Import juno181/Ex4DGS output folders (Lee et al., "Fully Explicit Dynamic Gaussian Splatting",
NeurIPS 2024) as our ``ex4dgs`` expert.

Upstream (commit 7fac649) saves, under its ``--model_path``:

- ``cfg_args``: ``str(Namespace(...))`` of every argument (``train.py`` writes it after the scene
  resolved ``duration`` to the number of frames);
- ``point_cloud/iteration_N/point_cloud.ply``: the static Gaussians, a 3DGS PLY plus
  ``xyz_disp_0..2`` (a linear drift: ``xyz + xyz_disp * t / duration``);
- ``point_cloud/iteration_N/dynamic_point_cloud.ply``: the dynamic Gaussians, ``motion_xyz_{k}_{j}``
  and ``motion_rot_{k}_{j}`` (keyframe ``k``), ``motion_f_dc_*``, ``motion_f_rest_*``,
  ``motion_scale_*``, ``motion_opacity``, ``motion_opacity_c_{0,1}`` / ``motion_opacity_v_{0,1}``
  (the temporal-opacity window's centres and log widths, in keyframe units);
- ``chkpnt<N>.pth``: ``(CGaussianModel.capture(), N)``, which ``render.py`` restores when present:
  the model ``duration`` (grown by the progressive training to ``frames + time_shift + 1``),
  ``interval``, ``time_shift`` and the same tensors as the PLYs.

(``scene/c_gaussian_model.py``: ``save_ply``, ``capture``, ``load_ply``, ``get_*_at_t``;
``scene/__init__.py``; ``train.py``; ``render.py``.) Upstream time is the integer frame index
(``scene/dataset_readers.py``: ``frame - start_timestamp``); ours is ``t = frame / num_frames``.
Static Gaussians become our rows with ``dynamic = 0``, followed by the dynamic ones, the order in
which upstream concatenates them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moegs_bench.interop.base import (
    Imported, UpstreamError, UpstreamRef, build_expert, gaussian_columns, iteration_folder, ply_block, ply_property,
    read_cfg_args, read_torch, refuse,
)
from moegs_bench.interop.ply import read_ply

#: ``ModelParams`` defaults (``arguments/__init__.py``) for settings an older cfg_args may lack.
DEFAULTS = {"model": "cubic", "interp_type": "cube", "rot_interp_type": "slerp", "var_pad": 3,
            "kernel_size": 0.1, "time_pad_type": 0, "start_timestamp": 0}
REQUIRED = ("sh_degree", "time_interval", "time_pad", "duration")
#: positions in ``CGaussianModel.capture()`` (scene/c_gaussian_model.py) of what the import reads.
CAPTURE_LEN = 40
CAP = {"active_sh_degree": 0, "xyz": 1, "duration": 19, "interval": 20, "time_shift": 21, "xyz_motion": 23}


class Ex4DGSImporter:
    format = "ex4dgs"
    expert_id = "ex4dgs"
    upstream = UpstreamRef("juno181/Ex4DGS", "7fac64997164fde64732c80261e56adf66ca14df")
    layout = ("cfg_args, point_cloud/iteration_N/point_cloud.ply + dynamic_point_cloud.ply, "
              "chkpnt<N>.pth (optional)")

    def load(self, folder: Path, scene: Any, *, iteration: int | None = None) -> Imported:
        from moegs_bench.experts.ex4dgs import Ex4DGS, Ex4DGSConfig

        folder = Path(folder)
        it, pc = iteration_folder(folder, iteration, need=("point_cloud.ply", "dynamic_point_cloud.ply"),
                                  layout=self.layout)
        cfg_path = folder / "cfg_args"
        settings = read_settings(read_cfg_args(cfg_path), cfg_path)
        static, degree = read_static(pc / "point_cloud.ply")
        dynamic = read_dynamic(pc / "dynamic_point_cloud.ply", degree)
        if degree != settings["sh_degree"]:
            raise UpstreamError(f"{pc / 'point_cloud.ply'}: SH degree {degree}, but {cfg_path} says "
                                f"sh_degree={settings['sh_degree']}")
        files = [cfg_path, pc / "point_cloud.ply", pc / "dynamic_point_cloud.ply"]
        interval, time_pad = settings["time_interval"], settings["time_pad"]
        time_shift = time_pad + interval  # CGaussianModel.__init__ with interp_type "cube"
        notes = [f"upstream renders with its own 2D filter (kernel_size={settings['kernel_size']} added to the 2D "
                 "covariance, opacity scaled to compensate: diff_gaussian_rasterization_df); our rasterizer "
                 "dilates without compensation, so images differ slightly where the Gaussians are the same"]
        ckpt_path = folder / f"chkpnt{it}.pth"
        if ckpt_path.is_file():
            ck = read_checkpoint(ckpt_path, it, static["means"].shape[0], dynamic["keyframes"].shape[:2])
            files.append(ckpt_path)
            settings["checkpoint"] = ck
            if ck["interval"] != interval:
                raise UpstreamError(f"{ckpt_path}: interval {ck['interval']}, but {cfg_path} says "
                                    f"time_interval={interval}")
            if ck["time_shift"] != time_shift:
                raise refuse("time_shift", ck["time_shift"], f"the checkpoint's time shift is not time_pad + "
                             f"time_interval = {time_shift}, the only one our expert places keyframes with")
            if ck["active_sh_degree"] != degree:
                raise refuse("active_sh_degree", ck["active_sh_degree"], f"upstream renders fewer SH bands than the "
                             f"PLY's degree {degree} (trained under {1000 * degree} iterations)")
            drift = ck["duration"]
        else:
            drift = settings["duration"]
            notes.append(f"no {ckpt_path.name}: as upstream's render.py without it, the static drift is divided by "
                         f"cfg_args duration={drift}")
        check_scene(scene, settings, drift, time_shift, dynamic["keyframes"].shape[1], ckpt_path)
        if settings["start_timestamp"]:
            notes.append(f"upstream trained on frames from start_timestamp={settings['start_timestamp']}: the "
                         "scene's frame 0 must be that frame")
        config = Ex4DGSConfig(interval=interval, time_pad=time_pad, var_pad=settings["var_pad"],
                              num_keyframes=dynamic["keyframes"].shape[1], drift_frames=drift, window="upstream")
        config.train.sh_degree, config.train.iterations = degree, it  # (a continued training goes on from it)
        columns = table_columns(static, dynamic, time_shift, interval, scene.num_frames)
        expert = build_expert(Ex4DGS, config, scene, columns)
        return Imported(expert=expert, iteration=it, files=files, settings=settings, notes=notes)


# ---------------------------------------------------------------------------------------------- settings
def read_settings(cfg: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The cfg_args settings that decide what is rendered, refusing what the expert does not do."""
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise UpstreamError(f"{path}: no {', '.join(missing)}; expected the cfg_args Ex4DGS's train.py writes")
    s = {**DEFAULTS, **{k: cfg[k] for k in (*REQUIRED, *DEFAULTS) if k in cfg}}
    for k in ("sh_degree", "time_interval", "time_pad", "duration", "var_pad", "start_timestamp", "time_pad_type"):
        if not isinstance(s[k], int) or isinstance(s[k], bool):
            raise UpstreamError(f"{path}: {k}={s[k]!r}, expected an integer")
    if s["model"] != "cubic":
        raise refuse("model", s["model"], "upstream's getmodel knows only 'cubic'")
    if s["interp_type"] != "cube":
        raise refuse("interp_type", s["interp_type"], "our expert interpolates positions with the cubic Hermite "
                     "spline of Catmull-Rom tangents (interp_type 'cube') only")
    if s["rot_interp_type"] != "slerp":
        raise refuse("rot_interp_type", s["rot_interp_type"], "our expert slerps keyframe rotations only")
    if s["var_pad"] != 3:
        raise refuse("var_pad", s["var_pad"], "upstream's render.py ignores it (builds the model with var_pad 3) "
                     "while training used it, so there is no single window width to reproduce")
    if s["time_interval"] < 1 or s["time_pad"] < 0:
        raise refuse("time_interval/time_pad", (s["time_interval"], s["time_pad"]),
                     "expected time_interval >= 1 and time_pad >= 0")
    if s["duration"] < 1:
        raise UpstreamError(f"{path}: duration={s['duration']}; train.py writes the number of frames there")
    return s


def read_checkpoint(path: Path, iteration: int, n_static: int, dynamic_shape: tuple[int, int]) -> dict[str, int]:
    """The timing ``render.py`` restores from ``chkpnt<N>.pth`` (``(capture(), N)``), checked
    against the PLYs' row and keyframe counts. Read without executing code (numpy scalars, which
    upstream's ``spatial_lr_scale`` is, are the only non-torch objects allowed)."""
    scalar = _numpy_scalar()
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
               *{type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4")}]
    obj = read_torch(path, "Ex4DGS checkpoint", allowed=allowed)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], (tuple, list))):
        raise UpstreamError(f"{path}: expected (model_args, iteration) as train.py saves it")
    args, saved_it = obj
    if len(args) != CAPTURE_LEN:
        raise UpstreamError(f"{path}: the model state has {len(args)} entries, CGaussianModel.capture() "
                            f"saves {CAPTURE_LEN}")
    out = {k: _whole(args[i], k, path) for k, i in CAP.items() if k not in ("xyz", "xyz_motion")}
    if _whole(saved_it, "iteration", path) != iteration:
        raise UpstreamError(f"{path}: saved at iteration {saved_it}, expected {iteration}")
    xyz, motion = args[CAP["xyz"]], args[CAP["xyz_motion"]]
    if not (isinstance(xyz, Tensor) and isinstance(motion, Tensor)):
        raise UpstreamError(f"{path}: expected tensors for _xyz and _xyz_motion")
    if tuple(xyz.shape) != (n_static, 3):
        raise UpstreamError(f"{path}: _xyz has shape {list(xyz.shape)}, the static PLY {n_static} rows")
    if tuple(motion.shape) != (*dynamic_shape, 3):
        raise UpstreamError(f"{path}: _xyz_motion has shape {list(motion.shape)}, the dynamic PLY "
                            f"{[*dynamic_shape, 3]} (rows, keyframes, 3)")
    return out


def _numpy_scalar() -> Any:
    """``numpy.core.multiarray.scalar`` (how numpy scalars unpickle), wherever this numpy keeps it."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


def _whole(v: Any, name: str, path: Path) -> int:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise UpstreamError(f"{path}: {name} is {v!r}, expected a whole number")


def check_scene(scene: Any, s: Mapping[str, Any], drift: int, time_shift: int, keyframes: int, ckpt: Path) -> None:
    """The scene has the frames upstream trained on, and the keyframes cover all of them."""
    frames, interval = int(scene.num_frames), s["time_interval"]
    if frames != s["duration"]:
        raise UpstreamError(f"the scene has {frames} frames, the upstream model {s['duration']} (cfg_args duration)")
    if drift > frames + time_shift + 1:
        raise UpstreamError(f"{ckpt}: duration {drift} is longer than {frames} frames allow "
                            f"({frames} + time_shift {time_shift} + 1)")
    if frames < 2 * interval:
        raise refuse("time_interval", interval, f"our expert needs at least 2 keyframe intervals "
                     f"({2 * interval} frames); the scene has {frames}")
    need = (time_shift + frames - 1) // interval + 3
    if keyframes < need:
        raise UpstreamError(f"the dynamic PLY has {keyframes} keyframes; frame {frames - 1} reads keyframe {need - 1} "
                            "(upstream would index past its keyframes)")


# ---------------------------------------------------------------------------------------------- PLYs
def read_static(path: Path) -> tuple[dict[str, Tensor], int]:
    """The static PLY: our standard columns plus ``disp`` (``xyz_disp_0..2``), and the SH degree."""
    cols, props, degree = gaussian_columns(path)
    cols["disp"] = _finite(torch.from_numpy(ply_block(props, "xyz_disp_", path, count=3)), "xyz_disp_*", path)
    return cols, degree


def read_dynamic(path: Path, degree: int) -> dict[str, Tensor]:
    """The dynamic PLY as tensors: ``keyframes [N, K, 3]``, ``keyframe_rots [N, K, 4]`` (raw),
    ``scales [N, 3]`` (log), ``opacities [N]`` (logit), ``sh_dc [N, 1, 3]``, ``sh_rest [N, K_sh-1, 3]``,
    ``window_center``/``window_var`` ``[N, 2]``."""
    props = read_ply(path)
    n = len(next(iter(props.values()))) if props else 0
    rest_count = (degree + 1) ** 2 - 1
    rest = ply_block(props, "motion_f_rest_", path, count=3 * rest_count) if rest_count else np.zeros((n, 0))
    cols = {
        "keyframes": keyframe_grid(props, "motion_xyz_", 3, path),
        "keyframe_rots": keyframe_grid(props, "motion_rot_", 4, path),
        "scales": ply_block(props, "motion_scale_", path, count=3),
        "opacities": ply_property(props, "motion_opacity", path),
        "sh_dc": ply_block(props, "motion_f_dc_", path, count=3)[:, None, :],
        "sh_rest": rest.reshape(n, 3, rest_count).transpose(0, 2, 1),  # channel-major, as save_ply writes it
        "window_center": ply_block(props, "motion_opacity_c_", path, count=2),
        "window_var": ply_block(props, "motion_opacity_v_", path, count=2),
    }
    if cols["keyframes"].shape[1] != cols["keyframe_rots"].shape[1]:
        raise UpstreamError(f"{path}: {cols['keyframes'].shape[1]} position keyframes but "
                            f"{cols['keyframe_rots'].shape[1]} rotation keyframes")
    return {k: _finite(torch.from_numpy(np.ascontiguousarray(v, np.float32)), k, path) for k, v in cols.items()}


def keyframe_grid(props: Mapping[str, np.ndarray], prefix: str, width: int, path: Path) -> np.ndarray:
    """``prefix{k}_{j}`` for every keyframe ``k < K`` and component ``j < width`` as ``[N, K, width]``
    (``K`` read from the names)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)_(\d+)$")
    found = {(int(m.group(1)), int(m.group(2))) for name in props for m in [pattern.match(name)] if m}
    k = max((i for i, _ in found), default=-1) + 1
    if k == 0 or found != {(i, j) for i in range(k) for j in range(width)}:
        raise UpstreamError(f"{path}: expected vertex properties {prefix}{{k}}_{{j}} for every keyframe k and "
                            f"j < {width}, found {len(found)} ({prefix}*)")
    return np.stack([np.stack([props[f"{prefix}{i}_{j}"] for j in range(width)], -1) for i in range(k)], 1)


def _finite(t: Tensor, what: str, path: Path) -> Tensor:
    if not torch.isfinite(t).all():
        raise UpstreamError(f"{path}: non-finite values in {what}")
    return t


# ---------------------------------------------------------------------------------------------- table
def table_columns(static: Mapping[str, Tensor], dynamic: Mapping[str, Tensor], time_shift: int, interval: int,
                  frames: int) -> dict[str, Tensor]:
    """Our table: the static rows (keyframes/window as the expert initialises static rows) then the
    dynamic rows (``means``/``quats``: keyframe ``time_shift // interval``, unused while dynamic)."""
    ns, (nd, k) = static["means"].shape[0], dynamic["keyframes"].shape[:2]
    first = time_shift // interval
    full = torch.tensor([[time_shift / interval, (time_shift + frames - 1) / interval]])  # [1, 2]
    rows = {
        "means": (static["means"], dynamic["keyframes"][:, first]),
        "scales": (static["scales"], dynamic["scales"]),
        "quats": (static["quats"], dynamic["keyframe_rots"][:, first]),
        "opacities": (static["opacities"], dynamic["opacities"]),
        "sh_dc": (static["sh_dc"], dynamic["sh_dc"]),
        "sh_rest": (static["sh_rest"], dynamic["sh_rest"]),
        "disp": (static["disp"], torch.zeros(nd, 3)),
        "keyframes": (static["means"][:, None].repeat(1, k, 1), dynamic["keyframes"]),
        "keyframe_rots": (static["quats"][:, None].repeat(1, k, 1), dynamic["keyframe_rots"]),
        "window_center": (full.repeat(ns, 1), dynamic["window_center"]),
        "window_var": (torch.zeros(ns, 2), dynamic["window_var"]),
        "dynamic": (torch.zeros(ns), torch.ones(nd)),
    }
    return {name: torch.cat(pair, 0) for name, pair in rows.items()}
