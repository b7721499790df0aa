"""One scene abstraction for every dataset format (README, "Datasets").

A loader turns a folder into a :class:`SceneData` (cameras, how to read each image, points,
bounds, background); :class:`Scene` adds what every format shares: the train/test split, frame
selection, downscaling and an on-disk cache of decoded images written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from moegs_bench.cameras import Camera, downscale_problem
from moegs_bench.data.init_points import ray_points
from moegs_bench.data.regions import RegionMasks, RegionsError
from moegs_bench.data.state import DatasetState, dataset_state
from moegs_bench.errors import InputError, UserInputError
from moegs_bench.io import atomic_write, remove_stale_temps

#: A temporary file in the image cache untouched this long was left by a killed process.
STALE_TEMP_SECONDS = 3600.0
#: initial points of a scene without a point cloud
FALLBACK_POINTS = 10_000


class DatasetError(UserInputError):
    """A dataset on disk is missing, malformed or inconsistent; the message names the path."""


@dataclass(frozen=True)
class Frame:
    """One image of the sequence: a camera (full-resolution intrinsics) at a time."""

    camera: Camera  # time normalised to [0, 1] over the selected frames, camera_id set
    frame: int  # frame index within the selected range (0-based)
    key: str  # the loader's name for the image, also its cache file name (no '/' at the start)


@dataclass
class PointCloud:
    xyz: Tensor  # [P, 3] world
    rgb: Tensor  # [P, 3] in [0, 1]
    source: str  # where it comes from, e.g. "colmap points3D.txt" or "... along the training rays ..."


#: Reads one full-resolution image of a frame: ``[H, W, 3]`` uint8 (or float in [0, 1]).
ImageReader = Callable[[Frame], np.ndarray]


@dataclass
class SceneData:
    """What a loader returns. ``frames`` hold every camera at every selected time."""

    format: str
    root: Path
    frames: list[Frame]
    test_camera_ids: set[int]  # the dataset's own protocol: these cameras form the test split
    read_image: ImageReader
    num_frames: int
    points: PointCloud | None = None  # None: Scene samples points along the training rays
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    default_downscale: int = 1
    name: str = ""
    meta: dict = field(default_factory=dict)  # format-specific facts for `data info`
    #: the files the scene is read from (metadata, images or videos, optional files whether present
    #: or not); their sizes and times are the dataset's state (:mod:`moegs_bench.data.state`).
    #: Empty: every file under ``root``.
    sources: Sequence[Path] = ()
    #: per-pixel region masks of (some) views (:mod:`moegs_bench.data.regions`); None: none
    regions: RegionMasks | None = None
    #: the scene's depth bounds ``(near, far)`` when the dataset knows them (LLFF poses_bounds);
    #: they place the initial points of a scene without a point cloud
    depth_range: tuple[float, float] | None = None
    #: the images are renders composited over ``background`` (D-NeRF): a pixel of that colour shows
    #: no surface (no initial point is put on its ray)
    composited: bool = False


@dataclass
class Scene:
    """A loaded scene: split, downscaled cameras and lazily decoded, cached images."""

    data: SceneData
    downscale: int = 1
    cache_dir: Path | None = None
    #: the cameras held out for testing; None: the dataset's own split (``data.test_camera_ids``)
    test_cameras: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.downscale, bool) or not isinstance(self.downscale, int) or self.downscale < 1:
            raise InputError(f"downscale: expected an int >= 1, got {self.downscale!r}")
        if not self.data.frames:
            raise DatasetError(f"{self.data.root}: the dataset has no frames")
        problem = downscale_problem((f.camera for f in self.data.frames), self.downscale)
        if problem is not None:
            raise InputError(f"downscale: {problem}")
        self._full = {f.key: f for f in self.data.frames}
        if len(self._full) != len(self.data.frames):
            raise DatasetError(f"{self.data.root}: two frames share an image key")
        scaled = [self._scaled(f) for f in self.data.frames]
        test_ids = self.data.test_camera_ids
        if self.test_cameras is not None:
            problem = test_cameras_problem(self.data, self.test_cameras)
            if problem is not None:
                raise InputError(f"test_cameras: {problem}")
            test_ids = set(self.test_cameras)
        self.train: list[Frame] = [f for f in scaled if f.camera.camera_id not in test_ids]
        self.test: list[Frame] = [f for f in scaled if f.camera.camera_id in test_ids]
        self._state: DatasetState | None = None
        self._cache_checked = False

    # ---------------------------------------------------------------- description
    @functools.cached_property
    def points(self) -> PointCloud:
        """The dataset's point cloud, or (none shipped) points along the training rays
        (:mod:`moegs_bench.data.init_points`; the first training image of each camera is decoded)."""
        if self.data.points is not None:
            return self.data.points
        first: dict[int, Frame] = {}
        for f in sorted(self.train or self.test, key=lambda f: f.frame):
            first.setdefault(f.camera.camera_id, f)
        frames = [first[k] for k in sorted(first)]
        xyz, rgb, how = ray_points([f.camera for f in frames], [self.image(f) for f in frames], FALLBACK_POINTS,
                                   depth_range=self.data.depth_range,
                                   background=self.data.background if self.data.composited else None)
        return PointCloud(xyz, rgb, f"{len(xyz)} along the training rays, {how} (the dataset has no points)")

    @functools.cached_property
    def bounds(self) -> tuple[Tensor, Tensor]:  # ([3], [3]) robust box of the points
        return _bounds(self.points.xyz)

    @property
    def name(self) -> str:
        return self.data.name or self.data.root.name

    @property
    def format(self) -> str:
        return self.data.format

    @property
    def num_frames(self) -> int:
        return self.data.num_frames

    @property
    def background(self) -> Tensor:  # [3]
        return torch.tensor(self.data.background, dtype=torch.float32)

    @property
    def camera_ids(self) -> list[int]:
        return sorted({f.camera.camera_id for f in self.data.frames})

    @property
    def frame_times(self) -> list[float]:
        """The normalised time of every frame of the sequence, ``i / num_frames``."""
        return [normalised_time(i, self.num_frames) for i in range(self.num_frames)]

    @property
    def state(self) -> DatasetState:
        """The state of the source files (read once, when first asked: at load time for a CLI run)."""
        if self._state is None:
            self._state = dataset_state(self.data.root, self.data.sources)
        return self._state

    @property
    def resolution(self) -> tuple[int, int]:  # (width, height) after downscaling
        cam = (self.train or self.test)[0].camera
        return cam.width, cam.height

    # ---------------------------------------------------------------- images
    @property
    def region_labels(self) -> tuple[str, ...]:
        """The names of the region masks' labels (empty: the dataset has no masks)."""
        return self.data.regions.labels if self.data.regions is not None else ()

    def regions(self, frame: Frame) -> Tensor | None:
        """The region label map ``[H, W]`` (int64, 255: no region) of ``frame`` at this scene's
        resolution, or None when the dataset has no mask for it."""
        if self.data.regions is None:
            return None
        try:
            labels = self.data.regions.read(frame.key, self.downscale)
        except RegionsError as e:
            raise DatasetError(str(e)) from None
        if labels is not None and tuple(labels.shape) != (frame.camera.height, frame.camera.width):
            raise DatasetError(f"{self.data.regions.paths[frame.key]}: {labels.shape[1]}x{labels.shape[0]} labels at "
                               f"downscale {self.downscale}, the image is {frame.camera.width}x{frame.camera.height}")
        return labels

    def image(self, frame: Frame) -> Tensor:
        """``[H, W, 3]`` float32 in [0, 1] at this scene's resolution (decoded once, then cached
        under the dataset's state: a replaced dataset is decoded again)."""
        path = self._cache_path(frame)
        if path is not None:
            cached = _read_cached(path, (frame.camera.height, frame.camera.width, 3))
            if cached is not None:
                return torch.from_numpy(cached).float().div_(255.0)
        img = _box_downscale(self.decode(frame), self.downscale)
        if path is not None:
            self._prepare_cache(path.parent.parent)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda p: np.save(p, img))
        return torch.from_numpy(img).float().div_(255.0)

    def decode(self, frame: Frame) -> np.ndarray:
        """The full-resolution ``[H, W, 3]`` uint8 image of ``frame`` (this scene's or its
        full-resolution twin) from the dataset's files, checked against its camera's size; no cache."""
        full = self._full.get(frame.key)
        if full is None:
            raise InputError(f"frame {frame.key!r} is not part of scene {self.name}")
        img = _to_uint8(self.data.read_image(full), frame.key)
        if img.shape[:2] != (full.camera.height, full.camera.width):
            raise DatasetError(
                f"{self.data.root}: image {frame.key} is {img.shape[1]}x{img.shape[0]}, "
                f"its camera says {full.camera.width}x{full.camera.height}"
            )
        return img

    def _cache_path(self, frame: Frame) -> Path | None:
        """``<cache>/<format>-<root tag>/<state>/x<downscale>/<key>.npy``."""
        if self.cache_dir is None:
            return None
        safe = frame.key.replace("/", "__")
        return self._cache_root / self.state.short / f"x{self.downscale}" / f"{safe}.npy"

    @functools.cached_property
    def _cache_root(self) -> Path:
        assert self.cache_dir is not None
        tag = hashlib.sha1(str(self.data.root.resolve()).encode()).hexdigest()[:12]
        return self.cache_dir / f"{self.format}-{tag}"

    def _prepare_cache(self, state_dir: Path) -> None:
        """Before the first image of a dataset state is cached: remove the images of the root's
        other (older) states, which no run can use any more; before this scene's first write:
        remove temporary files killed processes left there (untouched for an hour)."""
        if not self._cache_checked:
            self._cache_checked = True
            if state_dir.is_dir():
                remove_stale_temps(state_dir, older_than=STALE_TEMP_SECONDS)
        if state_dir.is_dir():
            return
        root = state_dir.parent
        if root.is_dir():
            for other in root.iterdir():
                if other.is_dir() and other != state_dir:
                    shutil.rmtree(other, ignore_errors=True)  # (a reader of it decodes again)

    def _scaled(self, frame: Frame) -> Frame:
        if self.downscale == 1:
            return frame
        cam, s = frame.camera, self.downscale
        K = cam.K.clone()
        K[:2] /= s
        return replace(frame, camera=replace(cam, K=K, width=cam.width // s, height=cam.height // s))


def test_cameras_problem(data: SceneData, test_cameras: Sequence[int]) -> str | None:
    """Why ``test_cameras`` cannot be the test split of ``data`` (None: they can)."""
    ids = sorted({f.camera.camera_id for f in data.frames})
    unknown = sorted(set(test_cameras) - set(ids))
    if unknown:
        return (f"no camera {', '.join(map(str, unknown))} in {data.root} (its cameras: "
                f"{', '.join(map(str, ids))})")
    if not test_cameras:
        return "expected at least one camera id"
    if set(test_cameras) >= set(ids):
        return f"that is every camera of {data.root}; keep at least one for training"
    return None


def select_frames(n_total: int, frame_range: Sequence[int] | None, where: Path, stride: int = 1) -> range:
    """The frames ``[start, end)`` of a sequence of ``n_total`` (all without a range), every
    ``stride``-th; a clear error when out of range."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"frame_stride: expected an int >= 1, got {stride!r}")
    if frame_range is None:
        return range(0, n_total, stride)
    start, end = int(frame_range[0]), int(frame_range[1])
    if not 0 <= start < end <= n_total:
        raise DatasetError(f"{where}: frame range {start}:{end} is outside the {n_total} frames (0:{n_total})")
    return range(start, end, stride)


def read_json(path: Path, expected: str) -> object:
    """Parse a JSON file; a missing, unreadable or malformed file is a DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected {expected}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None


def normalised_time(i: int, n: int) -> float:
    """Time of frame ``i`` of ``n``: ``i / n`` (as 4DGaussians' ``idx / 300``; README, "Datasets")."""
    return i / n


def _read_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A cached image (uint8 of ``shape``), or None when absent or not a usable cache file (it is
    then decoded again and rewritten)."""
    try:
        img = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if img.dtype != np.uint8 or img.shape != shape:
        return None
    return img


def _to_uint8(img: np.ndarray, key: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise DatasetError(f"image {key}: expected [H, W, 3] pixels, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    return img if img.flags.writeable else img.copy()  # torch.from_numpy wants writable memory


def _box_downscale(img: np.ndarray, s: int) -> np.ndarray:
    """Average ``s x s`` blocks (the image is cropped to a multiple of ``s``)."""
    if s == 1:
        return img
    h, w = img.shape[0] // s * s, img.shape[1] // s * s
    blocks = img[:h, :w].reshape(h // s, s, w // s, s, -1).astype(np.float32)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _bounds(xyz: Tensor) -> tuple[Tensor, Tensor]:
    """Axis-aligned box of the points, robust to outliers (0.5% / 99.5% quantiles)."""
    if xyz.shape[0] < 8:
        return xyz.min(0).values, xyz.max(0).values
    q = torch.quantile(xyz.double(), torch.tensor([0.005, 0.995], dtype=torch.float64), dim=0).float()
    return q[0], q[1]
