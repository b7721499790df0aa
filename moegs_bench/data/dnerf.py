"""D-NeRF (Pumarola et al., CVPR 2021): monocular synthetic dynamic scenes (README, "Datasets").

Layout (the public D-NeRF data, read the same way by 4DGaussians and nerfstudio)::

    transforms_train.json   {"camera_angle_x": float, "frames": [{"file_path": "./train/r_000",
    transforms_val.json        "time": float in [0, 1], "rotation": float,
    transforms_test.json       "transform_matrix": 4x4 camera-to-world}, ...]}
    train/r_000.png ...     RGBA, 800x800

Conventions:

- ``transform_matrix`` is camera-to-world in the OpenGL/Blender camera convention (x right, y up,
  z backwards). We flip the camera's y and z axes to get OpenCV (x right, y down, z forward) and
  invert it to get the world-to-camera ``viewmat``; the world frame is kept as it is.
- Intrinsics: ``fx = fy = 0.5 * W / tan(0.5 * camera_angle_x)``, principal point at the image
  centre ``(W / 2, H / 2)`` (pixel (u, v) has its centre at (u + 0.5, v + 0.5), as in nerfstudio and
  3DGS-based readers). ``W, H`` are read from each image's header.
- Images: ``file_path + ".png"`` (a ``file_path`` that already ends in .png/.jpg/.jpeg is used as
  it is). The reader composites RGBA over white, D-NeRF's protocol (``white_bkgd``), and the scene's
  background is white.
- Time: each frame's own ``time`` from the json (not ``i / n``), kept even when ``frame_range``
  selects part of the sequence. A frame's index is the rank of its time among the distinct times
  of the train and test files together; ``frame_range`` selects those ranks.
- Split: the split comes from the files, not from camera positions. The data is monocular, so every
  frame is its own camera: train frame ``j`` (position in ``transforms_train.json``) has camera id
  ``j``; test frame ``j`` has camera id ``TEST_ID_OFFSET + j`` (100000 + j), and
  ``test_camera_ids`` holds exactly those. Ids do not change with ``frame_range``.
- Val frames (``transforms_val.json``) are ignored; ``meta`` says how many there were.
- No point cloud ships with D-NeRF: ``points`` is None and :class:`Scene` samples points along
  the training rays (:mod:`moegs_bench.data.init_points`).
- ``default_downscale`` is 2: most papers (D-NeRF itself with ``half_res``, 4DGaussians,
  Deformable 3DGS) train and evaluate at 400x400.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.data.files import file_problem, is_file, present, read_problem, require_file
from moegs_bench.data.scene import DatasetError, Frame, SceneData, read_json, select_frames

#: Camera id of test frame ``j`` is ``TEST_ID_OFFSET + j`` (train frame ``j`` has id ``j``).
TEST_ID_OFFSET = 100_000

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# OpenGL/Blender camera axes (x right, y up, z back) -> OpenCV (x right, y down, z forward).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def detect(root: Path) -> bool:
    return present(Path(root) / "transforms_train.json")


def load(root: Path, *, frame_range: Sequence[int] | None = None, frame_stride: int = 1) -> SceneData:
    root = Path(root)
    train = _read_split(root, "train")
    test = _read_split(root, "test")
    if len(train) >= TEST_ID_OFFSET:
        raise DatasetError(
            f"{root / 'transforms_train.json'}: {len(train)} frames; at most {TEST_ID_OFFSET - 1} are "
            f"supported (test frames get camera ids from {TEST_ID_OFFSET})"
        )
    val_path = root / "transforms_val.json"
    n_val = _count_frames(val_path) if is_file(val_path) else 0

    # frame index = rank of the frame's time among the distinct times of train and test
    distinct = sorted({entry["time"] for entry in train + test})
    rank = {t: i for i, t in enumerate(distinct)}
    selected = select_frames(len(distinct), frame_range, root, frame_stride)

    frames: list[Frame] = []
    paths: dict[str, Path] = {}
    for split, entries, offset in (("train", train, 0), ("test", test, TEST_ID_OFFSET)):
        for j, entry in enumerate(entries):
            r = rank[entry["time"]]
            if r not in selected:
                continue
            key, image_path = entry["key"], entry["image"]
            if key in paths:
                raise DatasetError(
                    f"{entry['json']}: frame {j} uses image {image_path}, which another frame uses too"
                )
            width, height = _image_size(image_path)
            camera = _camera(entry, width, height, camera_id=offset + j)
            frames.append(Frame(camera=camera, frame=r - selected.start, key=key))
            paths[key] = image_path
    frames.sort(key=lambda f: (f.frame, f.camera.camera_id))

    def read_image(frame: Frame) -> np.ndarray:
        path = paths.get(frame.key)
        if path is None:
            raise DatasetError(f"{root}: no image for frame {frame.key!r}")
        return _read_rgba_over_white(path)

    return SceneData(
        format="dnerf",
        root=root,
        frames=frames,
        test_camera_ids={TEST_ID_OFFSET + j for j in range(len(test))},
        read_image=read_image,
        sources=(*(root / f"transforms_{s}.json" for s in ("train", "val", "test")), *paths.values()),
        num_frames=len(selected),
        points=None,
        background=(1.0, 1.0, 1.0),
        composited=True,
        default_downscale=2,
        name=root.name,
        meta={
            "train_frames": len(train),
            "test_frames": len(test),
            "val_frames_ignored": n_val,
            "distinct_times": len(distinct),
            "camera_ids": f"train frame j -> j, test frame j -> {TEST_ID_OFFSET} + j (monocular: one camera per frame)",
            "time": "the json's own time per frame",
            "background": "RGBA composited over white (D-NeRF protocol)",
            "default_downscale": "2 (400x400 from 800x800, as most papers use)",
            "points": "none in the dataset (sampled along the training rays)",
        },
    )


# ------------------------------------------------------------------------------ json parsing
def _load_json(path: Path) -> object:
    expected = "a D-NeRF transforms file (camera_angle_x, frames)"
    require_file(path, expected)  # a loop or a folder without permission, named as such
    return read_json(path, expected)


def _count_frames(path: Path) -> int:
    """Frames in the (ignored) val file, 0 when it is unreadable: it is never used."""
    try:
        with open(path, encoding="utf-8") as f:
            frames = json.load(f).get("frames", [])
        return len(frames) if isinstance(frames, list) else 0
    except (OSError, ValueError, AttributeError):
        return 0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read_split(root: Path, split: str) -> list[dict]:
    path = root / f"transforms_{split}.json"
    meta = _load_json(path)
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object with camera_angle_x and frames, got {type(meta).__name__}")
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise DatasetError(f"{path}: missing key {key!r}; expected camera_angle_x and frames")
    angle = _number(meta["camera_angle_x"])
    if angle is None or not 0.0 < angle < math.pi:
        raise DatasetError(f"{path}: camera_angle_x must be a number in (0, pi) radians, got {meta['camera_angle_x']!r}")
    frames = meta["frames"]
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{path}: frames must be a non-empty list, got {frames!r:.80}")

    entries = []
    for j, frame in enumerate(frames):
        where = f"{path}: frames[{j}]"
        if not isinstance(frame, dict):
            raise DatasetError(f"{where}: expected an object with file_path, time and transform_matrix")
        for key in ("file_path", "time", "transform_matrix"):
            if key not in frame:
                raise DatasetError(f"{where}: missing key {key!r}; expected file_path, time and transform_matrix")
        file_path = frame["file_path"]
        if not isinstance(file_path, str) or not file_path.strip() or Path(file_path).is_absolute():
            raise DatasetError(f"{where}: file_path must be a relative path, got {file_path!r}")
        time = _number(frame["time"])
        if time is None or not 0.0 <= time <= 1.0:
            raise DatasetError(f"{where}: time must be a number in [0, 1], got {frame['time']!r}")
        try:
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            c2w = None
        if c2w is None or c2w.shape != (4, 4):
            shape = "not a matrix of numbers" if c2w is None else f"shape {c2w.shape}"
            raise DatasetError(f"{where}: transform_matrix must be a finite 4x4 camera-to-world matrix, got {shape}")
        if not np.isfinite(c2w).all():
            raise DatasetError(f"{where}: transform_matrix contains NaN or Inf; expected a finite 4x4 camera-to-world "
                               "matrix")
        rel = file_path[2:] if file_path.startswith("./") else file_path
        image = root / (rel if rel.lower().endswith(_IMAGE_SUFFIXES) else rel + ".png")
        key = Path(rel).with_suffix("").as_posix() if rel.lower().endswith(_IMAGE_SUFFIXES) else Path(rel).as_posix()
        entries.append({"json": path, "index": j, "angle": angle, "time": time, "c2w": c2w, "image": image, "key": key})
    return entries


# ------------------------------------------------------------------------------ cameras, images
def _camera(entry: dict, width: int, height: int, camera_id: int) -> Camera:
    c2w_cv = entry["c2w"] @ _GL_TO_CV  # flip the camera's y and z axes (columns of c2w)
    R, c = c2w_cv[:3, :3], c2w_cv[:3, 3]
    viewmat = np.eye(4)
    viewmat[:3, :3] = R.T  # rigid inverse (the rotation is checked orthonormal by Camera)
    viewmat[:3, 3] = -R.T @ c
    f = 0.5 * width / math.tan(0.5 * entry["angle"])
    K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    try:
        return Camera(
            K=torch.from_numpy(K).float(), viewmat=torch.from_numpy(viewmat).float(),
            width=width, height=height, time=entry["time"], camera_id=camera_id,
        )  # fmt: skip
    except InputError as e:
        raise DatasetError(f"{entry['json']}: frames[{entry['index']}]: {e}") from None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, with a clear error for missing or unreadable files."""
    from PIL import Image, UnidentifiedImageError

    problem = file_problem(path)
    if problem is not None:
        what = "image missing" if problem == "missing" else problem
        raise DatasetError(f"{path}: {what} (named by its transforms file)")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable image ({read_problem(e, path)})") from None


def _read_rgba_over_white(path: Path) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 1]: RGB composited over white by the alpha channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DatasetError(f"{path}: image missing") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable image ({read_problem(e, path)})") from None
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + (1.0 - alpha)
