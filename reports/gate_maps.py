"""Pictures of MoE-GS gates: which expert wins each pixel, how much weight each expert gets, over time.

Gates are ``[K, H, W]``: one weight per expert per pixel, the ``G_k`` of the blend
``I = sum_k G_k I_k`` (MoE-GS, Jin et al., arXiv 2510.19210, §3.2; README, "The router"). For the
``volume-aware`` and ``pixel`` routers they are a softmax over the K experts (each pixel's
weights sum to 1); for the ``volume`` router they are the splatted per-Gaussian weights
themselves, ``G_k = W_k``, with no softmax: they need not sum to 1 and may leave [0, 1] (the
heatmaps clip them to their fixed 0..1 scale; the winner is still the argmax). Tensors (any
device) and numpy arrays are both accepted.

- :func:`expert_palette`: the experts' colours, one per id and the same in every figure of a run or
  a report (:mod:`moegs_bench.reports.palette`; distinct within a figure, at most 20 experts).
- :func:`winner_map`: the colour of the winning expert (argmax over K) per pixel.
- :func:`winner_shares`: the fraction of pixels each expert wins.
- :func:`save_gate_figure`: one PNG with the mixture, the winner map with a legend (expert names and
  pixel shares) and one 0..1 heatmap per expert.
- :func:`video_frame` and :func:`write_video`: an H.264 MP4 of the mixture next to its winner map.
  Frames carry no text (no fonts needed); the legend lives in the PNG figure.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import imageio.v2 as iio2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from moegs_bench.errors import InputError
from moegs_bench.io import atomic_write
from moegs_bench.reports.palette import MAX_EXPERTS, expert_rgb

MIN_VIDEO_HEIGHT = 256  # video frames are upscaled to at least this many rows
GAP = 2  # white pixels between the two panels of a video frame
FIGURE_DPI = 150
PANEL_INCHES = 2.6  # width of one figure panel
FIGURE_COLUMNS = 4  # at most this many expert heatmaps per figure row

ArrayLike = Tensor | np.ndarray


def expert_palette(names: Sequence[str]) -> np.ndarray:
    """``[K, 3]`` uint8: the colour of each expert id in ``names`` (:func:`~moegs_bench.reports.palette.expert_rgb`).

    Raises :class:`InputError` (a ``ValueError``) for no names, repeated names or more than 20.
    """
    return expert_rgb(list(names))  # [K, 3]


def winner_shares(gates: ArrayLike) -> np.ndarray:
    """``[K]`` float64: the fraction of pixels each expert wins (sums to 1)."""
    g = _gates_numpy(gates)  # [K, H, W]
    counts = np.bincount(g.argmax(axis=0).ravel(), minlength=g.shape[0])  # [K]
    return counts / counts.sum()


def winner_map(gates: ArrayLike, names: Sequence[str]) -> np.ndarray:
    """``[H, W, 3]`` uint8: the :func:`expert_palette` colour of the expert ``argmax_k gates`` per
    pixel (``names``: the K expert ids, in the gates' order).

    Ties go to the lowest expert index.
    """
    g = _gates_numpy(gates)  # [K, H, W]
    _check_names(names, g.shape[0])
    return expert_palette(names)[g.argmax(axis=0)]  # [H, W, 3]


def _check_names(names: Sequence[str], k: int) -> None:
    if isinstance(names, str) or len(names) != k:
        got = "a str" if isinstance(names, str) else f"{len(names)} names"
        raise InputError(f"names: expected {k} names (one per expert, gates is [K={k}, H, W]), got {got}")


def save_gate_figure(
    path: Path,
    gates: ArrayLike,
    names: Sequence[str],
    *,
    image: ArrayLike | None = None,
    title: str | None = None,
) -> None:
    """Write one PNG to ``path`` (atomically): the mixture ``image`` (when given), the winner map
    with a legend ("name share%"), then each expert's gate as a heatmap on a fixed 0..1 scale
    (values outside it, possible with the ``volume`` router, show as the scale's end colours)."""
    fig = _gate_figure(gates, names, image=image, title=title)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=FIGURE_DPI))


def video_frame(image: ArrayLike, gates: ArrayLike, names: Sequence[str]) -> np.ndarray:
    """``[H', W', 3]`` uint8: the mixture ``image`` (``[H, W, 3]`` float in [0, 1]) left, its winner
    map (``names``: the experts' ids, for their colours) right.

    Both panels are upscaled by the smallest integer nearest-neighbour factor ``s`` with
    ``H * s >= 256`` and separated by a 2 px white gap: the image is ``[:H*s, :W*s]``, the winner map
    ``[:H*s, W*s+2 : 2*W*s+2]``. A white bottom row is added when ``H * s`` is odd, so both sizes
    are even (as H.264 with yuv420p needs). No text is drawn; the legend is in the PNG figure.
    """
    g = _gates_numpy(gates)  # [K, H, W]
    _, h, w = g.shape
    pixels = _image_uint8(image, h, w)  # [H, W, 3]
    scale = max(1, math.ceil(MIN_VIDEO_HEIGHT / h))
    sh, sw = h * scale, w * scale
    frame = np.full((sh + sh % 2, 2 * sw + GAP, 3), 255, dtype=np.uint8)  # [H', W', 3]
    frame[:sh, :sw] = _upscale(pixels, scale)
    frame[:sh, sw + GAP:] = _upscale(winner_map(g, names), scale)
    return frame


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = 10) -> int:
    """Write ``frames`` (uint8 ``[H, W, 3]``, all one even size) to ``path`` as an H.264 MP4
    (yuv420p) with the ffmpeg that imageio-ffmpeg ships; atomic. Returns the number of frames."""
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise InputError(f"fps: expected a positive int, got {fps!r}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise InputError("frames: expected at least one frame, got none")
    shape = _check_frame(0, first, None)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        writer = iio2.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,  # the sizes are already even; never let imageio resize
            ffmpeg_log_level="error",
            output_params=["-f", "mp4"],  # the container does not depend on the file name
        )
        # Not ``with writer``: imageio's legacy writer skips close() when the block raises, which
        # leaves ffmpeg running and re-creating the temporary file after atomic_write removed it.
        try:
            writer.append_data(first)
            count = 1
            for i, frame in enumerate(it, start=1):
                _check_frame(i, frame, shape)
                writer.append_data(frame)
                count += 1
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()  # wait for ffmpeg to exit before the temporary file is removed
            raise
        writer.close()

    atomic_write(Path(path), write)
    return count


# --- helpers ------------------------------------------------------------------------------------


def _gate_figure(
    gates: ArrayLike,
    names: Sequence[str],
    *,
    image: ArrayLike | None = None,
    title: str | None = None,
) -> Figure:
    """The figure :func:`save_gate_figure` writes (Agg canvas, no pyplot state)."""
    g = _gates_numpy(gates)  # [K, H, W]
    k, h, w = g.shape
    _check_names(names, k)
    pixels = None if image is None else _image_uint8(image, h, w)  # [H, W, 3]

    palette = expert_palette(names)  # [K, 3]
    shares = winner_shares(g)  # [K]
    top = (0 if pixels is None else 1) + 2  # image?, winner map, legend
    ncols = max(top, min(k, FIGURE_COLUMNS))
    nrows = 1 + math.ceil(k / ncols)
    aspect = min(max(h / w, 0.25), 4.0)
    fig = Figure(
        figsize=(ncols * PANEL_INCHES, nrows * (PANEL_INCHES * aspect + 0.6)),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(nrows, ncols)

    col = 0
    if pixels is not None:
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title("mixture")
        ax.set_axis_off()
        col += 1
    ax = fig.add_subplot(grid[0, col])
    ax.imshow(winner_map(g, names), interpolation="nearest")
    ax.set_title("winning expert")
    ax.set_axis_off()
    legend_ax = fig.add_subplot(grid[0, col + 1:])
    legend_ax.set_axis_off()
    handles = [
        Patch(facecolor=palette[i] / 255.0, edgecolor="black", label=f"{names[i]} {shares[i]:.0%}")
        for i in range(k)
    ]
    legend_ax.legend(handles=handles, loc="center left", frameon=False, ncols=math.ceil(k / 10))

    for i in range(k):
        ax = fig.add_subplot(grid[1 + i // ncols, i % ncols])
        im = ax.imshow(g[i], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(names[i])
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title is not None:
        fig.suptitle(title)
    return fig


def _to_numpy(name: str, value: object) -> np.ndarray:
    """A floating tensor or numpy array as finite float32 numpy; :class:`InputError` otherwise."""
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise InputError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
        arr = value.detach().to("cpu", torch.float32).numpy()
    elif isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise InputError(f"{name}: expected a floating-point array, got dtype {value.dtype}")
        arr = value.astype(np.float32, copy=False)
    else:
        raise InputError(f"{name}: expected a torch.Tensor or numpy array, got {type(value).__name__}")
    if arr.size and not np.isfinite(arr).all():
        raise InputError(f"{name}: contains {int((~np.isfinite(arr)).sum())} NaN/Inf value(s)")
    return arr


def _gates_numpy(gates: object) -> np.ndarray:
    """Validated gates as float32 numpy ``[K, H, W]`` with K, H, W >= 1."""
    g = _to_numpy("gates", gates)
    if g.ndim != 3 or min(g.shape) < 1:
        raise InputError(f"gates: expected shape [K, H, W] with K, H, W >= 1, got {tuple(g.shape)}")
    if g.shape[0] > MAX_EXPERTS:
        raise InputError(f"gates: at most {MAX_EXPERTS} experts can be coloured, got K={g.shape[0]}")
    return g


def _image_uint8(image: object, h: int, w: int) -> np.ndarray:
    """Validated ``[H, W, 3]`` float image in [0, 1] as uint8, clamped and rounded like
    :func:`moegs_bench.io.image_to_uint8`."""
    arr = _to_numpy("image", image)
    if arr.shape != (h, w, 3):
        raise InputError(f"image: expected shape [{h}, {w}, 3] (H, W of gates), got {tuple(arr.shape)}")
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)  # [H, W, 3]


def _upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``[H, W, C]`` by an integer factor."""
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)  # [H*s, W*s, C]


def _check_frame(i: int, frame: object, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """Check video frame ``i`` (uint8 ``[H, W, 3]``, even H and W, equal to ``shape`` when given)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(f"frames[{i}]: expected a uint8 numpy array [H, W, 3], got {got}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"frames[{i}]: expected shape [H, W, 3], got {tuple(frame.shape)}")
    if shape is None:
        if frame.shape[0] % 2 or frame.shape[1] % 2 or min(frame.shape[:2]) < 2:
            raise InputError(
                f"frames[{i}]: expected even H and W (H.264 yuv420p), got {tuple(frame.shape)}"
            )
    elif frame.shape != shape:
        raise InputError(f"frames[{i}]: expected shape {list(shape)} like frames[0], got {tuple(frame.shape)}")
    return tuple(frame.shape)
