"""Importing models trained with E-D3DGS's own code (JeongminB/E-D3DGS, Bae et al., ECCV 2024) as
our ``e-d3dgs`` expert (:class:`moegs_bench.experts.ed3dgs.ED3DGS`).

Upstream's ``train.py`` writes ``<model_path>/cfg_args`` (its argparse namespace, config merged)
and ``Scene.save`` (``scene/__init__.py``) writes ``point_cloud/iteration_N/point_cloud.ply`` (a
3DGS PLY plus ``embedding_0..E-1``, the per-Gaussian embeddings) and ``deformation.pth`` (the
``deform_network`` state dict: the temporal table ``weight [max_embeddings, temporal_dim]``, the
per-camera time ``offsets [30, 1]`` indexed by camera number, the coarse and fine decoders).

How upstream computes a frame (``scene/deformation.py``, ``gaussian_renderer/__init__.py``,
``render.py``, ``train.py``): time is ``j / 300`` (``dynerf`` reader) or ``j / 50``
(``technicolor``), ``scene/dataset_readers.py``; a camera's number is its ``camNN`` folder
(``utils/camera_utils.py``). The table is read at ``t + offsets[cam_no]`` (training) or at ``t`` +
the mean of the non-zero offsets (``cam_no=None``: every view of ``render.py``), through
``grid_sample(padding_mode='reflection', align_corners=True)`` after resizing it to the coarse /
fine row counts of the loaded iteration, with the annealing of that iteration. Our expert does all
of it through config switches the import sets (see the expert's docstring).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moegs_bench.interop.base import (
    Imported, UpstreamError, UpstreamRef, build_expert, gaussian_columns, iteration_folder, load_state,
    ply_block, read_cfg_args, refuse,
)

#: upstream ``loader`` -> the frame count its reader hard-codes (``scene/__init__.py``: duration=300 / 50).
LOADER_FRAMES = {"dynerf": 300, "technicolor": 50, "technicolorvalid": 50}
OFFSET_ROWS = 30  # deform_network.offsets: "hard coded the upper limit of the num cameras"
ANNEAL_STEPS = 1000  # deform_network.forward: np.clip(iter / 1000, 0, 1)
SH_DEGREE = 3  # the rgb_deform heads have 3 * 16 outputs, added as view(-1, 16, 3)
_HEADS = {"pos": 3, "scales": 3, "rotations": 4, "opacity": 1, "rgb": 3 * (SH_DEGREE + 1) ** 2}
#: cfg_args keys read (ModelHiddenParams, ModelParams, PipelineParams of arguments/__init__.py), by type.
_INTS = ("sh_degree", "net_width", "defor_depth", "min_embeddings", "max_embeddings", "temporal_embedding_dim",
         "gaussian_embedding_dim", "total_num_frames", "c2f_temporal_iter", "deform_from_iter")
_BOOLS = ("white_background", "no_ds", "no_dr", "no_do", "no_dc", "use_coarse_temporal_embedding",
          "no_c2f_temporal_embedding", "no_coarse_deform", "no_fine_deform", "use_anneal", "compute_cov3D_python",
          "convert_SHs_python")
_KEYS = ("loader", *_INTS, *_BOOLS)
#: switches that change what upstream renders in ways our expert does not follow -> why.
_UNSUPPORTED = {
    "no_coarse_deform": "our expert always applies the coarse decoder",
    "no_fine_deform": "our expert always applies the fine decoder",
    "compute_cov3D_python": "upstream then rasterizes the undeformed covariance (gaussian_renderer/__init__.py)",
    "convert_SHs_python": "upstream then shades the undeformed SH at the undeformed positions "
                          "(gaussian_renderer/__init__.py)",
}
#: training-only settings carried into the config (fine-tuning); our field <- upstream key.
_TRAINING = {"deformation_lr": "deformation_lr_init", "deformation_lr_final": "deformation_lr_final",
             "offsets_lr": "offsets_lr", "embedding_lr": "feature_lr", "reg_coef": "reg_coef",
             "opacity_l1": "opacity_l1_coef_fine"}


class ED3DGSImporter:
    format = "e-d3dgs"
    expert_id = "e-d3dgs"
    upstream = UpstreamRef("JeongminB/E-D3DGS", "a68543ed76e6627df2b8ec07a450c4632eb86f94")
    layout = ("cfg_args, point_cloud/iteration_N/point_cloud.ply (with embedding_*), "
              "point_cloud/iteration_N/deformation.pth")

    def load(self, folder: Path, scene: Any, *, iteration: int | None = None) -> Imported:
        from moegs_bench.experts.ed3dgs import ED3DGS

        folder = Path(folder)
        iteration, it_dir = iteration_folder(folder, iteration, need=("point_cloud.ply", "deformation.pth"),
                                             layout=self.layout)
        cfg_path = folder / "cfg_args"
        cfg = read_settings(cfg_path)
        check_settings(cfg)
        check_frames(cfg, scene)
        ply = it_dir / "point_cloud.ply"
        columns, props, degree = gaussian_columns(ply)
        if degree != cfg["sh_degree"]:
            raise UpstreamError(f"{ply}: SH degree {degree}, but cfg_args says sh_degree={cfg['sh_degree']}")
        columns["embedding"] = torch.from_numpy(ply_block(props, "embedding_", ply,
                                                          count=cfg["gaussian_embedding_dim"]))
        if not torch.isfinite(columns["embedding"]).all():
            raise UpstreamError(f"{ply}: non-finite values in embedding_*")
        pth = it_dir / "deformation.pth"
        state = load_state(pth, expected_state(cfg))
        train_ids = sorted({f.camera.camera_id for f in scene.train})
        state["offsets"] = camera_offsets(state["offsets"], train_ids, pth)
        state["step"] = torch.tensor(iteration)
        config = expert_config(ED3DGS.profiles["paper"], cfg, iteration)
        expert = build_expert(ED3DGS, config, scene, columns, state)
        return Imported(expert=expert, iteration=iteration, files=[cfg_path, ply, pth],
                        settings={k: cfg[k] for k in (*_KEYS, *_TRAINING.values())},
                        notes=import_notes(cfg, state["offsets"]))


# ---------------------------------------------------------------------------------------------- settings
def read_settings(path: Path) -> dict[str, Any]:
    """``cfg_args`` with every key this import reads present and of upstream's type."""
    cfg = read_cfg_args(path)
    for key in (*_KEYS, *_TRAINING.values()):
        if key not in cfg:
            raise UpstreamError(f"{path}: no setting {key!r}; expected the cfg_args E-D3DGS's train.py writes")
    wrong = [k for k in (*_KEYS, *_TRAINING.values()) if not _typed(k, cfg[k])]
    if wrong:
        raise UpstreamError(f"{path}: {wrong[0]}={cfg[wrong[0]]!r} is not a value upstream's parser produces")
    return cfg


def _typed(key: str, value: Any) -> bool:
    """Whether ``value`` has the type upstream's parser gives ``key``."""
    if key == "loader":
        return isinstance(value, str)
    if key in _BOOLS:
        return isinstance(value, bool)
    number = (int,) if key in _INTS else (int, float)
    return isinstance(value, number) and not isinstance(value, bool)


def check_settings(cfg: dict[str, Any]) -> None:
    """Refuse what our expert does not render the way upstream does."""
    if cfg["loader"] not in LOADER_FRAMES:
        raise refuse("loader", cfg["loader"], f"only the multi-view readers {', '.join(LOADER_FRAMES)} are "
                     "implemented (frame times and camera numbers of other readers differ)")
    if cfg["sh_degree"] != SH_DEGREE:
        raise refuse("sh_degree", cfg["sh_degree"], "upstream's colour heads are hard-coded to SH degree 3")
    for key, why in _UNSUPPORTED.items():
        if cfg[key]:
            raise refuse(key, cfg[key], why)
    for key in ("net_width", "min_embeddings", "max_embeddings", "temporal_embedding_dim", "gaussian_embedding_dim"):
        if cfg[key] < 1:
            raise refuse(key, cfg[key], "expected a positive size")
    if cfg["defor_depth"] < 0:
        raise refuse("defor_depth", cfg["defor_depth"], "expected >= 0")
    if not cfg["no_c2f_temporal_embedding"] and cfg["c2f_temporal_iter"] < 1:
        raise refuse("c2f_temporal_iter", cfg["c2f_temporal_iter"], "upstream divides by it (coarse-to-fine rows)")


def check_frames(cfg: dict[str, Any], scene: Any) -> None:
    """Upstream's time is frame / (the reader's frame count): the scene must have that many frames."""
    n = LOADER_FRAMES[cfg["loader"]]
    if scene.num_frames != n:
        raise UpstreamError(f"the scene has {scene.num_frames} frames, but upstream's {cfg['loader']} reader "
                            f"trained on {n} (time = frame / {n}); import it for the {n}-frame scene")


def expected_state(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of upstream's ``deform_network`` state dict for ``cfg``."""
    w, t, e = cfg["net_width"], cfg["temporal_embedding_dim"], cfg["gaussian_embedding_dim"]
    out: dict[str, tuple[int, ...]] = {"weight": (cfg["max_embeddings"], t), "offsets": (OFFSET_ROWS, 1)}
    for tag in ("c", "f"):
        for i in range(max(cfg["defor_depth"], 1)):  # Linear at 0, then [ReLU, Linear] pairs
            out[f"feature_out_{tag}.{2 * i}.weight"] = (w, t + e if i == 0 else w)
            out[f"feature_out_{tag}.{2 * i}.bias"] = (w,)
        for attr, dim in _HEADS.items():
            out |= {f"{attr}_deform_{tag}.1.weight": (w, w), f"{attr}_deform_{tag}.1.bias": (w,),
                    f"{attr}_deform_{tag}.3.weight": (dim, w), f"{attr}_deform_{tag}.3.bias": (dim,)}
    return out


def camera_offsets(offsets: Tensor, train_ids: list[int], path: Path) -> Tensor:  # [30, 1] -> [C, 1]
    """Upstream's offsets (row = camera number) as our rows (the scene's sorted train camera ids).
    The cameras upstream learned an offset for (its non-zero rows) must be the scene's train cameras."""
    beyond = [c for c in train_ids if not 0 <= c < OFFSET_ROWS]
    if beyond:
        raise UpstreamError(f"scene train camera {beyond[0]}: upstream's offsets hold camera numbers "
                            f"0..{OFFSET_ROWS - 1} only")
    learned = [int(i) for i in torch.nonzero(offsets[:, 0]).flatten()]
    if learned and learned != train_ids:
        raise UpstreamError(f"{path}: upstream learned time offsets for cameras {_ids(learned)}, but the scene's "
                            f"train cameras are {_ids(train_ids)}; the scene does not match the checkpoint")
    return offsets[train_ids]


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "none"


def expert_config(base: Any, cfg: dict[str, Any], iteration: int) -> Any:
    """Our config reproducing ``cfg`` at ``iteration`` (shapes, schedules, upstream switches)."""
    return dataclasses.replace(
        base,
        embedding_dim=cfg["gaussian_embedding_dim"], temporal_dim=cfg["temporal_embedding_dim"],
        temporal_rows=cfg["max_embeddings"], coarse_rows=cfg["min_embeddings"],
        c2f_iterations=cfg["c2f_temporal_iter"], depth=cfg["defor_depth"], width=cfg["net_width"],
        deform_from=cfg["deform_from_iter"], anneal_steps=ANNEAL_STEPS,
        temporal_padding="reflection", eval_step=iteration, bare_time_offset=True, anneal=bool(cfg["use_anneal"]),
        coarse_fixed_rows=bool(cfg["use_coarse_temporal_embedding"]), c2f=not cfg["no_c2f_temporal_embedding"],
        deform_scales=not cfg["no_ds"], deform_rotations=not cfg["no_dr"], deform_opacity=not cfg["no_do"],
        deform_colors=not cfg["no_dc"],
        **{ours: float(cfg[theirs]) for ours, theirs in _TRAINING.items()},
        train=dataclasses.replace(base.train, sh_degree=cfg["sh_degree"], iterations=iteration),
    )


def import_notes(cfg: dict[str, Any], offsets: Tensor) -> list[str]:
    """What the user should know about this import (``offsets``: ours, [C, 1])."""
    notes = ["the deformation is evaluated at the saved iteration's annealing and coarse-to-fine row count, as "
             "upstream's render.py does; train views use their own learned time offset (as upstream's training), "
             "other views and bare times the mean of the non-zero offsets (as render.py for every view)"]
    if not bool((offsets != 0).any()):
        notes.append("upstream learned no time offsets (all zero): the scene's camera numbers could not be "
                     "checked against the checkpoint")
    n = LOADER_FRAMES[cfg["loader"]]
    if cfg["total_num_frames"] != n:
        notes.append(f"total_num_frames={cfg['total_num_frames']} differs from the {n} frames the {cfg['loader']} "
                     f"reader loads (upstream's training sampler used it; the deformation does not)")
    if cfg["white_background"]:
        notes.append("upstream rendered on a white background (white_background=True); ours renders on the scene's")
    return notes
