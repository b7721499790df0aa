"""Technicolor light-field video (Sabater et al., "Dataset and Pipeline for Multi-View Light-Field
Video", CVPR workshops 2017): a 4x4 rig of 16 cameras, 2048 x 1088 pixels.

Layout read here: the *undistorted* release as SpacetimeGaussians (oppo-us-research/
SpacetimeGaussians, ``script/pre_technicolor.py``) and 4DGaussians-style code consume it::

    <Scene>/<Scene>_undist_<frame:05d>_<cam:02d>.png   e.g. Birthday_undist_00151_10.png
    <Scene>/cameras_parameters.txt                     one header line, then one row per camera
    <Scene>/sparse/0/points3D.txt (or .bin, .ply)      optional COLMAP points

``cameras_parameters.txt``: after a header line, one row of 12 space-separated numbers per camera,
row i (0-based) for camera ``i`` of the file names::

    f  cu  cv  ar  sk  qw  qx  qy  qz  tx  ty  tz

(column names from the comments of a SpacetimeGaussians-derived ``pre_technicolor.py`` and from
``extract_technicolor`` scripts that name them ``['f', 'cu', 'cv', 'ar', 'sk', 'qw', 'qx', 'qy',
'qz', 'tx', 'ty', 'tz']``; the distorted "original" release adds ``d1 d2`` after ``sk``, 14
columns). Meaning, as the upstream readers use it:

- intrinsics in pixels: ``fx = f``, ``fy = ar * f`` (HyperReel ``datasets/technicolor.py``:
  ``K[1, 1] = row[3] * row[0]``), principal point ``(cu, cv)``, skew ``sk`` (0 in the undistorted
  release; kept in ``K[0, 1]``);
- ``(qw, qx, qy, qz)`` and ``(tx, ty, tz)`` are the *world-to-camera* rotation (Hamilton
  quaternion, w first) and translation in the OpenCV/COLMAP camera convention (x right, y down,
  z forward): SpacetimeGaussians writes them unchanged into COLMAP ``images.txt`` as
  ``QW QX QY QZ TX TY TZ`` (COLMAP's world-to-camera pose), and HyperReel builds the
  camera-to-world matrix as ``[R^T | -R^T t]`` before flipping to OpenGL axes. Hence
  ``viewmat = [R(q) | t]`` with no axis change. The principal point is used as given (COLMAP and
  this project both put pixel centres at +0.5).

Protocol (README, "Datasets"; frame ranges as in SpacetimeGaussians' ``pre_technicolor.py``):
test camera 10, the other 15 train; full resolution (``default_downscale = 1``); 50 frames per
scene, by the frame numbers of the file names, inclusive: Birthday and Train 151..200, Fabien and
Theater 51..100 (these scenes number frames from 1), Painter 100..149 (numbered from 0). A folder
whose image prefix (or folder name) is one of these scenes loads those 50 frames by default; any
other folder loads all frames found. ``frame_range=(start, end)`` indexes the sorted frame numbers
found (0-based, end exclusive). The selected frame numbers must be consecutive (times are
i / n) and present for every camera. Frames are ordered camera-major and keyed
``camNN/FFFFFF`` (camera, frame number of the file name).

Known defect of the release: ``Birthday_undist_00173_09.png`` is truncated (inside the Birthday
protocol range); SpacetimeGaussians repairs it in place from frame 172 (``fixbroken``). Reading a
truncated PNG raises a :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from moegs_bench.cameras import Camera
from moegs_bench.data.files import (
    file_problem, list_folder, os_reason, present, read_problem, require_file, require_folder,
)
from moegs_bench.data.n3v import POINT_FILES, find_points
from moegs_bench.data.scene import DatasetError, Frame, SceneData, normalised_time, select_frames
from moegs_bench.errors import InputError

FORMAT = "technicolor"
CALIBRATION = "cameras_parameters.txt"
TEST_CAMERA = 10
DEFAULT_DOWNSCALE = 1
#: Protocol frames per scene: first and last frame number of the file names, inclusive.
SCENE_FRAMES: dict[str, tuple[int, int]] = {
    "birthday": (151, 200),
    "train": (151, 200),
    "fabien": (51, 100),
    "theater": (51, 100),
    "painter": (100, 149),
}
#: Depth bounds used by HyperReel (datasets/technicolor.py), recorded in ``meta`` for reference.
SCENE_NEAR_FAR: dict[str, tuple[float, float]] = {
    "birthday": (1.75, 10.0),
    "train": (0.65, 10.0),
    "fabien": (0.35, 2.0),
    "theater": (0.65, 10.0),
    "painter": (1.75, 10.0),
}
COLUMNS = ("f", "cu", "cv", "ar", "sk", "qw", "qx", "qy", "qz", "tx", "ty", "tz")
COLUMNS_DISTORTED = ("f", "cu", "cv", "ar", "sk", "d1", "d2", "qw", "qx", "qy", "qz", "tx", "ty", "tz")

_IMAGE_RE = re.compile(r"^(?P<prefix>.+?)_(?P<undist>undist_)?(?P<frame>\d{5})_(?P<cam>\d{2})\.png$")


# ------------------------------------------------------------------------------- detect / load
def detect(root: Path) -> bool:
    root = Path(root)
    if not present(root / CALIBRATION):
        return False
    try:
        return any(_IMAGE_RE.match(e.name) for e in os.scandir(root))
    except OSError:
        return False


def load(root: Path, *, frame_range=None, frame_stride: int = 1) -> SceneData:
    root = Path(root)
    require_folder(root, f"a Technicolor scene folder (PNG frames + {CALIBRATION})")
    calib_path = root / CALIBRATION
    require_file(calib_path, f"the rig calibration {CALIBRATION} (Technicolor needs it)")
    rows, distorted = read_calibration(calib_path)

    prefix, files = _scan_images(root)  # files[cam][frame_number] = path
    n_cams = len(rows)
    extra = sorted(set(files) - set(range(n_cams)))
    if extra:
        cam = extra[0]
        example = next(iter(files[cam].values())).name
        raise DatasetError(
            f"{calib_path}: lists {n_cams} cameras (00..{n_cams - 1:02d}) but {root} has images of camera "
            f"{cam:02d} (e.g. {example})"
        )
    missing = [c for c in range(n_cams) if c not in files]
    if missing:
        raise DatasetError(
            f"{root}: camera {missing[0]:02d} is listed in {CALIBRATION} but has no images "
            f"({prefix}_undist_NNNNN_{missing[0]:02d}.png)"
        )
    if TEST_CAMERA >= n_cams:
        raise DatasetError(
            f"{calib_path}: {n_cams} cameras, but the Technicolor protocol tests on camera {TEST_CAMERA:02d}"
        )

    scene_key = prefix.lower() if prefix.lower() in SCENE_FRAMES else root.name.lower()
    known = scene_key if scene_key in SCENE_FRAMES else None
    all_numbers = sorted(set().union(*(set(f) for f in files.values())))
    meta: dict = {}
    if frame_range is None and known is not None:
        first, last = SCENE_FRAMES[known]
        numbers = list(range(first, last + 1))
        meta["frame_selection"] = f"{known.capitalize()} protocol: frames {first}..{last} (inclusive)"
    elif frame_range is None:
        numbers = all_numbers
    else:
        sel = select_frames(len(all_numbers), frame_range, root)
        numbers = all_numbers[sel.start : sel.stop]
    if numbers[-1] - numbers[0] + 1 != len(numbers):
        gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        raise DatasetError(
            f"{root}: frames {_fmt_numbers(gaps)} are missing for every camera between {numbers[0]} and "
            f"{numbers[-1]}; expected consecutive frames"
        )
    numbers = [numbers[i] for i in select_frames(len(numbers), None, root, frame_stride)]
    for cam in range(n_cams):
        lacking = [n for n in numbers if n not in files[cam]]
        if lacking:
            name = f"{prefix}_undist_{lacking[0]:05d}_{cam:02d}.png"
            raise DatasetError(
                f"{root / name}: missing; camera {cam:02d} lacks frames {_fmt_numbers(lacking)} "
                f"of the selected {numbers[0]}..{numbers[-1]}"
            )

    n = len(numbers)
    frames: list[Frame] = []
    paths: dict[str, Path] = {}
    sizes = set()
    for cam, row in enumerate(rows):
        size = None
        for number in numbers:
            path = files[cam][number]
            s = _png_size(path)
            if size is None:
                size = s
            elif s != size:
                raise DatasetError(
                    f"{path}: {s[0]}x{s[1]} pixels, camera {cam:02d}'s other frames are {size[0]}x{size[1]}"
                )
        assert size is not None
        sizes.add(size)
        where = f"{calib_path}: camera {cam:02d}"
        K, viewmat = calibration_camera(row, where=where)
        for i, number in enumerate(numbers):
            key = f"cam{cam:02d}/{number:06d}"
            camera = _camera(where, K=K, viewmat=viewmat, width=size[0], height=size[1], time=normalised_time(i, n),
                             camera_id=cam)
            frames.append(Frame(camera=camera, frame=i, key=key))
            paths[key] = files[cam][number]

    meta.update(
        {
            "calibration": str(calib_path),
            "columns": " ".join(COLUMNS_DISTORTED if distorted else COLUMNS),
            "cameras": n_cams,
            "frame_numbers": [numbers[0], numbers[-1]],  # inclusive, as in the file names
            "frames_found": [all_numbers[0], all_numbers[-1]],
            "resolution": ", ".join(f"{w}x{h}" for w, h in sorted(sizes)),
        }
    )
    if any(abs(r[4]) > 0 for r in rows):
        meta["skew"] = "non-zero skew in the calibration (kept in K[0, 1]; rasterizers ignore it)"
    if known is not None:
        meta["near_far"] = list(SCENE_NEAR_FAR[known])  # HyperReel's bounds
    points, point_note = find_points(root)
    if point_note:
        meta["points"] = point_note
    return SceneData(
        format=FORMAT,
        root=root,
        frames=frames,
        test_camera_ids={TEST_CAMERA},
        read_image=PngReader(paths),
        sources=(calib_path, *paths.values(), *(root / name for name in POINT_FILES)),
        num_frames=n,
        points=points,
        default_downscale=DEFAULT_DOWNSCALE,
        name=prefix,
        meta=meta,
    )


# ------------------------------------------------------------------------------- calibration
def read_calibration(path: Path) -> tuple[list[list[float]], bool]:
    """Rows of ``cameras_parameters.txt`` as 12 numbers (``COLUMNS``), and whether the file had the
    14-column distorted layout (accepted only with zero distortion, then d1, d2 are dropped)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({os_reason(exc, path)})") from None
    rows: list[list[float]] = []
    distorted = False
    seen_first = False
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tokens = s.replace(",", " ").replace("\t", " ").split()
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            values = None
        first, seen_first = not seen_first, True
        if first and (values is None or len(values) not in (12, 14)):
            continue  # the header line
        if values is None or len(values) not in (12, 14):
            got = "non-numeric values" if values is None else f"{len(values)} numbers"
            raise DatasetError(f"{path}:{lineno}: expected 12 numbers ({' '.join(COLUMNS)}), got {got}")
        if not all(np.isfinite(values)):
            raise DatasetError(f"{path}:{lineno}: contains NaN or Inf")
        if len(values) == 14:
            if values[5] != 0 or values[6] != 0:
                raise DatasetError(
                    f"{path}:{lineno}: radial distortion d1={values[5]:g}, d2={values[6]:g} (the distorted "
                    "release); use the undistorted images (<scene>_undist_*.png) and their calibration"
                )
            distorted = True
            values = values[:5] + values[7:]
        rows.append(values)
    if not rows:
        raise DatasetError(f"{path}: no camera rows (expected a header line, then 12 numbers per camera)")
    return rows, distorted


def quat_to_rotmat(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    """Rotation matrix of a unit Hamilton quaternion (w, x, y, z), as COLMAP's ``qvec2rotmat``."""
    w, x, y, z = qw, qx, qy, qz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def calibration_camera(row: list[float], *, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``K [3, 3]`` and world-to-camera ``viewmat [4, 4]`` (float32) of one calibration row."""
    f, cu, cv, ar, sk, qw, qx, qy, qz, tx, ty, tz = row
    if not (f > 0 and ar > 0):
        raise DatasetError(f"{where}: focal f and aspect ar must be > 0, got f={f:g}, ar={ar:g}")
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > 1e-2:
        raise DatasetError(f"{where}: quaternion (qw, qx, qy, qz) has norm {norm:.6g}, expected 1")
    q /= norm
    viewmat = np.eye(4)
    viewmat[:3, :3] = quat_to_rotmat(*q)
    viewmat[:3, 3] = (tx, ty, tz)
    K = np.array([[f, sk, cu], [0.0, ar * f, cv], [0.0, 0.0, 1.0]])
    return torch.from_numpy(K).float(), torch.from_numpy(viewmat).float()


def _camera(where: str, **fields) -> Camera:
    """``Camera(**fields)``; a failed check (e.g. a value beyond float32, now Inf) names ``where``."""
    try:
        return Camera(**fields)
    except InputError as exc:
        raise DatasetError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------- images
def _scan_images(root: Path) -> tuple[str, dict[int, dict[int, Path]]]:
    files: dict[int, dict[int, Path]] = defaultdict(dict)
    prefixes: dict[tuple[str, bool], str] = {}
    for entry in list_folder(root):
        m = _IMAGE_RE.match(entry.name)
        if not m:
            continue
        kind = (m.group("prefix"), bool(m.group("undist")))
        prefixes.setdefault(kind, entry.name)
        files[int(m.group("cam"))][int(m.group("frame"))] = Path(entry.path)
    if not prefixes:
        raise DatasetError(f"{root}: no images named <scene>_undist_<frame:05d>_<cam:02d>.png")
    if len(prefixes) > 1:
        examples = ", ".join(sorted(prefixes.values())[:3])
        raise DatasetError(f"{root}: images of several sequences or releases ({examples}); expected one")
    (prefix, _undist), = prefixes
    return prefix, dict(files)


def _png_size(path: Path) -> tuple[int, int]:
    problem = file_problem(path)
    if problem is not None:
        raise DatasetError(f"{path}: {problem}; expected a PNG image")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DatasetError(f"{path}: expected a PNG image, got {im.format}")
            return im.size
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for unreadable files
        raise DatasetError(f"{path}: unreadable PNG ({read_problem(exc, path)})") from None


def read_png(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 (or float in [0, 1] for 16-bit PNGs); a DatasetError if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im, dtype=np.float64) / 65535.0
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(
            f"{path}: unreadable PNG ({read_problem(exc, path)}); truncated files of the release can be "
            "repaired from the neighbouring frame (SpacetimeGaussians script/pre_technicolor.py, fixbroken)"
        ) from None


class PngReader:
    """The ImageReader of a Technicolor scene: reads ``frame.key``'s PNG (picklable)."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = dict(paths)

    def __call__(self, frame: Frame) -> np.ndarray:
        path = self.paths.get(frame.key)
        if path is None:
            raise DatasetError(f"frame {frame.key}: not a frame of this Technicolor scene")
        return read_png(path)


def _fmt_numbers(numbers: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" (+{len(numbers) - limit} more)" if len(numbers) > limit else "")
