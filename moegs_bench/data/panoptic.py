"""Dynamic 3D Gaussians / CMU Panoptic sports (Luiten et al., 3DV 2024; README, "Datasets").

Layout (JonathonLuiten/Dynamic3DGaussians, ``data/<sequence>/``)::

    train_meta.json   {"w": int, "h": int, "k": [T][C][3][3], "w2c": [T][C][4][4],
    test_meta.json     "fn": [T][C] ("<cam>/<frame:06d>.jpg", relative to ims/), "cam_id": [T][C]}
                      (test_meta.json is optional: without it every camera trains, and a test split
                      is chosen with ``--test-cameras``)
    ims/<cam>/<frame>.jpg
    init_pt_cld.npz   optional: "data" [P, 7] = x, y, z, r, g, b (in [0, 1]), seg (1 = foreground)
    seg/              optional foreground masks (<fn as .png>, 0/1), read as region masks
                      "background" / "foreground" (moegs_bench.data.regions); evaluation reads
                      those of the test views, whichever cameras --test-cameras holds out
    scene.json        optional, our extension: {"name": str, "background": [r, g, b]}

Conventions (checked against upstream ``train.py`` / ``helpers.setup_camera``):

- ``w2c`` is world-to-camera in the OpenCV convention (x right, y down, z forward): upstream hands
  it to the rasterizer as the view matrix unchanged. ``k`` is the 3x3 pixel intrinsic matrix.
  Both may change per timestep; we read them per timestep.
- Train cameras come from ``train_meta.json``, test cameras from ``test_meta.json``;
  ``test_camera_ids`` are the ``cam_id`` values of ``test_meta.json``. Every timestep must list the
  same cameras.
- ``T = len(fn)`` timesteps; time of selected timestep ``i`` of ``n`` is ``i / n``; ``frame_range``
  selects timesteps. Frame keys are ``cam<id>/<timestep:06d>`` with the absolute timestep.
- ``init_pt_cld.npz``: upstream uses columns 3:6 directly as colours against images scaled to
  [0, 1], so they are in [0, 1]; a file whose colours exceed 1 is taken as 0..255 and divided by
  255. Column 6 (segmentation) is not used.
- Background black (upstream renders on black) unless ``scene.json`` says otherwise.
- ``default_downscale`` 1: upstream trains at the stored resolution (640x360).

:func:`write` is the inverse of :func:`load`; the embedded synthetic suite uses it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.io import umask
from moegs_bench.data.files import file_problem, optional_file, present, read_problem, require_file
from moegs_bench.data.regions import FILE as REGIONS_FILE
from moegs_bench.data.regions import FOREGROUND, RegionMasks, RegionsError, read_regions
from moegs_bench.data.scene import DatasetError, Frame, PointCloud, SceneData, normalised_time, read_json, select_frames

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_META_KEYS = ("w", "h", "k", "w2c", "fn", "cam_id")


def detect(root: Path) -> bool:
    root = Path(root)
    return present(root / "train_meta.json") or present(root / "test_meta.json")


def load(root: Path, *, frame_range: Sequence[int] | None = None, frame_stride: int = 1) -> SceneData:
    root = Path(root)
    train = _Meta.read(root / "train_meta.json")
    test_path = root / "test_meta.json"
    test = _Meta.read(test_path) if present(test_path) else _Meta.without_cameras(test_path, train)
    if train.T != test.T:
        raise DatasetError(
            f"{test.path}: {test.T} timesteps, but {train.path.name} has {train.T}; both must list every timestep"
        )
    if not train.cam_ids:
        raise DatasetError(f"{train.path}: no cameras; expected at least one training camera per timestep")
    shared = set(train.cam_ids) & set(test.cam_ids)
    if shared:
        raise DatasetError(f"{test.path}: cameras {sorted(shared)} are also in {train.path.name}; the split must be disjoint")
    settings = _read_scene_json(root / "scene.json")
    selected = select_frames(train.T, frame_range, root, frame_stride)

    ims = root / "ims"
    frames: list[Frame] = []
    paths: dict[str, Path] = {}
    fns: dict[str, str] = {}
    for i, t in enumerate(selected):
        time = normalised_time(i, len(selected))
        for meta in (train, test):
            for c in range(meta.C):
                cam_id = meta.cam_id[t][c]
                fn = meta.fn[t][c]
                path = ims / fn
                if Path(fn).suffix.lower() not in IMAGE_SUFFIXES:
                    raise DatasetError(
                        f"{path}: unsupported image type {Path(fn).suffix!r} (named in {meta.path.name}); "
                        f"expected one of {', '.join(IMAGE_SUFFIXES)}"
                    )
                problem = file_problem(path)
                if problem is not None:
                    what = "image missing" if problem == "missing" else problem
                    raise DatasetError(f"{path}: {what} (named in {meta.path.name}, timestep {t})")
                key = f"cam{cam_id:02d}/{t:06d}"
                frames.append(Frame(camera=meta.camera(t, c, time), frame=i, key=key))
                paths[key] = path
                fns[key] = fn

    def read_image(frame: Frame) -> np.ndarray:
        path = paths.get(frame.key)
        if path is None:
            raise DatasetError(f"{root}: no image for frame {frame.key!r}")
        img = _read_rgb(path)  # [H, W, 3] uint8
        if img.shape[:2] != (frame.camera.height, frame.camera.width):
            raise DatasetError(f"{path}: {img.shape[1]}x{img.shape[0]} pixels, but the metadata says "
                               f"w={frame.camera.width}, h={frame.camera.height}")
        return img

    points, point_note = _read_points(root / "init_pt_cld.npz")
    try:
        regions = read_regions(root)
    except RegionsError as e:
        raise DatasetError(str(e)) from None
    if regions is None:  # upstream's foreground masks, seg/<fn as .png>, of every view that has one: the
        # test split may be chosen later (--test-cameras), and evaluation reads only the test views'
        seg = {f.key: root / "seg" / Path(fns[f.key]).with_suffix(".png") for f in frames}
        seg = {k: v for k, v in seg.items() if v.is_file()}
        regions = RegionMasks(FOREGROUND, seg, binary=True) if seg else None
    region_files = ([] if regions is None else regions.files() if regions.binary
                    else [root / REGIONS_FILE, *regions.files()])
    return SceneData(
        format="panoptic",
        root=root,
        frames=frames,
        test_camera_ids=set(test.cam_ids),
        read_image=read_image,
        sources=(train.path, test.path, root / "scene.json", root / "init_pt_cld.npz", *paths.values(),
                 *region_files),  # (region masks only where present: older datasets keep their state)
        regions=regions,
        num_frames=len(selected),
        points=points,
        background=settings.get("background", (0.0, 0.0, 0.0)),
        default_downscale=1,
        name=settings.get("name") or root.name,
        meta={
            "timesteps": train.T,
            "train_cameras": sorted(train.cam_ids),
            "test_cameras": sorted(test.cam_ids),
            "image_size": [train.w, train.h],
            "points": point_note,
            "scene_json": (root / "scene.json").is_file(),
            "region_masks": f"{len(regions.paths)} views ({', '.join(regions.labels)})" if regions else "none",
        },
    )


# ------------------------------------------------------------------------------ metadata
class _Meta:
    """One validated ``*_meta.json``: T timesteps of C cameras each."""

    def __init__(self, path: Path, md: dict) -> None:
        self.path = path
        self.w = _positive_int(md["w"], f"{path}: w")
        self.h = _positive_int(md["h"], f"{path}: h")
        fn, cam_id = md["fn"], md["cam_id"]
        if not isinstance(fn, list) or not fn:
            raise DatasetError(f"{path}: fn must be a non-empty list [T][C] of image names, got {fn!r:.80}")
        self.T = len(fn)
        counts = [len(row) if isinstance(row, list) else None for row in fn]
        if None in counts:
            t = counts.index(None)
            raise DatasetError(f"{path}: fn[{t}] must be a list of image names (one per camera)")
        self.C = counts[0]
        for t, n in enumerate(counts):
            if n != self.C:
                raise DatasetError(
                    f"{path}: inconsistent camera counts across timesteps: timestep 0 has {self.C} cameras, "
                    f"timestep {t} has {n} (fn)"
                )
        for t, row in enumerate(fn):
            for c, name in enumerate(row):
                if not isinstance(name, str) or not name or Path(name).is_absolute():
                    raise DatasetError(f"{path}: fn[{t}][{c}] must be an image path relative to ims/, got {name!r}")
        self.fn: list[list[str]] = fn

        if not isinstance(cam_id, list) or len(cam_id) != self.T:
            raise DatasetError(f"{path}: cam_id must be a list [T][C] with T={self.T} rows like fn")
        for t, row in enumerate(cam_id):
            if not isinstance(row, list) or len(row) != self.C:
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise DatasetError(
                    f"{path}: inconsistent camera counts: cam_id[{t}] has {got} entries, fn has {self.C} cameras per timestep"
                )
            for c, v in enumerate(row):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise DatasetError(f"{path}: cam_id[{t}][{c}] must be an int >= 0, got {v!r}")
            if len(set(row)) != self.C:
                raise DatasetError(f"{path}: cam_id[{t}] lists a camera twice: {row}")
            if set(row) != set(cam_id[0]):
                raise DatasetError(
                    f"{path}: timestep {t} has cameras {sorted(row)}, timestep 0 has {sorted(cam_id[0])}; "
                    "every timestep must have the same cameras"
                )
        self.cam_id: list[list[int]] = cam_id
        self.cam_ids: list[int] = list(cam_id[0])
        self.k = self._matrices(md["k"], "k", 3)
        self.w2c = self._matrices(md["w2c"], "w2c", 4)

    @classmethod
    def read(cls, path: Path) -> _Meta:
        expected = f"Dynamic 3D Gaussians metadata ({', '.join(_META_KEYS)} per timestep)"
        require_file(path, expected)  # a loop or a folder without permission, named as such
        md = read_json(path, expected)
        if not isinstance(md, dict):
            raise DatasetError(f"{path}: expected a JSON object with keys {', '.join(_META_KEYS)}")
        missing = [k for k in _META_KEYS if k not in md]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(_META_KEYS)}")
        return cls(path, md)

    @classmethod
    def without_cameras(cls, path: Path, like: _Meta) -> _Meta:
        """An absent ``path`` (a capture without a test split): ``like``'s timesteps, no camera."""
        rows = [[] for _ in range(like.T)]
        return cls(path, {"w": like.w, "h": like.h, "k": rows, "w2c": rows, "fn": rows, "cam_id": rows})

    def _matrices(self, value: object, name: str, n: int) -> np.ndarray:
        expected = f"[T={self.T}][C={self.C}][{n}][{n}] numbers"
        if self.C == 0:  # a meta file without cameras (e.g. no test split): only the T empty rows
            if not isinstance(value, list) or len(value) != self.T or any(row != [] for row in value):
                raise DatasetError(f"{self.path}: {name} must be {self.T} empty lists (fn has no cameras)")
            return np.zeros((self.T, 0, n, n))
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError(f"{self.path}: {name} must be {expected}; got a ragged or non-numeric list") from None
        if arr.shape != (self.T, self.C, n, n):
            raise DatasetError(f"{self.path}: {name} must be {expected}, got shape {list(arr.shape)}")
        if not np.isfinite(arr).all():
            raise DatasetError(f"{self.path}: {name} contains NaN or Inf")
        return arr

    def camera(self, t: int, c: int, time: float) -> Camera:
        try:
            return Camera(
                K=torch.from_numpy(self.k[t, c]).float(), viewmat=torch.from_numpy(self.w2c[t, c]).float(),
                width=self.w, height=self.h, time=time, camera_id=self.cam_id[t][c],
            )  # fmt: skip
        except InputError as e:
            raise DatasetError(f"{self.path}: timestep {t}, camera {self.cam_id[t][c]}: {e}") from None


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DatasetError(f"{where} must be a positive int (pixels), got {value!r}")
    return value


def _read_scene_json(path: Path) -> dict:
    """Our extension: ``{"name": str, "background": [r, g, b] in [0, 1]}``, both optional."""
    if not optional_file(path):
        return {}
    data = read_json(path, "scene.json")
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with optional name and background")
    out: dict = {}
    if "name" in data:
        if not isinstance(data["name"], str):
            raise DatasetError(f"{path}: name must be a string, got {data['name']!r}")
        out["name"] = data["name"]
    if "background" in data:
        out["background"] = _background(data["background"], f"{path}: background")
    return out


def _background(value: object, where: str, error: type[InputError] = DatasetError) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in value)
    if not ok:
        raise error(f"{where} must be three numbers in [0, 1], got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _read_points(path: Path) -> tuple[PointCloud | None, str]:
    if not optional_file(path):
        return None, "none in the dataset (sampled along the training rays)"
    try:
        with np.load(path) as z:
            if "data" not in z.files:
                raise DatasetError(f"{path}: no array 'data'; expected data [P, 7] = x, y, z, r, g, b, seg")
            data = np.asarray(z["data"])
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npz file ({read_problem(e, path)})") from None
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] < 6 or not np.issubdtype(data.dtype, np.number):
        raise DatasetError(f"{path}: data must be [P, 7] numbers (x, y, z, r, g, b, seg), got shape {list(data.shape)}")
    data = data.astype(np.float64)
    if not np.isfinite(data[:, :6]).all():
        raise DatasetError(f"{path}: data contains NaN or Inf")
    rgb = data[:, 3:6]
    if rgb.min() < 0.0:
        raise DatasetError(f"{path}: colours (columns 3:6) must be >= 0, got {rgb.min()}")
    scale = "0..1"
    if rgb.max() > 1.0:
        if rgb.max() > 255.0:
            raise DatasetError(f"{path}: colours (columns 3:6) must be in [0, 1] (or 0..255), got max {rgb.max()}")
        rgb, scale = rgb / 255.0, "0..255, divided by 255"
    source = f"init_pt_cld.npz ({data.shape[0]} points, colours {scale})"
    pc = PointCloud(xyz=torch.from_numpy(data[:, :3]).float(), rgb=torch.from_numpy(rgb).float(), source=source)
    return pc, source


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable: Scene hands it to torch.from_numpy
    except FileNotFoundError:
        raise DatasetError(f"{path}: image missing") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable image ({read_problem(e, path)})") from None


# ------------------------------------------------------------------------------ writing
def write(
    root: Path,
    frames: Sequence[Frame],
    images: Sequence[np.ndarray],
    *,
    test_camera_ids: set[int],
    points: PointCloud | None = None,
    ext: str = ".png",
    name: str = "",
    background: Sequence[float] = (0.0, 0.0, 0.0),
) -> None:
    """Write ``frames`` (with ``images[i]`` the uint8 ``[H, W, 3]`` picture of ``frames[i]``) as a
    Dynamic 3D Gaussians dataset at ``root``: the inverse of :func:`load`.

    Frames are grouped by time index (``Frame.frame``, which must cover 0..T-1) and camera id;
    every time must have the same cameras, all of one size. Cameras in ``test_camera_ids`` go to
    ``test_meta.json``, the others to ``train_meta.json``. ``Camera.time`` is not stored (the
    loader gives timestep ``i`` of ``T`` the time ``i / T``). ``points`` become ``init_pt_cld.npz``
    (seg = 1); ``scene.json`` records ``name`` and ``background``.

    The write is atomic as a whole: everything goes to a temporary sibling folder that is renamed
    to ``root`` at the end, so an interrupted write leaves nothing at ``root``. ``root`` must not
    exist or be an empty folder.
    """
    import imageio.v3 as iio

    root = Path(root)
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext not in IMAGE_SUFFIXES:
        raise InputError(f"write: ext must be one of {', '.join(IMAGE_SUFFIXES)}, got {ext!r}")
    if len(frames) != len(images):
        raise InputError(f"write: {len(frames)} frames but {len(images)} images")
    if not frames:
        raise InputError("write: no frames to write")
    try:
        bg_values: object = [float(v) for v in background]
    except (TypeError, ValueError):
        bg_values = background
    bg = _background(bg_values, "write: background", InputError)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root}: already exists and is not an empty folder; write needs a new or empty folder")

    # group by time and camera
    grid: dict[int, dict[int, int]] = {}
    for idx, f in enumerate(frames):
        row = grid.setdefault(f.frame, {})
        if f.camera.camera_id in row:
            raise InputError(f"write: frames {f.key!r} and {frames[row[f.camera.camera_id]].key!r} are both camera "
                             f"{f.camera.camera_id} at time index {f.frame}")  # fmt: skip
        row[f.camera.camera_id] = idx
    T = len(grid)
    if sorted(grid) != list(range(T)):
        raise InputError(f"write: time indices (Frame.frame) must be 0..{T - 1}, got {sorted(grid)}")
    cams = sorted(grid[0])
    for t in range(T):
        if sorted(grid[t]) != cams:
            raise InputError(f"write: time {t} has cameras {sorted(grid[t])}, time 0 has {cams}; every time needs the same cameras")
    sizes = {(f.camera.width, f.camera.height) for f in frames}
    if len(sizes) != 1:
        raise InputError(f"write: all cameras must have one size (the format stores one w, h), got {sorted(sizes)}")
    ((w, h),) = sizes
    test_ids = {int(c) for c in test_camera_ids}
    unknown = test_ids - set(cams)
    if unknown:
        raise InputError(f"write: test camera ids {sorted(unknown)} are not among the frames' cameras {cams}")
    split = {"train": [c for c in cams if c not in test_ids], "test": [c for c in cams if c in test_ids]}
    if not split["train"]:
        raise InputError("write: every camera is a test camera; at least one training camera is needed")

    metas = {}
    for part, ids in split.items():
        md: dict = {"w": w, "h": h, "k": [], "w2c": [], "fn": [], "cam_id": []}
        for t in range(T):
            row = [frames[grid[t][c]].camera for c in ids]
            md["k"].append([cam.K.detach().double().cpu().tolist() for cam in row])
            md["w2c"].append([cam.viewmat.detach().double().cpu().tolist() for cam in row])
            md["fn"].append([f"{c}/{t:06d}{ext}" for c in ids])
            md["cam_id"].append(list(ids))
        metas[part] = md
    point_data = None
    if points is not None:
        xyz = points.xyz.detach().cpu().double().numpy()
        rgb = points.rgb.detach().cpu().double().numpy()
        if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
            raise InputError(f"write: points need xyz and rgb of shape [P, 3], got {list(xyz.shape)} and {list(rgb.shape)}")
        point_data = np.concatenate([xyz, rgb, np.ones((xyz.shape[0], 1))], axis=1).astype(np.float32)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.writing-", dir=root.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; give the usual permissions
        for c in cams:
            (tmp / "ims" / str(c)).mkdir(parents=True)
        for t in range(T):
            for c in cams:
                idx = grid[t][c]
                iio.imwrite(tmp / "ims" / str(c) / f"{t:06d}{ext}", _check_image(images[idx], frames[idx], w, h))
        for part, md in metas.items():
            with open(tmp / f"{part}_meta.json", "w", encoding="utf-8") as f:
                json.dump(md, f)
        if point_data is not None:
            np.savez(tmp / "init_pt_cld.npz", data=point_data)
        with open(tmp / "scene.json", "w", encoding="utf-8") as f:
            json.dump({"name": name, "background": list(bg)}, f)
        try:
            os.replace(tmp, root)  # POSIX rename replaces an empty folder atomically
        except OSError as e:
            raise DatasetError(f"{root}: cannot move the written dataset into place ({e}); is it still empty?") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_image(img: object, frame: Frame, w: int, h: int) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (h, w, 3):
        got = f"{img.dtype} {list(img.shape)}" if isinstance(img, np.ndarray) else type(img).__name__
        raise InputError(f"write: image of frame {frame.key!r} must be a uint8 array [{h}, {w}, 3], got {got}")
    return img
