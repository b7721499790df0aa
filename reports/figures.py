"""Image figures of MoE-GS runs: the gate-map grid and ground truth / expert / mixture comparisons.

- :func:`gate_grid` copies the first gate figure (``<run>/gates/*.png``, written by
  :func:`moegs_bench.reports.gate_maps.save_gate_figure`) of every mixture run into a report
  folder and describes them (paths and captions) for a LaTeX figure grid or an HTML page.
- :func:`crops` puts the ground truth, the best expert, the mixture and both absolute-error maps of
  one test view side by side (PNG + PDF), for the view where the mixture gains most over its best
  expert unless views are named.

Neither raises for something missing on disk (renders not saved, an expert folder gone, a dataset
that cannot be opened): each returns ``None`` for that figure with a one-line reason to print.
Bad arguments (a non-mixture entry, too many views) raise :class:`UserInputError`. Reruns write
byte-identical files.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Rectangle

from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write
from moegs_bench.reports.plots import TWO_COLUMNS, new_figure, run_label, run_names, write_figure
from moegs_bench.reports.records import Entry
from moegs_bench.results import ResultsError, read_record

__all__ = ["Figure", "Panel", "best_expert", "best_window", "crops", "error_map", "gain_view", "gate_grid",
           "render_name"]

GroundTruth = Callable[[str], Any]  # test-view key -> [H, W, 3] image (uint8, or float in [0, 1])
MIN_PANEL_PX = 256  # images are upscaled (nearest neighbour, integer factor) to at least this many rows
ZOOM_MIN_PX = 256  # images at least this large (both sides) also get a zoomed crop row
MAX_VIEWS = 2
ERROR_CMAP = "magma"


class _Missing(Exception):
    """Something a figure needs is not on disk; the message says what (printed by the caller)."""


@dataclass(frozen=True)
class Panel:
    """One image of a figure: its path relative to the output folder's parent, and its caption."""

    path: Path
    caption: str


@dataclass(frozen=True)
class Figure:
    """A written image figure, described for a LaTeX figure grid or an HTML page."""

    name: str
    caption: str
    panels: tuple[Panel, ...]  # the PNG images to place (one per run for the gate grid; one for crops)
    pdf: Path | None = None  # the vector version (crops), relative like the panels


def render_name(key: str) -> str:
    """The file name of a test view's render: ``cam00/000012`` -> ``cam00__000012.png``."""
    return key.replace("/", "__") + ".png"


# ---------------------------------------------------------------------------------- gate grid


def gate_grid(entries: Iterable[Entry], folder: Path) -> tuple[Figure | None, list[str]]:
    """Copy the first gate figure (sorted by name) of every mixture run into ``folder`` as
    ``gates_<scene>_<experts>.png`` and describe them. Returns the figure (``None`` when no run has
    gate figures) and one reason per run left out (no run folder, no ``gates`` folder, no PNG)."""
    folder = Path(folder)
    runs = list({e.run_dir or id(e): e for e in entries if e.role == "mixture"}.values())  # one per run folder
    panels, skipped = [], []
    for run, name in zip(runs, run_names(runs, "gates")):
        try:
            source = _first_gate_figure(run)
            target = folder / f"{name}.png"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
        except (_Missing, OSError) as exc:
            skipped.append(f"gate maps of {run_label(run)}: {exc}")
            continue
        key = source.stem.replace("__", "/")
        panels.append(Panel(path=Path(folder.name) / target.name, caption=(
            f"MoE-GS gates on {run.scene_name} mixing {', '.join(run.experts)} (seed {run.seed}), test view {key}: "
            "the mixture, the expert with the highest gate weight per pixel (legend: share of pixels won) and each "
            "expert's gate weight on a 0-1 scale.")))
    if not panels:
        return None, skipped
    caption = ("Gate maps of the MoE-GS runs (first test view of each): which expert the router weights most at "
               "every pixel, and each expert's gate weight.")
    return Figure(name="gates", caption=caption, panels=tuple(panels)), skipped


def _first_gate_figure(run: Entry) -> Path:
    if run.run_dir is None:
        raise _Missing("the record names no run folder")
    gates = run.run_dir / "gates"
    if not gates.is_dir():
        raise _Missing(f"no gates folder in {run.run_dir} (the run saved no gate figures)")
    pngs = sorted(gates.glob("*.png"))
    if not pngs:
        raise _Missing(f"no PNG in {gates}")
    return pngs[0]


# -------------------------------------------------------------------------------------- crops


def best_expert(run: Entry, entries: Iterable[Entry]) -> Entry | None:
    """The expert entry with the highest PSNR among ``run``'s experts on its scene: of the run's
    seed when any; of the trainings the run was built from (records in its folder) when any; ties
    by id."""
    found = [e for e in entries if e.role == "expert" and e.scene == run.scene and e.model in run.experts
             and e.psnr is not None]
    found = [e for e in found if e.seed == run.seed] or found
    found = [e for e in found if e.run_dir is not None and e.run_dir == run.run_dir] or found
    return min(found, key=lambda e: (-float(e.psnr or 0.0), e.model)) if found else None


def gain_view(mixture: Mapping[str, float], expert: Mapping[str, float]) -> str | None:
    """The view key where ``mixture[key] - expert[key]`` is largest (first key in sorted order on
    ties); ``None`` when the two share no key."""
    common = sorted(set(mixture) & set(expert))
    return max(common, key=lambda k: mixture[k] - expert[k]) if common else None


def error_map(render: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[H, W]`` mean absolute error over RGB of two ``[H, W, 3]`` float images in [0, 1]."""
    return np.abs(render - truth).mean(axis=2)


def best_window(score: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """The top-left ``(row, col)`` of the ``height x width`` window of ``score`` (``[H, W]``) with
    the largest sum (the first in row-major order on ties)."""
    h, w = score.shape
    if not (1 <= height <= h and 1 <= width <= w):
        raise UserInputError(f"best_window: a {height}x{width} window does not fit a {h}x{w} map")
    table = np.zeros((h + 1, w + 1))  # [H+1, W+1] summed-area table
    table[1:, 1:] = score.astype(np.float64).cumsum(0).cumsum(1)
    sums = table[height:, width:] - table[:-height, width:] - table[height:, :-width] + table[:-height, :-width]
    row, col = np.unravel_index(int(np.argmax(sums)), sums.shape)  # sums: [H-height+1, W-width+1]
    return int(row), int(col)


@dataclass(frozen=True)
class _View:
    key: str
    truth: np.ndarray  # [H, W, 3] float in [0, 1]
    expert: np.ndarray  # [H, W, 3]
    mixture: np.ndarray  # [H, W, 3]
    expert_psnr: float | None
    mixture_psnr: float | None


def crops(entry_mixture: Entry, entries: Iterable[Entry], folder: Path, *, views: Sequence[str] | None = None,
          cache_dir: Path | None = None, ground_truth: GroundTruth | None = None,
          name: str | None = None) -> tuple[Figure | None, str | None]:
    """Write ``<folder>/<name>.png`` and ``.pdf``: per test view (``views``, 1-2 keys; default the
    view where the mixture gains most over its best expert, from the per-view PSNR of their
    records) the ground truth, the best expert (:func:`best_expert`), the mixture, and the
    absolute-error maps of both (one shared colour scale); large images get a second row zoomed on
    the quarter-size window where the mixture's error is lowest relative to the expert's.

    ``ground_truth`` maps a view key to its image (default: the run's scene opened with
    :func:`moegs_bench.data.open_scene` at the run's downscale and frames, ``cache_dir`` its cache).
    ``name`` defaults to ``crops_<scene>_<experts>``. Returns ``(figure, None)``, or
    ``(None, reason)`` when renders, an expert folder, records or the dataset are missing."""
    if entry_mixture.role != "mixture":
        raise UserInputError(f"crops: expected a mixture entry, got role {entry_mixture.role!r} "
                             f"({entry_mixture.model})")
    if views is not None and not 1 <= len(views) <= MAX_VIEWS:
        raise UserInputError(f"crops: expected 1 to {MAX_VIEWS} views, got {len(views)}")
    entries = list(entries)
    name = name or run_names([entry_mixture], "crops")[0]
    try:
        expert = best_expert(entry_mixture, entries)
        if expert is None:
            raise _Missing("no expert of the run with a PSNR among the entries")
        shown = _load_views(entry_mixture, expert, views, cache_dir, ground_truth)
    except _Missing as exc:
        return None, f"crops of {run_label(entry_mixture)}: {exc}"
    plot = write_figure(Path(folder) / name, "", lambda: _crops_figure(shown, expert.model))
    rel = Path(Path(folder).name)
    return Figure(name=name, caption=_crops_caption(entry_mixture, expert, shown, views is None),
                  panels=(Panel(rel / plot.png.name, f"{run_label(entry_mixture)}: ground truth, {expert.model}, "
                                                    "MoE-GS and their errors"),),
                  pdf=rel / plot.pdf.name), None


def _load_views(run: Entry, expert: Entry, views: Sequence[str] | None, cache_dir: Path | None,
                ground_truth: GroundTruth | None) -> list[_View]:
    """Everything the figure shows, read from disk (:class:`_Missing` for anything absent)."""
    run_dir = run.run_dir
    if run_dir is None:
        raise _Missing("the record names no run folder")
    mixture_pv = _per_view_psnr(run.record)
    expert_pv = _per_view_psnr(expert.record) or _baseline_per_view(run.record, expert.model)
    if views is None:
        key = gain_view(mixture_pv, expert_pv)
        if key is None:
            raise _Missing(f"no per-view PSNR shared by the mixture and {expert.model} in their records")
        views = [key]
    expert_dir = _expert_folder(run_dir, expert.model)
    renders = [(key, _read_image(run_dir / "renders" / "test" / render_name(key)),
                _read_image(expert_dir / "renders" / "test" / render_name(key))) for key in views]
    truth = ground_truth or _scene_ground_truth(run, cache_dir)
    out = []
    for key, mixture, expert_img in renders:
        gt = _as_float_image(_call_ground_truth(truth, key), f"ground truth of {key}")
        if not gt.shape == mixture.shape == expert_img.shape:
            raise _Missing(f"view {key}: sizes differ (ground truth {gt.shape}, mixture {mixture.shape}, "
                           f"{expert.model} {expert_img.shape})")
        out.append(_View(key, gt, expert_img, mixture, expert_pv.get(key), mixture_pv.get(key)))
    return out


def _per_view_psnr(record: Path | None) -> dict[str, float]:
    """``metrics.per_view`` PSNR of a results record by view key (empty when unreadable)."""
    if record is None:
        return {}
    try:
        views = read_record(record).metrics.per_view
    except (ResultsError, OSError):
        return {}
    return {str(v["key"]): float(v["psnr"]) for v in views if v.get("key") is not None and v.get("psnr") is not None}


def _baseline_per_view(record: Path | None, expert: str) -> dict[str, float]:
    """An expert's per-view PSNR as the mixture's record evaluated it (``extra.baselines.per_view``)."""
    if record is None:
        return {}
    try:
        views = (read_record(record).extra.get("baselines") or {}).get("per_view") or []
    except (ResultsError, OSError):
        return {}
    field = f"{expert}_psnr"
    return {str(v["key"]): float(v[field]) for v in views if v.get("key") is not None and v.get(field) is not None}


def _expert_folder(run_dir: Path, expert: str) -> Path:
    path = run_dir / "experts.json"
    try:
        folder = json.loads(path.read_text())[expert]["folder"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Missing(f"{path}: no folder recorded for expert {expert} ({type(exc).__name__})") from None
    if not Path(folder).is_dir():
        raise _Missing(f"expert folder {folder} of {expert} is gone")
    return Path(folder)


def _read_image(path: Path) -> np.ndarray:
    """``[H, W, 3]`` float in [0, 1] from a PNG (alpha dropped)."""
    if not path.is_file():
        raise _Missing(f"no render {path} (the run saved no test renders?)")
    try:
        return _as_float_image(iio.imread(path), str(path))
    except (OSError, ValueError) as exc:
        raise _Missing(f"{path}: unreadable ({exc})") from None


def _as_float_image(image: Any, what: str) -> np.ndarray:
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise _Missing(f"{what}: expected an [H, W, 3] image, got shape {arr.shape}")
    arr = arr[..., :3]  # [H, W, 3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def _call_ground_truth(truth: GroundTruth, key: str) -> Any:
    try:
        return truth(key)
    except _Missing:
        raise
    except (UserInputError, OSError, KeyError) as exc:
        raise _Missing(f"ground truth of {key}: {exc}") from None


def _scene_ground_truth(run: Entry, cache_dir: Path | None) -> GroundTruth:
    """The test images of ``run``'s scene, opened on first use at the run's downscale and frames."""
    opened: dict[str, Any] = {}

    def load(key: str) -> Any:
        if "scene" not in opened:
            opened["scene"] = _open_run_scene(run, cache_dir)
        scene = opened["scene"]
        frame = next((f for f in scene.test if f.key == key), None)
        if frame is None:
            raise _Missing(f"test view {key} is not in scene {run.scene}")
        return scene.image(frame)

    return load


def _open_run_scene(run: Entry, cache_dir: Path | None) -> Any:
    from moegs_bench.data import open_scene  # (imports the dataset loaders only when needed)

    scene_cfg: dict[str, Any] = {}
    if run.run_dir is not None and (run.run_dir / "run.json").is_file():
        try:
            scene_cfg = json.loads((run.run_dir / "run.json").read_text()).get("scene") or {}
        except (OSError, ValueError, AttributeError):
            scene_cfg = {}
    frames = scene_cfg.get("frames")
    try:
        scene, _ = open_scene(run.scene, cache_dir=cache_dir, downscale=scene_cfg.get("downscale"),
                              frame_range=tuple(frames) if frames else None)
    except (UserInputError, OSError) as exc:
        raise _Missing(f"dataset {run.scene} cannot be opened: {exc}") from None
    used = _dataset_size(run.record)
    state = scene.state.to_dict() or {}
    found = (state.get("files"), state.get("bytes"))
    if used is not None and found != used:  # (e.g. a synthetic scene generated again by other code)
        raise _Missing(f"dataset {run.scene} is not the one the run used ({found[0]} files, {found[1]} bytes; "
                       f"the run's: {used[0]} files, {used[1]} bytes)")
    return scene


def _dataset_size(record: Path | None) -> tuple[int, int] | None:
    """``(files, bytes)`` of the dataset a run's record names (``extra.dataset``; its digest also
    covers modification times, which a dataset generated again does not share), if recorded."""
    try:
        data = (read_record(record).extra.get("dataset") or {}) if record is not None else {}
    except ResultsError:
        return None
    files, size = data.get("files"), data.get("bytes")
    return (files, size) if isinstance(files, int) and isinstance(size, int) else None


def _crops_figure(views: Sequence[_View], expert: str) -> MplFigure:
    """Rows: per view the full images, then (large images) a row zoomed on :func:`_zoom_window`;
    columns: ground truth, expert, mixture, expert error, mixture error (one shared error scale)."""
    errors = [(error_map(v.expert, v.truth), error_map(v.mixture, v.truth)) for v in views]  # [H, W] pairs
    vmax = max(float(max(e.max(), m.max())) for e, m in errors) or 1.0
    zooms = [_zoom_window(e, m) for e, m in errors]
    h, w = views[0].truth.shape[:2]
    nrows = len(views) + sum(z is not None for z in zooms)
    fig = new_figure(TWO_COLUMNS, nrows * (TWO_COLUMNS / 5.4) * (h / w) + 0.55)
    axes = iter(fig.subplots(nrows, 5, squeeze=False))
    scale = max(1, math.ceil(MIN_PANEL_PX / h))
    image = None
    for view, (err_e, err_m), zoom in zip(views, errors, zooms):
        panels = [(view.truth, "Ground truth"), (view.expert, f"{expert}{_db(view.expert_psnr)}"),
                  (view.mixture, f"MoE-GS{_db(view.mixture_psnr)}"), (err_e, f"|error| {expert}"),
                  (err_m, "|error| MoE-GS")]
        image = _draw_row(next(axes), panels, view.key, None, zoom, scale, vmax)
        if zoom is not None:
            image = _draw_row(next(axes), panels, f"{view.key} (zoom)", zoom, None, scale, vmax)
    fig.colorbar(image, ax=fig.axes[3::5] + fig.axes[4::5], shrink=0.8, label="|error|")
    return fig


def _zoom_window(err_expert: np.ndarray, err_mixture: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(row, col, height, width)`` of the half-height, half-width window where the expert's error
    exceeds the mixture's most; ``None`` for images too small to need a zoom."""
    h, w = err_expert.shape
    if min(h, w) < ZOOM_MIN_PX:
        return None
    y, x = best_window(err_expert - err_mixture, h // 2, w // 2)
    return y, x, h // 2, w // 2


def _draw_row(axes: Sequence[Any], panels: Sequence[tuple[np.ndarray, str]], label: str,
              window: tuple[int, int, int, int] | None, outline: tuple[int, int, int, int] | None, scale: int,
              vmax: float) -> Any:
    """One row of panels (cut to ``window``, with ``outline`` drawn); returns the last image drawn."""
    image = None
    for ax, (pixels, title) in zip(axes, panels):
        image = ax.imshow(_upscale(_cut(pixels, window), scale), interpolation="nearest", cmap=ERROR_CMAP,
                          vmin=0.0, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if window is None:
            ax.set_title(title, fontsize=7)
        if outline is not None:
            y, x, h, w = outline
            ax.add_patch(Rectangle((x * scale - 0.5, y * scale - 0.5), w * scale, h * scale, fill=False,
                                   edgecolor="white", linewidth=0.8))
    axes[0].set_ylabel(label, fontsize=7)
    return image


def _cut(pixels: np.ndarray, window: tuple[int, int, int, int] | None) -> np.ndarray:
    if window is None:
        return pixels
    y, x, h, w = window
    return pixels[y:y + h, x:x + w]


def _upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``[H, W, ...]`` by an integer factor."""
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)  # [H*s, W*s, ...]


def _db(value: float | None) -> str:
    return "" if value is None else f" ({value:.2f} dB)"


def _crops_caption(run: Entry, expert: Entry, views: Sequence[_View], chosen: bool) -> str:
    gains = [f"{v.key} ({v.mixture_psnr - v.expert_psnr:+.2f} dB)" if v.mixture_psnr is not None
             and v.expert_psnr is not None else v.key for v in views]
    why = ", the test view where MoE-GS gains most over its best expert" if chosen else ""
    return (f"MoE-GS on {run.scene_name} mixing {', '.join(run.experts)} (seed {run.seed}), test view "
            f"{', '.join(gains)}{why}: ground truth, the best expert ({expert.model}, highest mean PSNR of the run's "
            "experts), the mixture, and the per-pixel absolute error |render - ground truth| averaged over RGB of "
            "both, on one shared colour scale. Titles: PSNR of the view (dB) from the records.")
