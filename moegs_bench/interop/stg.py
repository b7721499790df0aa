"""Import Spacetime Gaussians lite models (oppo-us-research/SpacetimeGaussians) as our ``stg`` expert.

Upstream trains one model per segment of ``duration`` frames (``train.py --duration``, 50 in its
configs), each from a ``<scene>/colmap_<start>`` source folder and saved under its own
``--model_path`` (``log/<scene>/colmap_<start>`` in the README): ``cfg_args`` (``train.py``),
``cameras.json`` (``scene/__init__.py``) and ``point_cloud/iteration_N/point_cloud.ply``
(``scene/ourslite.py`` ``save_ply``: ``x y z trbf_center trbf_scale nx ny nz motion_0..8
f_dc_0..2 opacity scale_0..2 rot_0..3 omega_0..3``).

Inside a segment upstream's time is ``(j - start) / duration`` for frame ``j``
(``scene/dataset_readers.py`` ``readColmapCameras``: ``timestamp=(j-startime)/duration``, the
start read from the source folder's name ``colmap_<start>``), and the lite renderer
(``renderer/__init__.py`` ``train_ours_lite``; the CUDA ``forward_lite`` used at test time computes
the same) shows, with ``dt = timestamp - trbf_center``, the means ``xyz + m0 dt + m1 dt^2 + m2 dt^3``,
rotations ``normalize(rot + omega dt)``, scales ``exp(scale)``, opacities
``sigmoid(opacity) * exp(-(dt / exp(trbf_scale))^2)`` and the raw RGB ``f_dc`` as colour (no SH,
no activation).

Our time is ``t = j / T`` (``T``: the scene's frames), so ``dt_upstream = dt_ours / s`` with
``s = duration / T``: the centres become ``(start + duration * c) / T``, ``trbf_scale`` gains
``log s``, the motion blocks are divided by ``s, s^2, s^3`` and ``omega`` by ``s``. Every segment
goes into one table; its rows carry the time window of its frames (``time_window``, half a frame
either side; the first and last segment of the scene stay open towards its ends) and are invisible
outside it. The RGB colour becomes the SH DC coefficient ``(rgb - 0.5) / C0`` of a degree-0 model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moegs_bench.experts.stg import OPEN_WINDOW, SpacetimeGaussians
from moegs_bench.interop.base import (
    Imported,
    UpstreamError,
    UpstreamRef,
    build_expert,
    gaussian_columns,
    iteration_folder,
    ply_block,
    ply_property,
    read_cfg_args,
    refuse,
)
from moegs_bench.render.sh import rgb_to_sh

LAYOUT = ("colmap_<start>/cfg_args, colmap_<start>/point_cloud/iteration_N/point_cloud.ply (and cameras.json) "
          "for each segment, or one segment's folder")
SEGMENT = re.compile(r"colmap_(\d+)$")
LITE_MODEL, LITE_RENDERER = "ours_lite", "train_ours_lite"


@dataclass
class Segment:
    """One upstream training: frames ``start .. start + duration - 1``, its PLY's values as saved."""

    folder: Path
    start: int
    duration: int
    iteration: int
    columns: dict[str, Tensor]  # upstream's parameters (rgb [N, 3] instead of SH)
    files: list[Path]
    settings: dict[str, Any]
    camera_names: set[str] | None = None  # from cameras.json, when present
    notes: list[str] = field(default_factory=list)

    @property
    def end(self) -> int:  # one past the last frame
        return self.start + self.duration


class STGImporter:
    format = "stg"
    expert_id = "stg"
    upstream = UpstreamRef("oppo-us-research/SpacetimeGaussians", "427abfc58309a4a5213843dd673fb22c4529306c")
    layout = LAYOUT

    def load(self, folder: Path, scene: Any, *, iteration: int | None = None) -> Imported:
        segments = sorted((read_segment(f, iteration) for f in segment_folders(Path(folder))), key=lambda s: s.start)
        num_frames = int(scene.num_frames)
        check_segments(segments, num_frames)
        check_cameras(segments, scene)
        columns = combine(segments, num_frames)
        paper = SpacetimeGaussians.profile("paper")
        config = dataclasses.replace(paper, time_windows=True, train=dataclasses.replace(
            paper.train, sh_degree=0, iterations=max(s.iteration for s in segments)))
        expert = build_expert(SpacetimeGaussians, config, scene, columns)
        iterations = sorted({s.iteration for s in segments})
        notes = [n for s in segments for n in s.notes] + coverage_notes(segments, num_frames)
        if len(iterations) > 1:
            notes.append("the segments were saved at different iterations: "
                         + ", ".join(f"{s.folder.name} {s.iteration}" for s in segments))
        notes.append(f"{len(segments)} segment(s) of {', '.join(sorted({str(s.duration) for s in segments}))} frames "
                     f"in one expert of {expert.num_gaussians} Gaussians; each segment is shown only in its frames")
        return Imported(
            expert=expert, iteration=iterations[-1], files=[p for s in segments for p in s.files],
            settings={"num_frames": num_frames, "segments": [s.settings for s in segments]}, notes=notes,
        )


# ---------------------------------------------------------------------------------------------- reading
def segment_folders(folder: Path) -> list[Path]:
    """``folder`` itself when it is one segment's output (it holds ``cfg_args`` or ``point_cloud``),
    else its sub-folders that are."""
    if not folder.is_dir():
        raise UpstreamError(f"{folder}: no such folder (expected {LAYOUT})")
    is_segment = lambda p: (p / "cfg_args").is_file() or (p / "point_cloud").is_dir()  # noqa: E731
    if is_segment(folder):
        return [folder]
    found = sorted(p for p in folder.iterdir() if p.is_dir() and is_segment(p))
    if not found:
        raise UpstreamError(f"{folder}: no segment folders; this is not the layout upstream saves (expected {LAYOUT})")
    return found


def read_segment(folder: Path, iteration: int | None) -> Segment:
    """One segment folder: its settings (refusing what the expert does not reproduce) and PLY."""
    cfg_path = folder / "cfg_args"
    cfg = read_cfg_args(cfg_path)
    settings = check_settings(cfg, cfg_path)
    start = start_frame(cfg, cfg_path)
    duration = settings["duration"]
    it, it_folder = iteration_folder(folder, iteration, layout=LAYOUT)
    ply = it_folder / "point_cloud.ply"
    columns = read_lite_ply(ply)
    files = [cfg_path, ply]
    names, notes = None, []
    cameras = folder / "cameras.json"
    if cameras.is_file():
        names = camera_names(cameras)
        files.append(cameras)
    else:
        notes.append(f"{folder.name}: no cameras.json; the scene's cameras were not checked against it")
    negative = int((columns["rgb"] < 0).any(1).sum())
    if negative:
        notes.append(f"{folder.name}: {negative} Gaussian(s) have a negative RGB channel; upstream composites it "
                     "as is, our SH colour shows it as 0")
    if settings["white_background"]:
        notes.append(f"{folder.name}: trained on a white background (white_background=True); our renders use the "
                     "renderer's background")
    settings.update(folder=folder.name, start=start, iteration=it, num_gaussians=int(columns["means"].shape[0]))
    return Segment(folder, start, duration, it, columns, files, settings, names, notes)


def check_settings(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """The settings that decide what upstream renders; anything but the lite model is refused."""
    def need(key: str) -> Any:
        if key not in cfg:
            raise UpstreamError(f"{path}: no {key!r} setting; expected the arguments upstream's train.py writes")
        return cfg[key]

    model, rdpip, duration = need("model"), need("rdpip"), need("duration")
    if model != LITE_MODEL:
        raise refuse("model", model, "only the lite model (ours_lite: RGB colour) is imported; the full model's "
                                     "feature splatting with its decoder MLP is not reproduced")
    if rdpip != LITE_RENDERER:
        why = ("its fisheye resampling of the rendered image is not reproduced" if rdpip == "train_ours_litess"
               else f"the lite model is rendered by {LITE_RENDERER}")
        raise refuse("rdpip", rdpip, why)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
        raise UpstreamError(f"{path}: duration={duration!r}; expected the segment's frame count (an int >= 1)")
    return {"model": model, "rdpip": rdpip, "duration": duration, "source_path": str(need("source_path")),
            "loader": cfg.get("loader"), "white_background": bool(cfg.get("white_background", False)),
            "rgbfunction": cfg.get("rgbfunction"), "basicfunction": cfg.get("basicfunction")}


def start_frame(cfg: dict[str, Any], path: Path) -> int:
    """The segment's first frame: upstream's dataset readers take it from the source folder's name
    ``colmap_<start>``; a model folder named ``colmap_<k>`` must agree."""
    source = str(cfg["source_path"]).rstrip("/\\")
    m = SEGMENT.fullmatch(re.split(r"[/\\]", source)[-1])
    if m is None:
        raise UpstreamError(f"{path}: source_path {source!r} does not end in colmap_<start> (upstream reads the "
                            "segment's first frame from that name)")
    start = int(m.group(1))
    own = SEGMENT.fullmatch(path.parent.name)
    if own is not None and int(own.group(1)) != start:
        raise UpstreamError(f"{path}: the folder {path.parent.name} was trained from {source} (frames from {start})")
    return start


def read_lite_ply(path: Path) -> dict[str, Tensor]:
    """The lite ``save_ply`` columns: the 3DGS ones (``sh_dc`` read as ``rgb [N, 3]``) plus
    ``trbf_center [N, 1]``, ``trbf_scale [N, 1]``, ``motion [N, 9]``, ``omega [N, 4]``."""
    cols, props, degree = gaussian_columns(path, require_rest=False)
    if degree:
        raise UpstreamError(f"{path}: f_rest_* properties; a lite model saves RGB only (f_dc_0..2)")
    extra = {
        "trbf_center": torch.from_numpy(ply_property(props, "trbf_center", path))[:, None],
        "trbf_scale": torch.from_numpy(ply_property(props, "trbf_scale", path))[:, None],
        "motion": torch.from_numpy(ply_block(props, "motion_", path, count=9)),
        "omega": torch.from_numpy(ply_block(props, "omega_", path, count=4)),
    }
    bad = [name for name, t in extra.items() if not torch.isfinite(t).all()]
    if bad:
        raise UpstreamError(f"{path}: non-finite values in {', '.join(bad)}")
    rgb = cols.pop("sh_dc")[:, 0]
    cols.pop("sh_rest")
    return {**cols, "rgb": rgb, **extra}


def camera_names(path: Path) -> set[str]:
    """The camera names (``img_name``) in a ``cameras.json`` (one entry per camera and frame)."""
    try:
        entries = json.loads(path.read_text())
        return {str(e["img_name"]) for e in entries}
    except (ValueError, TypeError, KeyError) as e:
        raise UpstreamError(f"{path}: expected upstream's list of cameras with 'img_name' "
                            f"({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------------- checks
def check_segments(segments: list[Segment], num_frames: int) -> None:
    """The segments lie inside the scene's frames and do not overlap."""
    for seg in segments:
        if seg.end > num_frames:
            raise UpstreamError(f"{seg.folder}: the segment holds frames {seg.start}..{seg.end - 1} but the scene has "
                                f"{num_frames} frames")
    for a, b in zip(segments, segments[1:]):
        if b.start < a.end:
            raise UpstreamError(f"{b.folder}: its frames {b.start}..{b.end - 1} overlap {a.folder.name}'s "
                                f"{a.start}..{a.end - 1}")


def check_cameras(segments: list[Segment], scene: Any) -> None:
    """Each ``cameras.json`` names as many cameras as the scene has (train and test)."""
    ids = {f.camera.camera_id for f in list(scene.train) + list(scene.test)}
    for seg in segments:
        if seg.camera_names is not None and len(seg.camera_names) != len(ids):
            raise UpstreamError(f"{seg.folder / 'cameras.json'}: {len(seg.camera_names)} cameras, the scene has "
                                f"{len(ids)}")


def coverage_notes(segments: list[Segment], num_frames: int) -> list[str]:
    """A note for every run of frames no segment holds (nothing is shown there)."""
    gaps, frame = [], 0
    for seg in segments + [None]:
        until = seg.start if seg is not None else num_frames
        if until > frame:
            gaps.append(f"{frame}..{until - 1}")
        frame = seg.end if seg is not None else frame
    return [f"no segment holds frames {', '.join(gaps)}: nothing is shown there"] if gaps else []


# ---------------------------------------------------------------------------------------------- mapping
def combine(segments: list[Segment], num_frames: int) -> dict[str, Tensor]:
    """Our table's columns: every segment's rows in order, rescaled to our time."""
    parts = [segment_columns(seg, num_frames) for seg in segments]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def segment_columns(seg: Segment, num_frames: int) -> dict[str, Tensor]:
    """One segment in our time ``t = j / T``: ``dt_upstream = dt_ours / s``, ``s = duration / T``."""
    c = {k: v.double() for k, v in seg.columns.items()}
    n = c["means"].shape[0]
    s = seg.duration / num_frames
    powers = torch.tensor([s, s * s, s**3], dtype=torch.float64).repeat_interleave(3)  # [9]: m0 x3, m1 x3, m2 x3
    lo = (seg.start - 0.5) / num_frames if seg.start > 0 else OPEN_WINDOW[0]
    hi = (seg.end - 0.5) / num_frames if seg.end < num_frames else OPEN_WINDOW[1]
    out = {
        "means": c["means"], "scales": c["scales"], "quats": c["quats"], "opacities": c["opacities"],
        "sh_dc": rgb_to_sh(c["rgb"])[:, None, :],  # [N, 1, 3]: C0 * dc + 0.5 = rgb
        "sh_rest": torch.zeros(n, 0, 3, dtype=torch.float64),
        "trbf_center": (seg.start + seg.duration * c["trbf_center"]) / num_frames,  # [N, 1]
        "trbf_scale": c["trbf_scale"] + math.log(s),  # [N, 1]
        "motion": c["motion"] / powers,  # [N, 9]
        "omega": c["omega"] / s,  # [N, 4]
        "time_window": torch.tensor([[lo, hi]], dtype=torch.float64).repeat(n, 1),  # [N, 2]
    }
    return {k: v.float() for k, v in out.items()}
