"""Import a model trained with hustvl/4DGaussians (Wu et al., CVPR 2024) as our ``4dgs`` expert.

Upstream's training (``train.py``) writes ``output/<exp>/cfg_args`` (``str(Namespace(...))`` of every
option, ``--configs`` merged in) and, per saved iteration, ``Scene.save`` (``scene/__init__.py:96-103``)
writes ``point_cloud/iteration_N/`` (fine stage) or ``point_cloud/coarse_iteration_N/`` (coarse
stage) holding

- ``point_cloud.ply``: the canonical Gaussians, an Inria-style 3DGS PLY (``GaussianModel.save_ply``);
- ``deformation.pth``: ``deform_network.state_dict()`` (``scene/deformation.py``): the HexPlane
  planes ``deformation_net.grid.grids.{scale}.{plane}`` and box ``deformation_net.grid.aabb``
  (``[max, min]``, set from the training point cloud by ``Scene`` before training and saved
  here), the trunk ``deformation_net.feature_out.*``, the five heads
  ``deformation_net.{pos,scales,rotations,opacity,shs}_deform.{1,3}``, and ``timenet.*`` /
  ``*_poc`` (never used by the forward pass);
- ``deformation_table.pth`` (bool ``[N]``) and ``deformation_accum.pth`` (``[N, 3]``): training
  statistics; the renderer deforms every Gaussian whatever the table says
  (``gaussian_renderer/__init__.py:79-89``).

Upstream's ``render`` (``gaussian_renderer/__init__.py``) deforms the raw PLY values in the fine
stage (no deformation in the coarse stage) and then activates them (exp scales, normalised
quaternions, sigmoid opacities); its field reads the time of the camera as the data set reader set
it: PanopticSports ``i / T`` (``scene/dataset_readers.py:549``), MultipleView ``i / T``
(``scene/multipleview_dataset.py:54``), dynerf ``i / 300`` (``scene/neural_3D_dataset_NDC.py:310,356``),
D-NeRF the json time over the largest json time (``scene/dataset_readers.py:298-311``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moegs_bench.interop.base import (
    Imported, UpstreamError, UpstreamRef, build_expert, gaussian_columns, iteration_folder, load_state, read_cfg_args,
    read_torch, refuse, require_file,
)

LAYOUT = ("output/<exp>/{cfg_args, point_cloud/iteration_N/{point_cloud.ply, deformation.pth, "
          "deformation_table.pth, deformation_accum.pth}} (coarse stage: point_cloud/coarse_iteration_N)")
NEED = ("point_cloud.ply", "deformation.pth")
_STAGE_FOLDER = re.compile(r"(coarse_)?iteration_(\d+)$")
#: upstream's SH head is hard-coded to degree 3 (scene/deformation.py:65, 142)
UPSTREAM_SH_COEFFS = 16
#: ModelHiddenParams that only size modules the forward pass never uses (timenet, *_poc)
UNUSED_SIZES = {"timebase_pe": 4, "posebase_pe": 10, "scale_rotation_pe": 2, "opacity_pe": 2,
                "timenet_width": 64, "timenet_output": 32}
#: settings that change what upstream renders, with the value this importer reproduces and why
#: another value is refused
FIXED = {
    "no_grid": (False, "upstream's query_time then uses an undefined feature (scene/deformation.py:69-80)"),
    "grid_pe": (0, "positional encoding of the HexPlane features is not implemented"),
    "empty_voxel": (False, "the DenseGrid mask of canonical values is not implemented"),
    "static_mlp": (False, "the static-MLP mask of canonical values is not implemented"),
    "apply_rotation": (False, "composing the rotation offset by quaternion product is not implemented"),
    "compute_cov3D_python": (False, "upstream's fine-stage render then passes no scales/rotations to the field"),
    "convert_SHs_python": (False, "upstream's render then gives its rasterizer both SHs and colours"),
}
#: upstream ModelHiddenParams defaults (arguments/__init__.py) for settings an older cfg_args may lack
DEFAULTS: dict[str, Any] = {
    "net_width": 64, "defor_depth": 1, "multires": [1, 2, 4, 8], "bounds": 1.6,
    "kplanes_config": {"grid_dimensions": 2, "input_coordinate_dim": 4, "output_coordinate_dim": 32,
                       "resolution": [64, 64, 64, 25]},
    "no_dx": False, "no_ds": False, "no_dr": False, "no_do": True, "no_dshs": True,
    "plane_tv_weight": 0.0001, "time_smoothness_weight": 0.01, "l1_time_planes": 0.0001,
    "coarse_iterations": 3000, "sh_degree": 3, **UNUSED_SIZES, **{k: v for k, (v, _) in FIXED.items()},
}


class FourDGaussiansImporter:
    format = "4dgaussians"
    expert_id = "4dgs"
    upstream = UpstreamRef("hustvl/4DGaussians", "843d5ac636c37e4b611242287754f3d4ed150144")
    layout = LAYOUT

    def load(self, folder: Path, scene: Any, *, iteration: int | None = None) -> Imported:
        from moegs_bench.experts.fourdgs import DeformationNet, FourDGaussians

        root, iteration, path, coarse = _locate(Path(folder), iteration)
        cfg_path = root / "cfg_args"
        cfg = {**DEFAULTS, **read_cfg_args(cfg_path)}
        _check_settings(cfg, cfg_path)
        ply = path / "point_cloud.ply"
        columns, _, degree = gaussian_columns(ply, require_rest=cfg["sh_degree"] != 0)
        if degree != cfg["sh_degree"]:
            raise UpstreamError(f"{ply}: SH degree {degree}, but {cfg_path} says sh_degree={cfg['sh_degree']}")
        if degree != 3 and not cfg["no_dshs"]:
            raise refuse("sh_degree", degree, "upstream's SH head (no_dshs=False) only works for degree 3")
        n = columns["means"].shape[0]

        time_scale, time_note = _time_scale(scene)
        config = _config(FourDGaussians.profile("paper"), cfg, degree, iteration, coarse, time_scale)
        net = DeformationNet(config, torch.zeros(3), torch.zeros(3), UPSTREAM_SH_COEFFS)
        expected = {f"deformation_net.{k}": tuple(v.shape) for k, v in net.state_dict().items()}
        state = load_state(path / "deformation.pth", {**expected, **_unused_shapes(cfg)})
        files = [cfg_path, ply, path / "deformation.pth"]
        files += _check_tables(path, n)

        params = {k: v for k, v in state.items() if k in expected}
        params["deform_on"] = torch.tensor(not coarse)
        expert = build_expert(FourDGaussians, config, scene, columns, params)
        aabb = state["deformation_net.grid.aabb"]
        settings = {k: cfg[k] for k in sorted(DEFAULTS)} | {
            "stage": "coarse" if coarse else "fine", "time_scale": time_scale,
            "aabb": aabb.tolist(), "gaussians": n}
        notes = [time_note,
                 f"HexPlane box from deformation.pth: max {_fmt(aabb[0])}, min {_fmt(aabb[1])} "
                 "(upstream's Scene sets it from the training point cloud; `bounds` is unused)",
                 "deformation_table.pth is read but not applied: upstream's renderer deforms every Gaussian",
                 "settings are cfg_args' (what training used); upstream's render.py re-reads hidden settings "
                 "from its defaults and --configs, so a command-line override at training is not seen there"]
        if coarse:
            notes.insert(0, f"{path.name}: a coarse-stage model; upstream renders it without deformation")
        return Imported(expert=expert, iteration=iteration, files=files, settings=settings, notes=notes)


# ---------------------------------------------------------------------------------------------- folders
def _locate(folder: Path, iteration: int | None) -> tuple[Path, int, Path, bool]:
    """``(output folder, iteration, stage folder, coarse?)`` of ``folder`` (an output folder, or one
    of its ``point_cloud/[coarse_]iteration_N`` folders). ``iteration``: that fine iteration, else
    that coarse one; default the largest fine iteration, else the largest coarse one."""
    m = _STAGE_FOLDER.match(folder.name)
    if m and folder.parent.name == "point_cloud" and folder.is_dir():
        if iteration is not None and iteration != int(m.group(2)):
            raise UpstreamError(f"--iteration {iteration}: {folder} is iteration {m.group(2)}")
        for name in NEED:
            require_file(folder / name, f"{name} in {folder.name} (expected {LAYOUT})")
        return folder.parent.parent, int(m.group(2)), folder, bool(m.group(1))
    base = folder / "point_cloud"
    found = {(bool(m.group(1)), int(m.group(2))) for p in (base.iterdir() if base.is_dir() else ())
             if p.is_dir() for m in [_STAGE_FOLDER.match(p.name)] if m}
    fine = sorted(i for c, i in found if not c)
    coarse = sorted(i for c, i in found if c)
    if iteration is None:
        use_coarse = not fine and bool(coarse)
    else:
        use_coarse = iteration not in fine and iteration in coarse
        if not use_coarse and iteration not in fine and found:
            held = [f"iteration_{i}" for i in fine] + [f"coarse_iteration_{i}" for i in coarse]
            raise UpstreamError(f"--iteration {iteration}: {base} holds {', '.join(held)}")
    prefix = "coarse_iteration_" if use_coarse else "iteration_"
    it, path = iteration_folder(folder, iteration, prefix=prefix, need=NEED, layout=LAYOUT)
    return folder, it, path, use_coarse


def _check_tables(path: Path, n: int) -> list[Path]:
    """The optional training statistics (upstream loads them when present): checked, not used."""
    read = []
    for name, shape, kind in (("deformation_table.pth", (n,), torch.bool), ("deformation_accum.pth", (n, 3), None)):
        file = path / name
        if not file.exists():
            continue
        value = read_torch(file, "torch tensor")
        if not isinstance(value, Tensor) or tuple(value.shape) != shape or (kind is not None and value.dtype != kind):
            got = f"{list(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
            raise UpstreamError(f"{file}: expected a {'bool ' if kind else ''}tensor of shape {list(shape)} "
                                f"(one row per Gaussian of point_cloud.ply), got {got}")
        read.append(file)
    return read


# ---------------------------------------------------------------------------------------------- settings
def _check_settings(cfg: dict[str, Any], path: Path) -> None:
    for key, (value, why) in FIXED.items():
        if cfg[key] != value:
            raise refuse(key, cfg[key], why)
    kp = cfg["kplanes_config"]
    if not isinstance(kp, dict) or kp.get("grid_dimensions") != 2 or kp.get("input_coordinate_dim") != 4:
        raise refuse("kplanes_config", kp, "only 2D planes over (x, y, z, t) are implemented")
    res, feat = kp.get("resolution"), kp.get("output_coordinate_dim")
    if not (_ints(res) and len(res) == 4 and _ints([feat])):
        raise UpstreamError(f"{path}: kplanes_config needs resolution [x, y, z, t] and output_coordinate_dim "
                            f"as positive integers, got {kp!r}")
    if not _ints(cfg["multires"]) or not cfg["multires"]:
        raise UpstreamError(f"{path}: multires must be a list of positive integers, got {cfg['multires']!r}")
    for key in ("net_width", "sh_degree", "coarse_iterations"):
        if not isinstance(cfg[key], int) or cfg[key] < (1 if key == "net_width" else 0):
            raise UpstreamError(f"{path}: {key} must be a non-negative integer, got {cfg[key]!r}")
    if not isinstance(cfg["defor_depth"], int) or cfg["defor_depth"] < 0:
        raise UpstreamError(f"{path}: defor_depth must be a non-negative integer, got {cfg['defor_depth']!r}")
    for key in UNUSED_SIZES:
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            raise UpstreamError(f"{path}: {key} must be a non-negative integer, got {cfg[key]!r}")


def _ints(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                     for v in values)


def _unused_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """deform_network's modules the forward pass never uses (scene/deformation.py:173-181)."""
    tw, to, tpe = cfg["timenet_width"], cfg["timenet_output"], cfg["timebase_pe"]
    return {"timenet.0.weight": (tw, 2 * tpe + 1), "timenet.0.bias": (tw,), "timenet.2.weight": (to, tw),
            "timenet.2.bias": (to,), "time_poc": (tpe,), "pos_poc": (cfg["posebase_pe"],),
            "rotation_scaling_poc": (cfg["scale_rotation_pe"],), "opacity_poc": (cfg["opacity_pe"],)}


def _config(base: Any, cfg: dict[str, Any], degree: int, iteration: int, coarse: bool, time_scale: float) -> Any:
    """Our FourDGSConfig for upstream's settings. Our step count runs through both stages: fine
    iteration N is our step ``coarse_iterations + N`` (deformation on after ``coarse_iterations``)."""
    kp = cfg["kplanes_config"]
    coarse_iters = max(cfg["coarse_iterations"], iteration) if coarse else cfg["coarse_iterations"]
    train = dataclasses.replace(base.train, sh_degree=degree,
                                iterations=iteration if coarse else cfg["coarse_iterations"] + iteration)
    return dataclasses.replace(
        base, train=train, resolution=tuple(kp["resolution"]), features=kp["output_coordinate_dim"],
        multires=tuple(cfg["multires"]), depth=cfg["defor_depth"], width=cfg["net_width"],
        plane_tv_weight=float(cfg["plane_tv_weight"]), time_smoothness_weight=float(cfg["time_smoothness_weight"]),
        l1_time_planes=float(cfg["l1_time_planes"]), coarse_iterations=coarse_iters,
        deform_means=not cfg["no_dx"], deform_scales=not cfg["no_ds"], deform_quats=not cfg["no_dr"],
        deform_opacity=not cfg["no_do"], deform_sh=not cfg["no_dshs"], sh_head_coeffs=UPSTREAM_SH_COEFFS,
        time_scale=time_scale)


def _time_scale(scene: Any) -> tuple[float, str]:
    """Upstream's time over ours for the scene's data set (our time of frame i of T is i / T; the
    D-NeRF loader keeps the json's time), and a note saying what was assumed."""
    fmt, frames = scene.format, scene.num_frames
    if fmt == "n3v":  # dynerf reader: idx / 300 whatever the frame count
        return frames / 300.0, (f"time: upstream's dynerf reader gives frame i the time i / 300; the scene has "
                                f"{frames} frames (time scale {frames / 300.0:g}), read from the video's first frame")
    if fmt == "dnerf":  # Blender reader: json time / largest json time
        top = max(f.camera.time for f in [*scene.train, *scene.test])
        if top <= 0:
            raise UpstreamError("time: the D-NeRF scene's largest time is 0; upstream divides by it")
        return 1.0 / top, (f"time: upstream's D-NeRF reader divides the json time by the largest ({top:g}); "
                           "assumed the scene holds all of upstream's frames")
    where = "its PanopticSports reader" if fmt == "panoptic" else f"a {fmt!r} scene (upstream has no reader for it)"
    return 1.0, f"time: frame i of T at i / T, as upstream gives it for {where}; assumed all frames from the first"


def _fmt(v: Tensor) -> str:
    return "[" + ", ".join(f"{x:.4g}" for x in v.tolist()) + "]"
