"""Publication plots of report entries (:mod:`moegs_bench.reports.records`): PDF (vector) + PNG.

Every plot has three layers:

- a pure function that computes what is plotted from the entries (``*_series`` / ``*_points``:
  numbers only, tested by hand-computed cases);
- a drawing function that turns those numbers into a :class:`matplotlib.figure.Figure` (``*_figure``:
  Agg canvas, no pyplot, no global style: the paper style is an ``rc_context``);
- the public function that writes ``<stem>.pdf`` and ``<stem>.png`` and returns a :class:`Plot`,
  or ``None`` (and writes nothing) when the entries hold nothing to plot.

A figure that an entry lacks (``None``) is left out, never drawn as 0. Reruns on the same entries
write byte-identical files (no timestamps, no software names in the metadata).

Styles (:func:`model_styles`): an expert's colour is fixed by its id (:mod:`moegs_bench.reports.palette`,
seaborn's colour-blind palette), so an expert looks the same in every figure, the runs' gate maps included;
MoE-GS is black with a star, the uniform average grey dashed, the oracle light grey dotted. Each
expert also has its own marker, line style and bar hatch, for black-and-white print.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from moegs_bench.errors import UserInputError
from moegs_bench.reports.palette import COLORS, MAX_EXPERTS, expert_colors
from moegs_bench.io import atomic_write
from moegs_bench.reports.records import Entry

__all__ = [
    "GatePanel", "Line", "PerFrame", "Plot", "Point", "PrunePanel", "Style", "TradeoffPanel", "distill_gain_vs_lam",
    "distill_series", "gate_share", "gate_share_series", "model_styles", "new_figure", "paper_style", "pareto_front",
    "per_frame_of_run", "per_frame_psnr", "per_frame_series", "prune_series", "psnr_vs_prune_ratio",
    "quality_vs_fps", "quality_vs_storage", "report_styles", "run_label", "run_names", "safe_name",
    "tradeoff_points", "write_figure", "write_plots",
]

ONE_COLUMN = 3.3  # inches: one column of a two-column paper
TWO_COLUMNS = 6.9  # inches: the full text width
PNG_DPI = 200
PDF_METADATA: dict[str, Any] = {"CreationDate": None, "Producer": None, "Creator": None}
PNG_METADATA: dict[str, Any] = {"Software": None}
PAPER_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7, "lines.linewidth": 1.2,
    "lines.markersize": 4, "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.6,
    "pdf.fonttype": 42, "hatch.linewidth": 0.5, "svg.hashsalt": "moegs-bench",
}

MIXTURE, AVERAGE, ORACLE, PRUNED = "MoE-GS", "Average", "Oracle", "MoE-GS (pruned)"
ORACLE_LABEL = "Oracle (bound, uses GT)"
PSNR_LABEL = "PSNR (dB)"
_DERIVED = re.compile(r"^(?P<expert>.+) \((?P<kind>distilled|GT baseline)\)$")

LineStyle = str | tuple[float, tuple[float, ...]]


# ------------------------------------------------------------------------------------ styles


@dataclass(frozen=True)
class Style:
    """How one model is drawn: colour (``#rrggbb``), marker, line style and bar hatch."""

    color: str
    marker: str
    linestyle: LineStyle
    hatch: str = ""

    def line_kwargs(self) -> dict[str, Any]:
        return {"color": self.color, "marker": self.marker or None, "linestyle": self.linestyle}


FIXED_STYLES: dict[str, Style] = {
    MIXTURE: Style("#000000", "*", "-"),
    PRUNED: Style("#000000", "P", (0, (4, 1.5, 1, 1.5))),
    AVERAGE: Style("#7f7f7f", "d", "--"),
    ORACLE: Style("#b0b0b0", "1", ":"),
}
_MARKERS = ("o", "s", "^", "v", "D", "X", "<", ">", "h", "p")
_LINESTYLES: tuple[LineStyle, ...] = ("-", (0, (5, 1.5)), (0, (1.5, 1.5)), (0, (5, 1.5, 1.5, 1.5)),
                                      (0, (3, 1, 1, 1, 1, 1)))
_HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "++++", "oooo", "----", "||||", "****")
_CRITERIA_PALETTE = "Dark2"  # prune criteria: not models, kept apart from the experts' colours


def _expert_colors(experts: Sequence[str]) -> list[str]:
    """The experts' colours: the same per id as in the runs' gate maps and videos
    (:func:`moegs_bench.reports.palette.expert_colors`); past its 20 experts, the palette repeats
    (markers, line styles and hatches still differ)."""
    if len(experts) <= MAX_EXPERTS:
        colors = expert_colors(experts)
        return [colors[x] for x in experts]
    return [COLORS[i % len(COLORS)] for i in range(len(experts))]


def model_styles(names: Iterable[str]) -> dict[str, Style]:
    """A :class:`Style` for every name (an expert id or a model label).

    Expert ids get their colour by id (:mod:`moegs_bench.reports.palette`, as in the runs' gate maps)
    and marker, line style and hatch by their position in the sorted list of
    the expert ids among ``names`` (derived labels "<id> (distilled)" / "<id> (GT baseline)" count
    their id): pass every name of a report (:func:`report_styles`) and an expert looks the same in
    all its figures. A student keeps its expert's colour (distilled: diamond, dash-dot; GT
    baseline: cross, dotted). "MoE-GS", "MoE-GS (pruned)", "Average" and "Oracle" are fixed."""
    names = list(dict.fromkeys(names))
    experts: set[str] = set()
    for name in names:
        if name in FIXED_STYLES:
            continue
        match = _DERIVED.match(name)
        experts.add(match["expert"] if match else name)
    ordered = sorted(experts)
    colors = _expert_colors(ordered)
    styles = {e: Style(colors[i], _MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)],
                       _HATCHES[i % len(_HATCHES)]) for i, e in enumerate(ordered)}
    out: dict[str, Style] = {}
    for name in [*names, *ordered]:
        match = _DERIVED.match(name)
        if name in FIXED_STYLES:
            out[name] = FIXED_STYLES[name]
        elif match and name not in styles:
            base = styles[match["expert"]]
            distilled = match["kind"] == "distilled"
            out[name] = Style(base.color, "D" if distilled else "x", (0, (4, 1, 1, 1)) if distilled else ":",
                              base.hatch)
        else:
            out[name] = styles[name]
    return out


def report_styles(entries: Iterable[Entry]) -> dict[str, Style]:
    """:func:`model_styles` of every model label and expert id in ``entries``."""
    entries = list(entries)
    return model_styles([*(e.model for e in entries), *(x for e in entries for x in e.experts)])


def _criterion_styles(criteria: Sequence[str]) -> dict[str, Style]:
    colors = [to_hex(c) for c in matplotlib.colormaps[_CRITERIA_PALETTE].colors]
    return {c: Style(colors[i % len(colors)], _MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)])
            for i, c in enumerate(sorted(criteria))}


# ------------------------------------------------------------------------------------ names


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``-`` (file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text).strip(".") or "plot"


def run_label(entry: Entry) -> str:
    """A run as people read it: ``kitchen: 4dgs+e-d3dgs``."""
    return f"{entry.scene_name}: {'+'.join(entry.experts)}"


def run_names(runs: Sequence[Entry], prefix: str) -> list[str]:
    """One unique, ASCII-safe file name per run: ``<prefix>_<scene name>_<experts joined by ->``,
    then ``_seed<k>`` when the scene and experts repeat, then ``_2``, ``_3`` ... when still equal."""
    base = [safe_name(f"{prefix}_{r.scene_name}_{'-'.join(r.experts)}") for r in runs]
    return _numbered([f"{b}_seed{r.seed}" if base.count(b) > 1 else b for b, r in zip(base, runs)], "_{}")


def _numbered(names: Sequence[str], suffix: str) -> list[str]:
    """``names`` with the 2nd, 3rd ... repeat of a name given ``suffix.format(2)``, ``(3)`` ..."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else name + suffix.format(seen[name]))
    return out


def _varying(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each settings mapping, ``"k=v, ..."`` of the keys whose values differ across the list
    (``""`` when none do): what tells apart lines or panels that share a name."""
    keys = sorted({k for s in settings for k in s})
    differ = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]
    return [", ".join(f"{k.split('.')[-1]}={s.get(k)}" for k in differ) for s in settings]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


# ------------------------------------------------------------------------------------ output


@dataclass(frozen=True)
class Plot:
    """A written plot: its name (the file stem), a caption and its two files."""

    name: str
    title: str  # caption text: what is shown, units, how points are aggregated
    pdf: Path
    png: Path


@contextmanager
def paper_style() -> Iterator[None]:
    """Seaborn's ``ticks`` style with 7-8 pt fonts, only inside the block (rcParams restored)."""
    with matplotlib.rc_context({**sns.axes_style("ticks"), **PAPER_RC}):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas (no pyplot state); width, height in inches."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grid(fig: Figure, n: int, ncols: int) -> list[Axes]:
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_axis_off()
    return axes[:n]


def write_figure(stem: Path, title: str, draw: Callable[[], Figure]) -> Plot:
    """Draw (inside :func:`paper_style`) and write ``stem.pdf`` and ``stem.png``, atomically and
    without timestamps."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png = stem.with_name(stem.name + ".pdf"), stem.with_name(stem.name + ".png")
    with paper_style():
        fig = draw()
        atomic_write(pdf, lambda tmp: fig.savefig(tmp, format="pdf", metadata=PDF_METADATA))
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=PNG_DPI, metadata=PNG_METADATA))
    return Plot(name=stem.name, title=title, pdf=pdf, png=png)


def _legend_below(fig: Figure, handles: Sequence[Any]) -> None:
    """A frameless legend under the axes: 2 columns on a one-column figure, 5 on a wide one."""
    if handles:
        ncols = 2 if fig.get_figwidth() < 4 else 5
        fig.legend(handles=list(handles), loc="outside lower center", ncols=min(ncols, len(handles)),
                   frameon=False, handlelength=2.2)


def _line_handle(label: str, style: Style, *, marker: bool = True) -> Line2D:
    kw = style.line_kwargs()
    if not marker:
        kw["marker"] = None
    return Line2D([], [], label=label, **kw)


# ------------------------------------------------------------------------------------ Pareto


def pareto_front(xs: Sequence[float], ys: Sequence[float], *, x_higher_better: bool) -> list[int]:
    """Indices of the points no other point dominates (higher ``y`` is better; higher or lower
    ``x`` as said), sorted by ``x`` ascending (ties by index).

    ``q`` dominates ``p`` when it is at least as good in both and better in one; equal points do
    not dominate each other (both are on the front)."""
    if len(xs) != len(ys):
        raise UserInputError(f"pareto_front: {len(xs)} x values but {len(ys)} y values")
    sign = 1.0 if x_higher_better else -1.0
    order = sorted(range(len(xs)), key=lambda i: (-sign * xs[i], -ys[i], i))  # best x first
    front: list[int] = []
    best_y = -math.inf
    start = 0
    while start < len(order):  # groups of equal x, best x first
        end = start
        while end < len(order) and xs[order[end]] == xs[order[start]]:
            end += 1
        group = order[start:end]
        top = ys[group[0]]
        if top > best_y:
            front.extend(i for i in group if ys[i] == top)
            best_y = top
        start = end
    return sorted(front, key=lambda i: (xs[i], i))


# ------------------------------------------------------------------------ quality trade-offs

TRADEOFF_ROLES = ("expert", "mixture", "pruned", "distilled")
Axis = Literal["fps", "storage_mb"]


@dataclass(frozen=True)
class Point:
    """One model configuration on one scene: its figures averaged over ``seeds`` seeds."""

    model: str
    experts: tuple[str, ...]
    settings: tuple[tuple[str, Any], ...]
    x: float
    psnr: float
    seeds: int


@dataclass(frozen=True)
class TradeoffPanel:
    scene: str
    points: tuple[Point, ...]
    front: tuple[int, ...]  # indices into points, x ascending


def tradeoff_points(entries: Iterable[Entry], axis: Axis) -> list[TradeoffPanel]:
    """Per scene (sorted), one :class:`Point` per (model, experts, settings): PSNR and ``axis``
    (``fps`` or ``storage_mb``) averaged over the seeds that have both; entries of other roles or
    missing either figure are left out. The front: higher PSNR and higher FPS / lower storage."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for e in entries:
        x = getattr(e, axis)
        if e.role in TRADEOFF_ROLES and e.psnr is not None and x is not None:
            groups.setdefault((e.scene, e.model, e.experts, e.settings), []).append((float(x), float(e.psnr)))
    panels = []
    for scene in sorted({k[0] for k in groups}):
        points = tuple(Point(model=m, experts=ex, settings=s, x=_mean(v[0] for v in vals),
                             psnr=_mean(v[1] for v in vals), seeds=len(vals))
                       for (sc, m, ex, s), vals in groups.items() if sc == scene)
        front = pareto_front([p.x for p in points], [p.psnr for p in points], x_higher_better=axis == "fps")
        panels.append(TradeoffPanel(scene=scene, points=points, front=tuple(front)))
    return panels


_AXIS_TEXT = {"fps": ("Render speed (FPS)", "render speed (FPS)"), "storage_mb": ("Storage (MB)", "storage (MB)")}


def tradeoff_figure(panels: Sequence[TradeoffPanel], axis: Axis, styles: Mapping[str, Style]) -> Figure:
    """PSNR over ``axis``, one panel per scene; the Pareto front as a grey step line. When a panel
    holds several expert sets of MoE-GS, each MoE-GS point is labelled with its number of experts."""
    ncols = min(len(panels), 3)
    fig = new_figure(ONE_COLUMN if ncols == 1 else TWO_COLUMNS, 2.3 * math.ceil(len(panels) / ncols) + 0.5)
    handles: dict[str, Any] = {}
    for ax, panel in zip(_grid(fig, len(panels), ncols), panels):
        front = [panel.points[i] for i in panel.front]
        line = ax.plot([p.x for p in front], [p.psnr for p in front], color="0.55", linewidth=0.8, zorder=1,
                       drawstyle="steps-pre" if axis == "fps" else "steps-post", label="Pareto front")[0]
        handles.setdefault("Pareto front", line)
        for model in sorted({p.model for p in panel.points}, key=_model_order):
            pts = [p for p in panel.points if p.model == model]
            style = styles[model]
            drawn = ax.plot([p.x for p in pts], [p.psnr for p in pts], linestyle="none", marker=style.marker,
                            color=style.color, markersize=6 if style.marker == "*" else 4, label=model, zorder=3)
            handles.setdefault(model, drawn[0])
            if len({p.experts for p in pts}) > 1:
                for p in pts:
                    ax.annotate(str(len(p.experts)), (p.x, p.psnr), xytext=(3, 2), textcoords="offset points",
                                fontsize=6)
        xs = [p.x for p in panel.points]
        if axis == "fps" and min(xs) > 0 and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
        ax.set_title(panel.scene)
        ax.set_xlabel(_AXIS_TEXT[axis][0])
        ax.set_ylabel(PSNR_LABEL)
    _legend_below(fig, [handles[k] for k in sorted(handles, key=_model_order)])
    return fig


def _model_order(name: str) -> tuple[int, str]:
    """Experts first (by id), then the derived and fixed labels."""
    fixed = ["Pareto front", MIXTURE, PRUNED, AVERAGE, ORACLE]
    if name in fixed:
        return (2 + fixed.index(name), name)
    return (1 if _DERIVED.match(name) else 0, name)


def _tradeoff(entries: Iterable[Entry], stem: Path, axis: Axis, styles: Mapping[str, Style] | None) -> Plot | None:
    entries = list(entries)
    panels = tradeoff_points(entries, axis)
    if not panels:
        return None
    styles = styles or report_styles(entries)
    better = "higher FPS" if axis == "fps" else "lower storage"
    models = {p.model for panel in panels for p in panel.points}
    extra = sorted(m for m in models if m == PRUNED or _DERIVED.match(m))
    several = any(len({p.experts for p in panel.points if p.model == MIXTURE}) > 1 for panel in panels)
    title = (f"PSNR (dB) against {_AXIS_TEXT[axis][1]}, one panel per scene: one point per model and configuration "
             f"(experts, MoE-GS{''.join(', ' + m for m in extra)}), averaged over seeds. Grey step line: the Pareto "
             f"front (higher PSNR and {better} are better)."
             + (" Numbers beside MoE-GS points: how many experts are mixed." if several else "")
             + (" Storage in MB = 2^20 bytes, as in the 3DGS literature." if axis == "storage_mb" else ""))
    return write_figure(stem, title, lambda: tradeoff_figure(panels, axis, styles))


def quality_vs_fps(entries: Iterable[Entry], stem: Path, *, styles: Mapping[str, Style] | None = None) -> Plot | None:
    """PSNR against render speed (FPS; log scale when it spans more than 10x), one panel per scene,
    with the Pareto front (:func:`tradeoff_points`)."""
    return _tradeoff(entries, stem, "fps", styles)


def quality_vs_storage(entries: Iterable[Entry], stem: Path, *,
                       styles: Mapping[str, Style] | None = None) -> Plot | None:
    """PSNR against storage (MB = MiB), one panel per scene, with the Pareto front."""
    return _tradeoff(entries, stem, "storage_mb", styles)


# ------------------------------------------------------------------------------- line series


@dataclass(frozen=True)
class Line:
    """One plotted curve: ``ys[i]`` at ``xs[i]`` (x ascending), drawn in ``styles[style]``."""

    label: str
    style: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]


def _mean_line(label: str, style: str, pairs: Iterable[tuple[float, float]]) -> Line:
    """The mean of ``y`` per ``x``, x ascending."""
    by_x: dict[float, list[float]] = {}
    for x, y in pairs:
        by_x.setdefault(float(x), []).append(float(y))
    xs = tuple(sorted(by_x))
    return Line(label=label, style=style, xs=xs, ys=tuple(_mean(by_x[x]) for x in xs))


def _draw_line(ax: Axes, line: Line, style: Style, **kw: Any) -> Line2D:
    return ax.plot(line.xs, line.ys, label=line.label, **{**style.line_kwargs(), **kw})[0]


# ------------------------------------------------------------------------------------ pruning


@dataclass(frozen=True)
class PrunePanel:
    title: str  # scene: experts (and the router settings that tell panels apart)
    lines: tuple[Line, ...]  # one per criterion (and other prune settings when they vary); style: criterion
    reference: float | None  # the unpruned mixture's PSNR (mean over its seeds), when present


_PRUNE_AVERAGED = ("prune.ratio", "prune.threshold", "prune.seed")


def prune_series(entries: Iterable[Entry]) -> list[PrunePanel]:
    """Pruned mixtures with a ``prune.ratio`` and a PSNR, one panel per (scene, experts, router
    settings): PSNR per ratio averaged over seeds, one line per ``prune.criterion`` (split further
    by other prune settings when they differ, e.g. ``finetune_steps``). The reference is the mean
    PSNR of the mixtures of the same scene and experts and, when any match, the same settings."""
    entries = list(entries)
    pruned = [e for e in entries if e.role == "pruned" and e.psnr is not None and e.setting("prune.ratio") is not None]
    keys = sorted({(e.scene, e.experts, _base_settings(e)) for e in pruned}, key=repr)
    titles = _varying([dict(k[2]) for k in keys])
    panels = []
    for key, extra in zip(keys, titles):
        scene, experts, base = key
        members = [e for e in pruned if (e.scene, e.experts, _base_settings(e)) == key]
        line_keys = sorted({_prune_line_key(e) for e in members}, key=repr)
        labels = _varying([{k: v for k, v in lk if k != "prune.criterion"} for lk in line_keys])
        lines = []
        for lk, suffix in zip(line_keys, labels):
            criterion = str(dict(lk).get("prune.criterion"))
            lines.append(_mean_line(f"{criterion} ({suffix})" if suffix else criterion, criterion,
                                    ((e.setting("prune.ratio"), e.psnr) for e in members if _prune_line_key(e) == lk)))
        title = f"{scene.split(':', 1)[-1]}: {'+'.join(experts)}" + (f" ({extra})" if extra else "")
        reference = _unpruned_psnr(entries, scene, experts, base)
        panels.append(PrunePanel(title=title, lines=tuple(lines), reference=reference))
    return panels


def _base_settings(e: Entry) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in e.settings if not k.startswith("prune."))


def _prune_line_key(e: Entry) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in e.settings if k.startswith("prune.") and k not in _PRUNE_AVERAGED)


def _unpruned_psnr(entries: Sequence[Entry], scene: str, experts: tuple[str, ...], base: tuple) -> float | None:
    same = [e for e in entries if e.role == "mixture" and e.scene == scene and e.experts == experts
            and e.psnr is not None]
    exact = [e for e in same if e.settings == base]
    chosen = exact or (same if len({e.settings for e in same}) == 1 else [])
    return _mean(e.psnr for e in chosen) if chosen else None  # type: ignore[misc]


def prune_figure(panels: Sequence[PrunePanel]) -> Figure:
    """PSNR over the pruned fraction, one line per criterion, the unpruned mixture as a black
    horizontal line."""
    styles = _criterion_styles(sorted({ln.style for p in panels for ln in p.lines}))
    ncols = min(len(panels), 2)
    fig = new_figure(ONE_COLUMN if ncols == 1 else TWO_COLUMNS, 2.2 * math.ceil(len(panels) / ncols) + 0.5)
    handles: dict[str, Any] = {}
    for ax, panel in zip(_grid(fig, len(panels), ncols), panels):
        for line in panel.lines:
            handles.setdefault(line.label, _draw_line(ax, line, styles[line.style]))
        if panel.reference is not None:
            ref = ax.axhline(panel.reference, color="black", linewidth=0.9, label="MoE-GS (unpruned)")
            handles.setdefault("MoE-GS (unpruned)", ref)
        ax.set_title(panel.title)
        ax.set_xlabel("Pruned fraction of each expert's Gaussians")
        ax.set_ylabel(PSNR_LABEL)
    _legend_below(fig, list(handles.values()))
    return fig


def psnr_vs_prune_ratio(entries: Iterable[Entry], stem: Path) -> Plot | None:
    """PSNR of pruned mixtures over the pruning ratio (:func:`prune_series`)."""
    panels = prune_series(entries)
    if not panels:
        return None
    title = ("PSNR (dB) of pruned MoE-GS mixtures against the fraction of each expert's Gaussians removed, one "
             "line per pruning criterion (mean over seeds), one panel per scene and expert set; black line: the "
             "unpruned mixture.")
    return write_figure(stem, title, lambda: prune_figure(panels))


# ------------------------------------------------------------------------------- distillation

_DISTILL_MATCH = ("distill.steps", "distill.from_scratch")


def distill_series(entries: Iterable[Entry]) -> list[Line]:
    """The PSNR gain of each distilled student over its ground-truth baseline, per ``distill.lam``:
    ``student PSNR - baseline PSNR`` where the baseline is the ``distill-baseline`` entry of the
    same student, scene and seed with the same ``distill.steps`` and ``distill.from_scratch``
    (the mean when several match); averaged over the scenes and seeds of each lam. One line per
    student (split by steps / from_scratch when they differ). Students without a baseline are
    left out."""
    entries = list(entries)
    baselines: dict[tuple, list[float]] = {}
    for e in entries:
        if e.role == "distill-baseline" and e.psnr is not None:
            baselines.setdefault(_distill_key(e), []).append(e.psnr)
    gains: list[tuple[tuple, float, float]] = []  # (line key, lam, gain)
    for e in entries:
        lam = e.setting("distill.lam")
        base = baselines.get(_distill_key(e))
        if e.role == "distilled" and e.psnr is not None and lam is not None and base:
            line_key = (e.experts[0], *((k, e.setting(k)) for k in _DISTILL_MATCH))
            gains.append((line_key, float(lam), e.psnr - _mean(base)))
    keys = sorted({g[0] for g in gains}, key=repr)
    labels = _varying([dict(k[1:]) for k in keys])
    return [_mean_line(f"{k[0]} ({suffix})" if suffix else k[0], k[0], ((lam, g) for kk, lam, g in gains if kk == k))
            for k, suffix in zip(keys, labels)]


def _distill_key(e: Entry) -> tuple:
    return (e.experts, e.scene, e.seed, *(repr(e.setting(k)) for k in _DISTILL_MATCH))


def distill_figure(lines: Sequence[Line], styles: Mapping[str, Style]) -> Figure:
    """PSNR gain over lam, one line per student in its expert's style; a zero line."""
    fig = new_figure(ONE_COLUMN, 2.4)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", linewidth=0.7)
    for line in lines:
        _draw_line(ax, line, styles[line.style])
    ax.set_xlabel("λ (distill.lam, weight of the ground-truth term)")
    ax.set_ylabel("PSNR gain over GT baseline (dB)")
    ax.legend(frameon=False)
    return fig


def distill_gain_vs_lam(entries: Iterable[Entry], stem: Path, *,
                        styles: Mapping[str, Style] | None = None) -> Plot | None:
    """Distilled students' PSNR gain over their same-budget ground-truth baseline against lam."""
    entries = list(entries)
    lines = distill_series(entries)
    if not lines:
        return None
    styles = styles or report_styles(entries)
    title = ("PSNR gain (dB) of each distilled student over its ground-truth baseline (same student, scene, seed, "
             "steps and initialisation) against λ, the weight of the ground-truth term; mean over scenes and "
             "seeds. Above 0: distillation from MoE-GS helps.")
    return write_figure(stem, title, lambda: distill_figure(lines, styles))


# ---------------------------------------------------------------------------------- per frame


@dataclass(frozen=True)
class PerFrame:
    """The per-frame PSNR of one mixture run: its experts, the mixture, the average, the oracle."""

    run: Entry
    lines: tuple[Line, ...]  # style: the model label (an expert id, MoE-GS, Average, Oracle)
    best: tuple[tuple[int, str], ...]  # (frame, the expert with the highest PSNR among the experts)


def per_frame_series(entries: Iterable[Entry], scene: str, experts: Sequence[str], *, seed: int | None = None,
                     run_dir: Path | None = None) -> PerFrame | None:
    """The curves of the mixture run of ``scene`` (spec or name) mixing ``experts`` (any order),
    narrowed by ``seed`` / ``run_dir`` when given; ``None`` when there is no such run (or it has
    no per-frame figures). :class:`UserInputError` when several runs match.

    Experts' curves come from expert entries of the same scene and seed (the one evaluated in the
    run folder when there are several); the average and oracle from the run's baselines. ``best``
    covers the frames every expert curve has."""
    entries = list(entries)
    wanted = sorted(experts)
    runs = [e for e in entries if e.role == "mixture" and scene in (e.scene, e.scene_name)
            and sorted(e.experts) == wanted and (seed is None or e.seed == seed)
            and (run_dir is None or e.run_dir == Path(run_dir))]
    if len(runs) > 1:
        which = "; ".join(f"seed {r.seed} in {r.run_dir}" for r in runs)
        raise UserInputError(f"per-frame PSNR of {scene} with {'+'.join(wanted)}: {len(runs)} mixture runs match "
                             f"({which}); name one by seed or run folder")
    return per_frame_of_run(entries, runs[0]) if runs else None


def per_frame_of_run(entries: Iterable[Entry], run: Entry) -> PerFrame | None:
    """:func:`per_frame_series` of the mixture entry ``run``; ``None`` when it has no per-frame figures."""
    if not run.per_frame:
        return None
    entries = list(entries)
    members = [_run_expert(entries, run, x) for x in run.experts]
    members += [_sibling(entries, run, role) for role in ("average", "oracle")]
    curves = [m for m in members if m is not None and m.per_frame]
    lines = [_frame_line(m.model, m) for m in curves if m.role == "expert"]
    lines.append(_frame_line(MIXTURE, run))
    lines += [_frame_line(ORACLE_LABEL if m.role == "oracle" else m.model, m) for m in curves if m.role != "expert"]
    experts = [ln for ln in lines if ln.style in run.experts]
    return PerFrame(run=run, lines=tuple(lines), best=_best_expert_per_frame(experts))


def _frame_line(label: str, entry: Entry) -> Line:
    return Line(label=label, style=entry.model, xs=tuple(float(f) for f, _ in entry.per_frame),
                ys=tuple(v for _, v in entry.per_frame))


def _run_expert(entries: Sequence[Entry], run: Entry, expert: str) -> Entry | None:
    """The expert entry of ``run``: same scene and seed; the one whose record is in the run folder
    when there are several."""
    found = [e for e in entries if e.role == "expert" and e.model == expert and e.scene == run.scene
             and e.seed == run.seed]
    return min(found, key=lambda e: (e.run_dir != run.run_dir, repr(e.settings))) if found else None


def _sibling(entries: Sequence[Entry], run: Entry, role: str) -> Entry | None:
    """The ``average`` / ``oracle`` entry that ``run``'s record carries."""
    found = [e for e in entries if e.role == role and e.scene == run.scene and e.seed == run.seed
             and e.experts == run.experts and e.settings == run.settings]
    return min(found, key=lambda e: e.record != run.record) if found else None


def _best_expert_per_frame(lines: Sequence[Line]) -> tuple[tuple[int, str], ...]:
    """Per frame that every line has, the label of the line with the highest value (the first on ties)."""
    if not lines:
        return ()
    values = [dict(zip(ln.xs, ln.ys)) for ln in lines]
    frames = sorted(set.intersection(*(set(v) for v in values)))
    return tuple((int(f), lines[int(np.argmax([v[f] for v in values]))].label) for f in frames)


def per_frame_figure(data: PerFrame, styles: Mapping[str, Style]) -> Figure:
    """PSNR over frame index: experts (their styles, no markers), MoE-GS black, average grey
    dashed, the oracle light grey dotted; a strip along the bottom coloured by the best expert."""
    fig = new_figure(ONE_COLUMN, 2.5)
    ax = fig.add_subplot()
    for line in data.lines:
        _draw_line(ax, line, styles[line.style], marker=None, linewidth=1.5 if line.style == MIXTURE else 1.0)
    low, high = ax.get_ylim()
    ax.set_ylim(low - 0.06 * (high - low), high)  # room for the strip
    for start, end, expert in _spans(data.best):
        ax.axvspan(start - 0.5, end + 0.5, ymin=0.0, ymax=0.04, color=styles[expert].color, linewidth=0,
                   alpha=0.9)
    ax.set_title(f"{run_label(data.run)} (seed {data.run.seed})")
    ax.set_xlabel("Frame")
    ax.set_ylabel(PSNR_LABEL)
    _legend_below(fig, [_line_handle(ln.label, styles[ln.style], marker=False) for ln in data.lines])
    return fig


def _spans(best: Sequence[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """Runs of consecutive frames with the same best expert: (first frame, last frame, expert)."""
    spans: list[tuple[int, int, str]] = []
    for frame, expert in best:
        if spans and spans[-1][2] == expert and spans[-1][1] == frame - 1:
            spans[-1] = (spans[-1][0], frame, expert)
        else:
            spans.append((frame, frame, expert))
    return spans


def per_frame_psnr(entries: Iterable[Entry], stem: Path, *, scene: str, experts: Sequence[str],
                   seed: int | None = None, run_dir: Path | None = None,
                   styles: Mapping[str, Style] | None = None) -> Plot | None:
    """Per-frame PSNR of one mixture run (:func:`per_frame_series`)."""
    entries = list(entries)
    return _per_frame_plot(per_frame_series(entries, scene, experts, seed=seed, run_dir=run_dir), stem,
                           styles or report_styles(entries))


def _per_frame_plot(data: PerFrame | None, stem: Path, styles: Mapping[str, Style]) -> Plot | None:
    if data is None:
        return None
    title = (f"PSNR (dB) per frame (mean over the test cameras) of MoE-GS on {data.run.scene_name} mixing "
             f"{', '.join(data.run.experts)} (seed {data.run.seed}), its experts and their uniform Average; the "
             "Oracle (per-pixel best expert, chosen with the ground truth) is an upper bound, not a method. The strip "
             "along the bottom has the colour of the best expert at each frame.")
    return write_figure(stem, title, lambda: per_frame_figure(data, styles))


# ---------------------------------------------------------------------------------- gate share

ALL_PIXELS = "all pixels"


@dataclass(frozen=True)
class GatePanel:
    """One run's mean gate weight per expert, per regime; the last row is ``all pixels``."""

    title: str
    experts: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]  # (regime, mean gate weight per expert)


SHARES = {"gate_share": "Mean gate weight", "win_share": "Share of pixels won"}


def gate_share_series(entries: Iterable[Entry], share: str = "gate_share") -> list[GatePanel]:
    """Per mixture entry with regions: each regime's ``share`` per expert (``gate_share``: the mean
    gate weight; ``win_share``: the fraction of the regime's pixels where the expert's gate is the
    largest; regimes whose shares are incomplete or not finite are left out), then ``all pixels``:
    the mean over the regimes weighted by their pixel fractions (normalised by the fractions' sum)."""
    runs = [e for e in entries if e.role == "mixture" and e.regions]
    panels = []
    suffixes = _varying([{"seed": r.seed, **dict(r.settings)} for r in runs])
    titles = _numbered([run_label(r) + (f" ({s})" if s else "") for r, s in zip(runs, suffixes)], " #{}")
    for run, title in zip(runs, titles):
        rows = [(name, shares, pixels) for name, shares, pixels in _regime_rows(run, share)]
        if not rows:
            continue
        total = sum(p for _, _, p in rows)
        out = [(name, shares) for name, shares, _ in rows]
        if total > 0:
            out.append((ALL_PIXELS, tuple(sum(p * s[i] for _, s, p in rows) / total for i in range(len(run.experts)))))
        panels.append(GatePanel(title=title, experts=run.experts,
                                rows=tuple(out)))
    return panels


def _regime_rows(run: Entry, key: str) -> list[tuple[str, tuple[float, ...], float]]:
    rows = []
    for name, region in (run.regions or {}).items():
        share = (region or {}).get(key) or {}
        values = [share.get(x) for x in run.experts]
        pixels = (region or {}).get("pixels")
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in [*values, pixels]):
            rows.append((str(name), tuple(float(v) for v in values), float(pixels)))  # type: ignore[arg-type]
    return rows


def gate_share_figure(panels: Sequence[GatePanel], styles: Mapping[str, Style],
                      xlabel: str = SHARES["gate_share"]) -> Figure:
    """Stacked horizontal bars: per regime (top to bottom), each expert's share (``xlabel``)."""
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    rows = max(len(p.rows) for p in panels)
    fig = new_figure(ONE_COLUMN if ncols == 1 else TWO_COLUMNS, nrows * (0.18 * rows + 0.75) + 0.45)
    experts: dict[str, None] = {}
    for ax, panel in zip(_grid(fig, len(panels), ncols), panels):
        ys = np.arange(len(panel.rows), dtype=float)[::-1]  # [R], first regime on top
        ys[[name == ALL_PIXELS for name, _ in panel.rows]] -= 0.4  # set apart from the regimes
        left = np.zeros(len(panel.rows))  # [R]
        for i, expert in enumerate(panel.experts):
            widths = np.array([shares[i] for _, shares in panel.rows])  # [R]
            st = styles[expert]
            ax.barh(ys, widths, left=left, color=st.color, hatch=st.hatch, edgecolor="white", linewidth=0.4,
                    height=0.75)
            left += widths
            experts[expert] = None
        ax.set_yticks(ys, [name for name, _ in panel.rows])
        ax.set_xlim(0.0, max(1.0, float(left.max())))
        ax.grid(axis="y", visible=False)
        ax.set_title(panel.title)
        ax.set_xlabel(xlabel)
    handles = [Patch(facecolor=styles[x].color, hatch=styles[x].hatch, edgecolor="white", label=x)
               for x in sorted(experts)]
    _legend_below(fig, handles)
    return fig


def gate_share(entries: Iterable[Entry], stem: Path, *, styles: Mapping[str, Style] | None = None,
               share: str = "gate_share") -> Plot | None:
    """Each mixture run's share per expert and motion regime (:func:`gate_share_series`):
    ``gate_share``, the mean gate weight, or ``win_share``, the share of pixels it wins."""
    entries = list(entries)
    panels = gate_share_series(entries, share)
    if not panels:
        return None
    styles = styles or report_styles(entries)
    if share == "win_share":
        title = ("Share of the pixels each expert wins (its gate is the largest) per motion regime (pixels labelled "
                 "static, rigid, oscillating, ...), over the test views, one panel per MoE-GS run; 'all pixels' is "
                 "the pixel-weighted mean over the regimes.")
    else:
        title = ("Mean gate weight of each expert per motion regime (pixels labelled static, rigid, oscillating, "
                 "...), one panel per MoE-GS run; 'all pixels' is the pixel-weighted mean over the regimes. These "
                 "are mean soft weights, not the share of pixels an expert wins (argmax).")
    return write_figure(stem, title, lambda: gate_share_figure(panels, styles, SHARES[share]))


# ---------------------------------------------------------------------------------- all plots


def write_plots(entries: Iterable[Entry], folder: Path, *,
                gate_runs: Callable[[Entry], bool] | None = None) -> list[Plot]:
    """Every plot the entries allow, into ``folder``, with one style table for all of them:
    ``quality_vs_fps``, ``quality_vs_storage``, ``psnr_vs_prune_ratio``, ``distill_gain_vs_lam``,
    ``gate_share`` and ``winner_share`` (of the mixture runs ``gate_runs`` accepts; default all;
    the winner share only for records that hold it) and
    ``per_frame_<scene>_<experts joined by ->`` per mixture run."""
    entries = list(entries)
    folder = Path(folder)
    styles = report_styles(entries)
    plots = [
        quality_vs_fps(entries, folder / "quality_vs_fps", styles=styles),
        quality_vs_storage(entries, folder / "quality_vs_storage", styles=styles),
        psnr_vs_prune_ratio(entries, folder / "psnr_vs_prune_ratio"),
        distill_gain_vs_lam(entries, folder / "distill_gain_vs_lam", styles=styles),
    ]
    gated = [e for e in entries if e.role != "mixture" or gate_runs is None or gate_runs(e)]
    plots += [gate_share(gated, folder / "gate_share", styles=styles),
              gate_share(gated, folder / "winner_share", styles=styles, share="win_share")]
    runs = [e for e in entries if e.role == "mixture"]
    for run, name in zip(runs, run_names(runs, "per_frame")):
        plots.append(_per_frame_plot(per_frame_of_run(entries, run), folder / name, styles))
    return [p for p in plots if p is not None]
