"""Per-pixel region masks of test views: which kind of content (a motion regime, foreground or
background) every pixel shows, for evaluating per region.

Files beside a dataset (written by the synthetic suite's generator; any dataset may carry them)::

    regions.json            {"format": "moegs-bench/regions", "version": 1,
                             "labels": ["static", "rigid", ...],   # label i <-> pixel value i
                             "masks": {"cam00/000000": "regions/cam00/000000.png", ...}}
    regions/<cam>/<frame>.png   8-bit single-channel label maps at the images' full resolution;
                                255: a pixel of no listed region

Binary foreground masks (Dynamic3DGaussians' ``seg/<cam>/<frame>.png``, read by its
``train.py`` as 0/1 values) are region masks with the labels ``background`` (0) and ``foreground``
(1): a pixel is foreground where the mask is 1 (0/1 masks) or at least 128 (0/255 masks).

A mask is read at the scene's resolution: with a downscale factor f, each f x f block takes its
most frequent label (the smallest on a tie).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FORMAT = "moegs-bench/regions"
FILE = "regions.json"
UNLABELLED = 255


class RegionsError(ValueError):
    """A malformed ``regions.json`` or mask (wrapped into the loader's DatasetError)."""


FOREGROUND = ("background", "foreground")


@dataclass(frozen=True)
class RegionMasks:
    labels: tuple[str, ...]  # label i names pixel value i
    paths: dict[str, Path]  # frame key -> its mask file
    binary: bool = False  # foreground masks (0/1 or 0/255): labels FOREGROUND

    def read(self, key: str, downscale: int = 1) -> Tensor | None:
        """The label map ``[H, W]`` (int64; :data:`UNLABELLED` for no region) of frame ``key`` at
        ``downscale``; None when the frame has no mask."""
        path = self.paths.get(key)
        if path is None:
            return None
        import imageio.v3 as iio

        labels = np.asarray(iio.imread(path))
        if self.binary:
            labels = foreground_labels(labels, path)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise RegionsError(f"{path}: expected an 8-bit single-channel label map, got {labels.dtype} "
                               f"{list(labels.shape)}")
        bad = (labels >= len(self.labels)) & (labels != UNLABELLED)
        if bad.any():
            raise RegionsError(f"{path}: label {int(labels[bad][0])} is not one of the {len(self.labels)} labels of "
                               f"{FILE}")
        return block_mode(torch.from_numpy(labels.astype(np.int64)), downscale)

    def files(self) -> list[Path]:
        return sorted(self.paths.values())


def foreground_labels(mask: np.ndarray, path: Path) -> np.ndarray:
    """A binary mask (bool, 0/1 or 0/255; a colour mask's first channel) -> uint8 labels
    (1: foreground)."""
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise RegionsError(f"{path}: expected a single-channel foreground mask, got shape {list(mask.shape)}")
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    return (mask >= (128 if mask.max(initial=0) > 1 else 1)).astype(np.uint8)


def block_mode(labels: Tensor, f: int) -> Tensor:
    """``[H, W]`` int labels -> ``[H // f, W // f]``: each ``f x f`` block's most frequent label
    (the smallest on a tie)."""
    if f == 1:
        return labels
    h, w = labels.shape[0] // f, labels.shape[1] // f
    blocks = labels[: h * f, : w * f].reshape(h, f, w, f).permute(0, 2, 1, 3).reshape(h, w, f * f)
    values = torch.unique(blocks)  # [L] sorted: the few labels present
    counts = (blocks[..., None] == values).sum(2)  # [h, w, L]
    return values[counts.argmax(-1)]  # (argmax: the first, i.e. smallest, of equal counts)


def read_regions(root: Path) -> RegionMasks | None:
    """The region masks declared in ``root/regions.json`` (None without that file)."""
    path = Path(root) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RegionsError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RegionsError(f"{path}: expected {{\"format\": \"{FORMAT}\", ...}}")
    labels, masks = data.get("labels"), data.get("masks")
    if (not isinstance(labels, list) or not labels or len(labels) >= UNLABELLED
            or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
        raise RegionsError(f"{path}: \"labels\" must be a list of distinct names (at most {UNLABELLED - 1})")
    if not isinstance(masks, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in masks.items()):
        raise RegionsError(f"{path}: \"masks\" must map frame keys to mask files")
    paths = {}
    for key, rel in masks.items():
        file = Path(root) / rel
        if not file.is_file():
            raise RegionsError(f"{file}: missing (the mask of {key} named in {FILE})")
        paths[key] = file
    return RegionMasks(tuple(labels), paths)


def write_regions(root: Path, labels: tuple[str, ...], masks: dict[str, np.ndarray]) -> None:
    """Write ``masks`` (frame key -> ``[H, W]`` uint8 label map) and ``regions.json`` into ``root``
    (a folder being written: the caller makes the whole folder appear at once)."""
    import imageio.v3 as iio

    rel = {}
    for key, labels_map in masks.items():
        name = f"regions/{key}.png"
        (Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(Path(root) / name, np.ascontiguousarray(labels_map, dtype=np.uint8), extension=".png")
        rel[key] = name
    (Path(root) / FILE).write_text(json.dumps({"format": FORMAT, "version": 1, "labels": list(labels),
                                               "masks": rel}, indent=1) + "\n")


__all__ = ["FILE", "FOREGROUND", "RegionMasks", "foreground_labels", "RegionsError", "UNLABELLED", "block_mode", "read_regions", "write_regions"]
