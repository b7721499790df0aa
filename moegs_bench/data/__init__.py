"""Datasets: one :class:`Scene` for every format, loaders selected by ``FORMAT:PATH`` or detected.

Formats (each a module of this package with ``detect(root)`` and ``load(root, frame_range=..., frame_stride=...)``):

- ``n3v``: Neural 3D Video (``poses_bounds.npy`` + ``camXX.mp4``)
- ``technicolor``: Technicolor light-field rig (per-frame images + calibration)
- ``dnerf``: D-NeRF (``transforms_{train,val,test}.json`` with ``time``)
- ``panoptic``: Dynamic 3D Gaussians / CMU Panoptic (``train_meta.json``, ``test_meta.json``, ``ims/``);
  the embedded synthetic suite is written in this format.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

from moegs_bench.data.scene import DatasetError, Frame, PointCloud, Scene, SceneData
from moegs_bench.data.images import ImageSource
from moegs_bench.data.files import folder_problem

#: format name -> module (imported when used)
FORMATS: dict[str, str] = {
    "n3v": "moegs_bench.data.n3v",
    "technicolor": "moegs_bench.data.technicolor",
    "dnerf": "moegs_bench.data.dnerf",
    "panoptic": "moegs_bench.data.panoptic",
}

__all__ = ["DatasetError", "FORMATS", "Frame", "ImageSource", "PointCloud", "Scene", "SceneData", "detect_format",
           "load_scene"]


def _module(fmt: str):
    return importlib.import_module(FORMATS[fmt])


def detect_format(root: Path) -> str:
    """The format of the dataset folder ``root`` (a DatasetError when none or several match)."""
    _check_root(root)
    found = [fmt for fmt in FORMATS if _module(fmt).detect(root)]
    if not found and (problem := folder_problem(root)) is not None:
        raise DatasetError(f"{root}: {problem}; its format cannot be detected (name it as FORMAT:PATH with FORMAT "
                           f"in {', '.join(FORMATS)})")
    if len(found) != 1:
        what = "no known layout" if not found else f"several layouts ({', '.join(found)})"
        raise DatasetError(
            f"{root}: {what}; name one as FORMAT:PATH with FORMAT in {', '.join(FORMATS)}"
        )
    return found[0]


def _check_root(root: Path) -> None:
    """A DatasetError unless ``root`` is a folder (missing, a file, a loop, no permission on the way)."""
    if not os.path.lexists(root):
        raise DatasetError(f"{root}: no such file or folder")
    problem = folder_problem(root, listed=False)
    if problem == "a file, expected a folder":
        raise DatasetError(f"{root}: expected a dataset folder, got a file")
    if problem is not None:
        raise DatasetError(f"{root}: {problem}; expected a dataset folder")


def load_scene(
    spec: str | Path,
    *,
    downscale: int | None = None,
    frame_range: Sequence[int] | None = None,
    cache_dir: Path | None = None,
    frame_stride: int = 1,
    test_cameras: Sequence[int] | None = None,
) -> Scene:
    """Load ``FORMAT:PATH`` or ``PATH`` (format detected). ``downscale`` defaults to the dataset
    protocol's (N3V: 2); ``frame_range`` is ``(start, end)`` within the sequence (default: the
    protocol's frames), of which every ``frame_stride``-th is used; ``test_cameras`` replace the
    dataset's test split (needed where it has none, e.g. a capture without ``test_meta.json``)."""
    text = str(spec)
    fmt, _, rest = text.partition(":")
    if rest and fmt in FORMATS:
        root = Path(rest)
        _check_root(root)
    elif rest and len(fmt) > 1 and "/" not in fmt:
        raise DatasetError(f"{text}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    else:
        root = Path(text)
        fmt = detect_format(root)
    data = _module(fmt).load(root, frame_range=frame_range, frame_stride=frame_stride)
    return Scene(data, downscale=data.default_downscale if downscale is None else downscale, cache_dir=cache_dir,
                 test_cameras=None if test_cameras is None else tuple(test_cameras))


SYNTHETIC_PREFIX = "synthetic:"


def default_cache_dir() -> Path:
    """Where generated scenes and shared expert checkpoints go: ``$MOEGS_BENCH_CACHE`` or
    ``~/.cache/moegs-bench``."""
    env = os.environ.get("MOEGS_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "moegs-bench"


def open_scene(spec: str | None, *, cache_dir: Path | None = None, downscale: int | None = None,
               frame_range: Sequence[int] | None = None, frame_stride: int = 1,
               test_cameras: Sequence[int] | None = None) -> tuple[Scene, str]:
    """Load a scene from a CLI spec: ``synthetic:NAME`` (generated into the cache on first use;
    ``None`` is the default synthetic scene), ``FORMAT:PATH`` or ``PATH``. Returns the scene and
    a canonical spec (absolute path) that names it in run records and cache keys; ``downscale`` and
    ``frame_range``, ``frame_stride`` and ``test_cameras`` as for :func:`load_scene`."""
    from moegs_bench.data.synthetic import DEFAULT_SCENE, SCENES, ensure

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    text = SYNTHETIC_PREFIX + DEFAULT_SCENE if spec is None else str(spec)
    if text.startswith(SYNTHETIC_PREFIX):
        name = text[len(SYNTHETIC_PREFIX):]
        if name not in SCENES:
            raise DatasetError(f"--scene {text}: unknown synthetic scene {name!r}; expected one of {', '.join(SCENES)}")
        root = ensure(name, cache / "synthetic")
        return (load_scene(root, downscale=downscale, frame_range=frame_range, cache_dir=cache / "images",
                           frame_stride=frame_stride, test_cameras=test_cameras), f"{SYNTHETIC_PREFIX}{name}")
    scene = load_scene(text, downscale=downscale, frame_range=frame_range, cache_dir=cache / "images",
                       frame_stride=frame_stride, test_cameras=test_cameras)
    return scene, f"{scene.format}:{scene.data.root.resolve()}"
