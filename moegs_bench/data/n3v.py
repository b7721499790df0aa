"""Neural 3D Video (N3V, the DyNeRF dataset; Li et al., CVPR 2022).

Layout of a scene folder (e.g. ``cook_spinach/``)::

    poses_bounds.npy     LLFF array [n_cams, 17]: per camera a 3x5 matrix flattened row-major
                         (columns: rotation 3, camera centre 1, (h, w, focal) 1), then near, far
    cam00.mp4 cam01.mp4  one video per camera; the i-th row of poses_bounds.npy belongs to the
    ...                  i-th video in the order of the camera number (as upstream readers sort)
    sparse/0/points3D.*  optional COLMAP points (see :data:`POINT_FILES`)

Conventions, as verified against the upstream readers:

- LLFF's 3x3 block is a camera-to-world rotation whose columns are the camera axes
  (down, right, back) (LLFF ``load_llff.py`` turns them into (right, up, back) with
  ``[c1, -c0, c2]``; 4DGaussians ``scene/neural_3D_dataset_NDC.py`` does the same and then
  ``R = -R; R[:, 0] = -R[:, 0]``, i.e. (right, down, forward) = ``[c1, c0, -c2]``, the OpenCV
  camera-to-world rotation, with ``T = -c . R`` its world-to-camera translation). We do exactly
  that: OpenCV c2w = ``[c1, c0, -c2 | centre]`` and ``viewmat`` is its inverse.
- ``focal`` is in pixels at the (h, w) of the hwf column (2028 x 2704 for N3V). When the videos
  have another resolution, fx and fy are scaled by the width and height ratios (noted in
  ``meta``); the principal point is the image centre (w/2, h/2), as in LLFF.
- Protocol (README, "Datasets"; DyNeRF's held-out camera, Li et al., CVPR 2022): test camera
  cam00, the others train; 300 frames (videos longer than 300 frames, e.g. flame_salmon_1 with
  1200, default to their first 300; ``frame_range`` selects any ``[start, end)`` within the
  video); half resolution (``default_downscale = 2``, 1352 x 1014). Time of the i-th selected
  frame of n is i / n (as 4DGaussians' ``idx / 300``).
- Frames are ordered camera-major and keyed ``camNN/FFFFFF`` (camera number, video frame index).

Videos are checked when loading with one ``ffmpeg -c copy`` pass each (no decoding: it reads the
frame count, size and frame rate, and fails on a truncated or corrupt container); pixels are
decoded lazily by :class:`VideoFrameReader`, which decodes a camera's selected frames in one
sequential pass and keeps them (one camera at a time, within a memory budget) so that reading a
camera's frames in order decodes its video once. A video that decodes fewer frames than its
container promises raises a :class:`DatasetError` when read.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.data.files import (
    list_folder, optional_file, present, read_problem, require_file, require_folder,
)
from moegs_bench.data.scene import DatasetError, Frame, PointCloud, SceneData, normalised_time, select_frames

FORMAT = "n3v"
POSES_FILE = "poses_bounds.npy"
TEST_CAMERA = 0  # cam00
PROTOCOL_FRAMES = 300
DEFAULT_DOWNSCALE = 2
#: Point files looked for, in this order (COLMAP sparse model, COLMAP ``model_converter`` PLY,
#: and 4DGaussians' N3V preprocessing output ``points3D_downsample2.ply``).
POINT_FILES = (
    "sparse/0/points3D.bin",
    "sparse/0/points3D.txt",
    "sparse/0/points3D.ply",
    "points3D.ply",
    "points3D_downsample2.ply",
)
#: Decoded frames kept in memory by :class:`VideoFrameReader` (override with the environment
#: variable ``MOEGS_VIDEO_CACHE_MB``). A full N3V video (300 frames of 2704 x 2028) is 4.9 GB, so
#: by default it is decoded in windows of about 130 frames.
DEFAULT_CACHE_BYTES = 2 << 30

_VIDEO_RE = re.compile(r"^cam(\d+)\.mp4$")
_ORTHO_TOL = 1e-4


# ------------------------------------------------------------------------------- detect / load
def detect(root: Path) -> bool:
    root = Path(root)
    return present(root / POSES_FILE) and bool(_videos(root, strict=False))


def load(root: Path, *, frame_range=None, frame_stride: int = 1) -> SceneData:
    root = Path(root)
    require_folder(root, "an N3V scene folder (poses_bounds.npy + cam00.mp4 ...)")
    poses_path = root / POSES_FILE
    arr = _read_poses_bounds(poses_path)
    videos = _videos(root, strict=True)
    if not videos:
        raise DatasetError(f"{root}: no camNN.mp4 videos (N3V needs one video per row of {POSES_FILE})")
    if len(videos) != arr.shape[0]:
        names = ", ".join(p.name for _, p in videos)
        raise DatasetError(
            f"{poses_path}: {arr.shape[0]} camera rows but {len(videos)} videos in {root} ({names}); "
            "the i-th row belongs to the i-th video, so the counts must match"
        )
    numbers = [n for n, _ in videos]
    if TEST_CAMERA not in numbers:
        raise DatasetError(f"{root}: no cam{TEST_CAMERA:02d}.mp4 (the N3V protocol's test camera)")

    probes = {n: probe_video(p) for n, p in videos}
    counts = {n: pr.frames for n, pr in probes.items()}
    if len(set(counts.values())) != 1:
        listing = ", ".join(f"cam{n:02d}: {c}" for n, c in counts.items())
        raise DatasetError(f"{root}: the videos have different frame counts ({listing}); expected equal counts")
    n_total = next(iter(counts.values()))
    if n_total < 1:
        raise DatasetError(f"{videos[0][1]}: the video has no frames")

    meta: dict = {}
    if frame_range is None:
        sel = select_frames(min(n_total, PROTOCOL_FRAMES), None, root, frame_stride)
        if n_total > PROTOCOL_FRAMES:
            meta["frame_selection"] = (
                f"first {PROTOCOL_FRAMES} of {n_total} frames (N3V protocol); pass frame_range for others"
            )
    else:
        sel = select_frames(n_total, frame_range, root, frame_stride)
    n = len(sel)

    poses = arr[:, :15].reshape(-1, 3, 5)
    frames: list[Frame] = []
    sizes = {}
    notes = []
    for row, (number, path) in enumerate(videos):
        pr = probes[number]
        h_pb, w_pb, focal = (float(x) for x in poses[row, :, 4])
        if not (h_pb > 0 and w_pb > 0 and focal > 0):
            raise DatasetError(
                f"{poses_path}: row {row} (cam{number:02d}): hwf must be positive, got {h_pb, w_pb, focal}"
            )
        W, H = pr.width, pr.height
        sx, sy = W / w_pb, H / h_pb
        if abs(sx / sy - 1.0) > 1e-2:
            raise DatasetError(
                f"{path}: the video is {W}x{H} but {poses_path.name} row {row} says {w_pb:g}x{h_pb:g} "
                "(a different aspect ratio: the calibration does not fit this video)"
            )
        if abs(sx - 1.0) > 1e-9 or abs(sy - 1.0) > 1e-9:
            notes.append(f"cam{number:02d}")
        K = torch.tensor(
            [[focal * sx, 0.0, W / 2.0], [0.0, focal * sy, H / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64
        ).float()
        viewmat = torch.from_numpy(llff_to_viewmat(poses[row, :, :4], where=f"{poses_path}: row {row}")).float()
        sizes[f"cam{number:02d}"] = (W, H)
        for i, vidx in enumerate(sel):
            try:
                cam = Camera(K=K, viewmat=viewmat, width=W, height=H, time=normalised_time(i, n), camera_id=number)
            except InputError as exc:  # e.g. a focal beyond float32 (Inf once converted)
                raise DatasetError(f"{poses_path}: row {row} (cam{number:02d}): {exc}") from None
            frames.append(Frame(camera=cam, frame=i, key=f"cam{number:02d}/{vidx:06d}"))

    if notes:
        meta["focal_scaled"] = (
            f"{', '.join(notes)}: video size differs from the hwf of {POSES_FILE}; focal scaled by video/hwf size"
        )
    near, far = arr[:, 15], arr[:, 16]
    first = probes[numbers[0]]
    meta.update(
        {
            "poses": str(poses_path),
            "cameras": len(videos),
            "video_frames": n_total,
            "selected_frames": [sel.start, sel.stop],  # [start, end) video frame indices
            "video_resolution": f"{first.width}x{first.height}",
            "hwf_resolution": f"{poses[0, 1, 4]:g}x{poses[0, 0, 4]:g}",
            "near_far": [float(near.min()), float(far.max())],
        }
    )
    if sel.step > 1:
        meta["frame_stride"] = sel.step
    if len(set(sizes.values())) > 1:
        meta["video_resolutions"] = {k: f"{w}x{h}" for k, (w, h) in sizes.items()}
    if first.fps:
        meta["fps"] = first.fps

    points, point_note = find_points(root)
    if point_note:
        meta["points"] = point_note
    reader = VideoFrameReader({n_: p for n_, p in videos}, sel, counts)
    return SceneData(
        format=FORMAT,
        root=root,
        frames=frames,
        test_camera_ids={TEST_CAMERA},
        read_image=reader,
        sources=(poses_path, *(p for _, p in videos), *(root / name for name in POINT_FILES)),
        num_frames=n,
        points=points,
        depth_range=(float(near.min()), float(far.max())),
        default_downscale=DEFAULT_DOWNSCALE,
        name=root.name,
        meta=meta,
    )


# ------------------------------------------------------------------------------- poses
def _read_poses_bounds(path: Path) -> np.ndarray:
    require_file(path, f"{POSES_FILE}, the LLFF [n_cams, 17] poses and bounds (N3V needs it)")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a dataset error
        raise DatasetError(f"{path}: not a readable .npy array ({read_problem(exc, path)})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] < 1:
        shape = getattr(arr, "shape", None)
        raise DatasetError(f"{path}: expected an [N, 17] array (LLFF poses_bounds), got shape {shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{path}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path}: contains NaN or Inf")
    return arr


def llff_to_viewmat(pose: np.ndarray, *, where: str = "pose") -> np.ndarray:
    """LLFF camera-to-world ``[3, 4]`` (columns down, right, back, centre) -> OpenCV world-to-camera
    ``[4, 4]`` (float64)."""
    pose = np.asarray(pose, dtype=np.float64)
    R_llff, centre = pose[:, :3], pose[:, 3]
    err = np.abs(R_llff.T @ R_llff - np.eye(3)).max()
    det = np.linalg.det(R_llff)
    if err > _ORTHO_TOL or abs(det - 1.0) > _ORTHO_TOL:
        raise DatasetError(
            f"{where}: the 3x3 rotation is not orthonormal with det +1 (max |R^T R - I| = {err:.3g}, det = {det:.6g})"
        )
    u, _, vt = np.linalg.svd(R_llff)  # remove float noise
    R_llff = u @ vt
    c2w = np.stack([R_llff[:, 1], R_llff[:, 0], -R_llff[:, 2]], axis=1)  # (right, down, forward)
    viewmat = np.eye(4)
    viewmat[:3, :3] = c2w.T
    viewmat[:3, 3] = -c2w.T @ centre
    return viewmat


# ------------------------------------------------------------------------------- videos
def _videos(root: Path, *, strict: bool) -> list[tuple[int, Path]]:
    found: dict[int, Path] = {}
    if strict:
        entries = list_folder(root)
    else:
        try:
            entries = list(os.scandir(root))
        except OSError:
            return []
    for entry in entries:
        m = _VIDEO_RE.match(entry.name)
        if not m:
            continue
        number = int(m.group(1))
        if number in found and strict:
            raise DatasetError(f"{root}: {found[number].name} and {entry.name} name the same camera")
        found[number] = Path(entry.path)
    return sorted(found.items())


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float | None


_SIZE_RE = re.compile(r"[ ,](\d+)x(\d+)[ ,\[]")
_FPS_RE = re.compile(r"([\d.]+) fps")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")


def probe_video(path: Path) -> VideoInfo:
    """Frame count, size and frame rate of the first video stream, from one ``ffmpeg -c copy``
    pass (no decoding). Raises a DatasetError for a missing, truncated or corrupt file."""
    require_file(path, "a camNN.mp4 video")  # (ffmpeg would only say it cannot open it)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+info",
        "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-",
    ]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"{path}: could not run ffmpeg to read the video ({exc})") from None
    log = res.stderr.decode(errors="replace").replace("\r", "\n").replace(str(path), "<file>").splitlines()
    errors = [
        ln for ln in log
        if "[error]" in ln or "[fatal]" in ln or ("[warning]" in ln and "corrupt" in ln.lower())
    ]  # fmt: skip
    if res.returncode != 0 or errors:
        why = _ffmpeg_reason(errors or log)
        raise DatasetError(f"{path}: unreadable, truncated or corrupt mp4 ({why})")
    video = next((ln for ln in log if "Video:" in ln and "Stream #0" in ln), None)
    frames = [int(m.group(1)) for ln in log if (m := _FRAME_RE.search(ln))]
    size = _SIZE_RE.search(video.split("Video:", 1)[1]) if video else None
    if video is None or size is None or not frames:
        raise DatasetError(f"{path}: no readable video stream (ffmpeg: {_ffmpeg_reason(log)})")
    fps = _FPS_RE.search(video)
    return VideoInfo(frames=frames[-1], width=int(size.group(1)), height=int(size.group(2)),
                     fps=float(fps.group(1)) if fps else None)  # fmt: skip


def _ffmpeg_reason(lines: list[str]) -> str:
    text = [re.sub(r"^(\[[^\]]*\] )+", "", ln).strip() for ln in lines if ln.strip()]
    return "; ".join(text[-2:])[:300] or "no output"


class VideoFrameReader:
    """The ImageReader of an N3V scene: full-resolution ``[H, W, 3]`` uint8 frames.

    A request for frame ``f`` of a camera decodes that camera's video once, sequentially, and
    keeps the selected frames in memory (one camera at a time: a new camera evicts the old). If the
    selection does not fit in ``max_bytes``, a window of as many frames as fit, starting at ``f``,
    is kept instead. Thread-safe; picklable (the decoded frames are not pickled).
    """

    def __init__(self, videos: dict[int, Path], selection: range, counts: dict[int, int], max_bytes: int | None = None):
        self.videos = dict(videos)
        self.selection = selection
        self.counts = dict(counts)
        if max_bytes is None:
            env = os.environ.get("MOEGS_VIDEO_CACHE_MB", "").strip()
            try:
                max_bytes = int(float(env) * (1 << 20)) if env else DEFAULT_CACHE_BYTES
            except ValueError:
                raise InputError(f"MOEGS_VIDEO_CACHE_MB: expected a number of megabytes, got {env!r}") from None
        self.max_bytes = int(max_bytes)
        self.decodes = 0  # number of decoding passes so far (for tests and diagnostics)
        self._init_cache()

    def _init_cache(self) -> None:
        self._lock = threading.Lock()
        self._cam: int | None = None
        self._first = 0  # video frame index of self._frames[0]
        self._frames: np.ndarray | None = None  # [k, H, W, 3] uint8

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in ("_lock", "_cam", "_first", "_frames"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def __call__(self, frame: Frame) -> np.ndarray:
        number = frame.camera.camera_id
        if number not in self.videos or not 0 <= frame.frame < len(self.selection):
            raise DatasetError(f"frame {frame.key}: not a frame of this N3V scene")
        vidx = self.selection[frame.frame]
        with self._lock:
            if not self._holds(number, vidx):
                self._decode(number, vidx, frame.camera.width, frame.camera.height)
            assert self._frames is not None
            return self._frames[vidx - self._first].copy()

    def _holds(self, number: int, vidx: int) -> bool:
        return self._cam == number and self._frames is not None and 0 <= vidx - self._first < len(self._frames)

    def _decode(self, number: int, vidx: int, width: int, height: int) -> None:
        path = self.videos[number]
        sel = self.selection
        nbytes = width * height * 3
        cap = max(1, self.max_bytes // nbytes)
        if sel.stop - sel.start <= cap:  # (the frames between strided ones are decoded anyway)
            start, stop = sel.start, sel.stop
        else:
            stop = min(sel.stop, vidx + cap)
            start = max(sel.start, stop - cap)
        self._cam, self._frames = None, None  # drop the old camera before allocating
        out = np.empty((stop - start, height, width, 3), dtype=np.uint8)
        got = 0
        self.decodes += 1
        try:
            gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-frames:v", str(stop)])
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"{path}: cannot decode the video ({type(exc).__name__}: {exc})") from None
        try:
            meta = next(gen)
            size = tuple(meta.get("size", ()))
            if size != (width, height):
                raise DatasetError(f"{path}: decodes to {size[0]}x{size[1]} frames, expected {width}x{height}")
            for index, buf in enumerate(gen):
                if index >= stop:
                    break
                if len(buf) != nbytes:
                    raise DatasetError(
                        f"{path}: frame {index} has {len(buf)} bytes, expected {nbytes} ({width}x{height} RGB)"
                    )
                if index >= start:
                    out[index - start] = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
                    got += 1
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoder failures (RuntimeError, OSError, ...)
            why = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            raise DatasetError(f"{path}: video decoding failed ({why})") from None
        finally:
            gen.close()
        if got != stop - start:
            raise DatasetError(
                f"{path}: decoded {start + got} frames, expected at least {stop} "
                f"(the container says {self.counts.get(number, '?')}): truncated or corrupt video"
            )
        self._cam, self._first, self._frames = number, start, out


# ------------------------------------------------------------------------------- points
def find_points(root: Path, names: tuple[str, ...] = POINT_FILES) -> tuple[PointCloud | None, str]:
    """The first existing file of ``names`` under ``root`` read as a point cloud, and a note for
    ``meta`` (empty when none exists). An empty file gives ``None`` (Scene samples points along the training rays)."""
    for name in names:
        path = root / name
        if optional_file(path):
            pc = read_points(path)
            if pc is None:
                return None, f"{path} has no points; sampling along the training rays"
            return pc, f"{path} ({pc.xyz.shape[0]} points)"
    return None, ""


def read_points(path: Path) -> PointCloud | None:
    """COLMAP ``points3D.txt`` / ``points3D.bin`` or a PLY with x, y, z (and red, green, blue)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            xyz, rgb = _colmap_points_txt(path)
        elif suffix == ".bin":
            xyz, rgb = _colmap_points_bin(path)
        elif suffix == ".ply":
            xyz, rgb = _ply_points(path)
        else:
            raise DatasetError(f"{path}: unknown point file type (expected .txt, .bin or .ply)")
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{path}: unreadable point file ({read_problem(exc, path)})") from None
    if xyz.shape[0] == 0:
        return None
    if not (np.isfinite(xyz).all() and np.isfinite(rgb).all()):
        raise DatasetError(f"{path}: contains NaN or Inf coordinates or colours")
    kind = f"colmap {path.name}" if suffix in (".txt", ".bin") else f"ply {path.name}"
    return PointCloud(torch.from_numpy(xyz).float(), torch.from_numpy(rgb).float().clamp(0, 1), f"{kind} ({path})")


def _colmap_points_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            tok = s.split()
            try:
                if len(tok) < 8:
                    raise ValueError
                xyz.append([float(t) for t in tok[1:4]])
                rgb.append([int(t) for t in tok[4:7]])
            except ValueError:
                raise DatasetError(
                    f"{path}:{lineno}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]' (COLMAP points3D.txt)"
                ) from None
    return np.asarray(xyz, dtype=np.float64).reshape(-1, 3), np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0


# id uint64, x y z float64, r g b uint8, error float64, track length uint64 (51 bytes)
_POINT_BIN = struct.Struct("<QdddBBBdQ")


def _colmap_points_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    if len(data) < 8:
        raise DatasetError(f"{path}: truncated COLMAP points3D.bin")
    (n,) = struct.unpack_from("<Q", data, 0)
    off = 8
    xyz = np.empty((n, 3))
    rgb = np.empty((n, 3))
    for i in range(n):
        if off + _POINT_BIN.size > len(data):
            raise DatasetError(f"{path}: truncated COLMAP points3D.bin (point {i} of {n})")
        _, x, y, z, r, g, b, _, track = _POINT_BIN.unpack_from(data, off)
        off += _POINT_BIN.size + 8 * track  # track: (image_id int32, point2D_idx int32) pairs
        xyz[i] = (x, y, z)
        rgb[i] = (r, g, b)
    if off != len(data):
        raise DatasetError(f"{path}: {len(data) - off} unexpected bytes after {n} points (not a COLMAP points3D.bin?)")
    return xyz, rgb / 255.0


def _ply_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    if "vertex" not in ply:
        raise DatasetError(f"{path}: PLY without a 'vertex' element")
    v = ply["vertex"].data
    names = v.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise DatasetError(f"{path}: PLY vertices lack x, y, z")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    if {"red", "green", "blue"} <= set(names):
        rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.float64)
        if np.issubdtype(v["red"].dtype, np.integer):
            rgb /= 255.0
    else:
        rgb = np.full_like(xyz, 0.5)
    return xyz, rgb
