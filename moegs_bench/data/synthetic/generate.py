"""Writing the synthetic suite to disk (Dynamic3DGaussians / Panoptic layout), the on-the-fly
cache used by ``moegs-bench run`` and a contact sheet for reports.

The rig imitates N3V: ``train_cameras`` cameras on a 120 degree arc facing the scene, and one
held-out test camera (id 0, the role of N3V's ``cam00``) inside the arc, nearer and a little lower
than the train cameras, so that it equals none of them. Train cameras have ids 1..n. Frame ``i``
of ``frames`` is at time ``i / frames``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.io import image_to_uint8
from moegs_bench.data.regions import UNLABELLED, write_regions
from moegs_bench.data.scene import Frame, PointCloud, normalised_time
from moegs_bench.data.synthetic.raycast import Rig, Room, Views, camera_rays, trace
from moegs_bench.data.synthetic.scenes import DEFAULT_SCENE, SCENES, TARGET, SceneSpec

#: bump when the output of a given set of parameters changes (the cache key also hashes the code)
CODE_VERSION = "1"
ARC_DEG = 120.0
RADIUS = 4.6
ELEVATION = 1.1  # height of the train cameras above the target
FOV_X_DEG = 60.0
SUPERSAMPLE = 2  # 2 x 2 samples per pixel (box filter): anti-aliased ground truth
BACKGROUND = (0.0, 0.0, 0.0)  # never seen: every ray hits the room
NUM_POINTS = 3000
BACKGROUND_POINT_SHARE = 0.25  # the room's share of the initial points (sparser than the objects)
POINT_NOISE = 0.01  # std of the jitter of the initial points (world units)
#: the defaults of :func:`generate` (and of the cache key)
DEFAULTS = {"frames": 30, "width": 96, "height": 72, "seed": 0, "train_cameras": 12}

__all__ = [
    "DEFAULT_SCENE", "SCENES", "cameras", "contact_sheet", "ensure", "generate", "render_frames", "sample_points",
]  # fmt: skip


def _spec(scene: str) -> SceneSpec:
    if scene not in SCENES:
        raise InputError(f"synthetic scene {scene!r} is unknown; expected one of {', '.join(SCENES)}")
    return SCENES[scene]


def _check(frames: int, width: int, height: int, train_cameras: int, seed: int) -> None:
    for name, value, low in (("frames", frames, 2), ("width", width, 8), ("height", height, 8),
                             ("train_cameras", train_cameras, 2), ("seed", seed, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"synthetic {name}: expected an int >= {low}, got {value!r}")


def cameras(train_cameras: int = 12, width: int = 96, height: int = 72) -> tuple[list[Camera], Camera]:
    """The rig: train cameras (ids 1..n) on the arc, and the test camera (id 0) inside it."""
    train = Camera.orbit(
        train_cameras, radius=RADIUS, width=width, height=height, target=TARGET, height_offset=ELEVATION,
        fov_x_deg=FOV_X_DEG, arc_deg=ARC_DEG, start_deg=-ARC_DEG / 2,
    )  # fmt: skip
    train = [replace(c, camera_id=i + 1) for i, c in enumerate(train)]
    tx, ty, tz = TARGET
    # inside the arc: at its middle, 8% nearer, a little lower and shifted sideways by 0.15
    r = 0.92 * RADIUS
    eye = (tx + 0.15, ty - 0.85 * ELEVATION, tz - r)
    test = Camera.look_at(eye, TARGET, fov_x_deg=FOV_X_DEG, width=width, height=height, camera_id=0)
    return train, test


def render_frames(
    scene: str, cams: Sequence[Camera], frames: int, *, seed: int = 0, frame_ids: Sequence[int] | None = None,
    ss: int = SUPERSAMPLE,
) -> list[Views]:  # fmt: skip
    """Render ``cams`` at the frames ``frame_ids`` (default all) of a ``frames``-long sequence."""
    spec = _spec(scene)
    ids = range(frames) if frame_ids is None else frame_ids
    rig = Rig(cams, ss)
    base = rig.base(spec.at(0.0, seed))  # the static surfaces, traced once
    return [rig.render(spec.at(normalised_time(i, frames), seed), base) for i in ids]


#: The motion regimes of the suite, in the order of the region masks' labels (``regions.json``).
REGIMES: tuple[str, ...] = ("static", "rigid", "oscillating", "appearance", "topology")
GLOW = 0.05  # flame emission above which a sub-sample shows the flame


def region_labels(views: Views, spec: SceneSpec) -> Tensor:
    """``[C, H, W]`` uint8: each pixel's motion regime (an index into :data:`REGIMES`): the regime
    whose surfaces cover most of its sub-samples (:attr:`SceneSpec.regions`), or that of the
    flames where a flame glows in at least half of them; 255 where no listed surface is seen."""
    c, h, w = views.rgb.shape[:3]
    ss = views.ss
    cover = torch.zeros(c, len(REGIMES), h, w)
    flames = None
    for r, regime in enumerate(REGIMES):
        for name in spec.regions.get(regime, ()):
            if name.startswith("flame:"):
                flames = r  # (every flame of the suite is in one regime: the glow does not name them)
            else:
                cover[:, r] += views.coverage(name)
    labels = cover.argmax(1)
    labels[cover.sum(1) == 0] = UNLABELLED
    if flames is not None:
        glow = (views.glow > GLOW).float().reshape(c, h, ss, w, ss).mean((2, 4))
        labels[glow >= 0.5] = flames
    return labels.to(torch.uint8)


def sample_points(scene: str, cams: Sequence[Camera], *, seed: int = 0, n: int = NUM_POINTS) -> PointCloud:
    """A sparse point cloud like a COLMAP result: surface points seen by the cameras at t = 0,
    coloured as observed, jittered; the room (background) gets a smaller share."""
    spec = _spec(scene)
    s3d = spec.at(0.0, seed)
    g = torch.Generator().manual_seed(10_007 + seed)
    o_list, d_list = [], []
    per_cam = 4 * n // len(cams) + 1
    for cam in cams:
        o, d = camera_rays(cam, 4)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        pick = torch.randint(0, o.shape[0], (per_cam,), generator=g)
        o_list.append(o[pick])
        d_list.append(d[pick])
    o, d = torch.cat(o_list), torch.cat(d_list)
    tr = trace(s3d, o, d)
    hit = torch.isfinite(tr.depth) & (tr.glow < 0.05)  # flames have no surface: COLMAP finds little there
    is_room = torch.tensor([isinstance(p, Room) for p in s3d.all_surfaces()])[tr.prim.clamp_min(0)]
    n_bg = int(round(n * BACKGROUND_POINT_SHARE))
    fg = torch.nonzero(hit & ~is_room)[:, 0]
    bg = torch.nonzero(hit & is_room)[:, 0]
    fg = fg[torch.randperm(fg.numel(), generator=g)[: n - n_bg]]
    bg = bg[torch.randperm(bg.numel(), generator=g)[: n - fg.numel()]]
    sel = torch.cat([fg, bg])
    xyz = o[sel] + tr.depth[sel, None] * d[sel]
    xyz = xyz + POINT_NOISE * torch.randn(xyz.shape, generator=g)
    rgb = (tr.rgb[sel] + 0.02 * torch.randn(xyz.shape, generator=g)).clamp(0.0, 1.0)
    return PointCloud(xyz, rgb, f"synthetic {scene}: surface samples at t=0 (seed {seed}), jittered")


def generate(
    out: Path, scene: str = DEFAULT_SCENE, *, frames: int = 30, width: int = 96, height: int = 72, seed: int = 0,
    train_cameras: int = 12,
) -> Path:  # fmt: skip
    """Render the synthetic scene ``scene`` and write it to ``out`` (a new or empty folder) in the
    Dynamic3DGaussians / Panoptic layout through :func:`moegs_bench.data.panoptic.write`
    (``train_meta.json``, ``test_meta.json``, ``ims/<camera id>/<frame>.png``, ``init_pt_cld.npz``,
    ``scene.json``) with the test views' regime masks (``regions.json``, ``regions/``:
    :func:`region_labels`), atomically. Deterministic for given arguments. Returns ``out``."""
    _spec(scene)
    _check(frames, width, height, train_cameras, seed)
    from moegs_bench.data import panoptic  # imported here: the writer lives with its loader

    train, test = cameras(train_cameras, width, height)
    rig = [test, *train]
    out_frames: list[Frame] = []
    images: list[np.ndarray] = []
    masks: dict[str, np.ndarray] = {}  # the test views' regime labels
    spec = _spec(scene)
    for i, views in enumerate(render_frames(scene, rig, frames, seed=seed)):
        t = normalised_time(i, frames)
        masks[f"cam{test.camera_id:02d}/{i:06d}"] = region_labels(views, spec)[0].numpy()
        pix = image_to_uint8(views.rgb)
        for cam, img in zip(rig, pix):
            cid = cam.camera_id
            out_frames.append(Frame(replace(cam, time=t), i, f"cam{cid:02d}/{i:06d}"))
            images.append(img)
    points = sample_points(scene, train, seed=seed)
    panoptic.write(
        Path(out), out_frames, images, test_camera_ids={test.camera_id}, points=points, ext=".png", name=scene,
        background=BACKGROUND,
    )  # fmt: skip
    write_regions(Path(out), REGIMES, masks)
    return Path(out)


def _code_digest() -> str:
    h = hashlib.sha256(CODE_VERSION.encode())
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(scene: str, **kw) -> str:
    """``<scene>-<hash>`` of the parameters (defaults filled in) and of this package's code."""
    params = {"scene": scene, **DEFAULTS}
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise InputError(f"synthetic suite: unknown parameter(s) {', '.join(sorted(unknown))}")
    params.update(kw)
    digest = hashlib.sha256((json.dumps(params, sort_keys=True) + _code_digest()).encode()).hexdigest()
    return f"{scene}-{digest[:12]}"


def ensure(scene: str, cache_dir: Path, **kw) -> Path:
    """The folder of the synthetic scene in ``cache_dir``, generated only if absent.

    The scene is written under a private temporary name and renamed into place, so concurrent
    callers never see a partial folder; when two race, the first rename wins and the other's copy
    (identical: generation is deterministic) is discarded.
    """
    _spec(scene)
    final = Path(cache_dir) / cache_key(scene, **kw)  # rejects unknown parameters
    args = {**DEFAULTS, **kw}
    _check(args["frames"], args["width"], args["height"], args["train_cameras"], args["seed"])
    cache_dir = final.parent
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(cache_dir, final.name)
    tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate(tmp, scene, **kw)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


#: A temporary scene folder untouched this long was left by a killed process (generating a scene
#: of the suite takes seconds).
STALE_SECONDS = 3600.0


def _remove_stale(cache_dir: Path, name: str) -> None:
    """Remove the temporary folders of ``name`` that killed processes left in ``cache_dir``."""
    now = time.time()
    for tmp in cache_dir.glob(f".{name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            continue


def contact_sheet(
    out_png: Path, scenes: Sequence[str] | None = None, frames: int = 30, *, columns: int = 7, width: int = 96,
    height: int = 72, seed: int = 0, scale: int = 2,
) -> Path:  # fmt: skip
    """A PNG grid: one row per scene, ``columns`` evenly spaced frames of the test camera,
    upscaled ``scale`` times, with labels. Returns ``out_png``."""
    from PIL import Image, ImageDraw

    names = list(scenes) if scenes is not None else list(SCENES)
    _, test = cameras(12, width, height)
    ids = [round(k * (frames - 1) / max(columns - 1, 1)) for k in range(columns)]
    label_w, label_h, pad = 70, 14, 2
    w, h = width * scale, height * scale
    sheet = Image.new("RGB", (label_w + columns * (w + pad), label_h + len(names) * (h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, i in enumerate(ids):
        draw.text((label_w + c * (w + pad) + 4, 1), f"frame {i} (t={i / frames:.2f})", fill=(0, 0, 0))
    for r, name in enumerate(names):
        y = label_h + r * (h + pad)
        draw.text((4, y + h // 2 - 5), name, fill=(0, 0, 0))
        for c, views in enumerate(render_frames(name, [test], frames, seed=seed, frame_ids=ids)):
            img = Image.fromarray(image_to_uint8(views.rgb[0])).resize((w, h), Image.NEAREST)
            sheet.paste(img, (label_w + c * (w + pad), y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
