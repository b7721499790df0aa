"""``moegs-bench report``: results records in, a report folder out.

The report folder (``--out``)::

    report.tex, report.pdf     the standalone document (PDF when LaTeX is installed)
    tables/<name>.tex          one booktabs table per file, for \\input in a paper
    tables/<name>.md           the same table in Markdown
    figures/*.pdf, *.png       the plots (vector PDF and PNG), gate maps, crops
    videos/*.mp4               the mixture runs' gate videos (copied)
    index.html                 a static page (opens from disk) with everything above
    summary.md                 headline and tables in Markdown, for a README or a pull request
    report.json                what the report was made from (every record and its SHA-256) and with
    provenance.json            when, by whom, with which code; the warnings and the LaTeX outcome

Everything but ``provenance.json`` depends on the records and the options only, so a rerun on the
same records gives byte-identical files (the PDF too: pdfTeX's dates come from SOURCE_DATE_EPOCH).
The folder is written whole in a hidden sibling and renamed into place at the end: a failed or
interrupted report leaves the previous one (or nothing) behind, never half a report. A folder that
is not a report is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moegs_bench.errors import UserInputError
from moegs_bench.reports.html import Media, SceneDetails, index_html
from moegs_bench.reports.latex import FigureRef, compile_pdf, report_tex, table_tex
from moegs_bench.reports.markdown import summary_markdown, table_markdown
from moegs_bench.reports.records import Entry, Found, entries_from
from moegs_bench.reports.studies import (DEFAULT_METRICS, GROUP_BY, METRICS, Group, build_tables, group_entries,
                                        main_runs)
from moegs_bench.reports.table import Table, format_number

__all__ = ["FORMATS", "REPORT_FORMAT", "ReportOptions", "ReportResult", "build_report"]

FORMATS = ("latex", "md", "html")
REPORT_FORMAT = "moegs-bench/report"
REPORT_VERSION = 1
VIDEO_MAX_BYTES = 50 * 2**20  # videos larger than this are linked where they are, not copied


class ReportError(UserInputError):
    """Options or an output folder the report cannot use."""


@dataclass(frozen=True)
class ReportOptions:
    """What to write: ``formats`` of FORMATS, the ``metrics`` columns, ``group_by`` of GROUP_BY."""

    formats: tuple[str, ...] = FORMATS
    metrics: tuple[str, ...] = DEFAULT_METRICS
    group_by: str = "dataset"
    title: str = "MoE-GS benchmark report"
    compile: bool = True  # run latexmk when LaTeX is installed
    figures: bool = True  # plots and image figures (off: tables only)
    cache_dir: Path | None = None  # where the scenes' ground truth is read from (for the crops)

    def __post_init__(self) -> None:
        _check_choices("--format", "format", self.formats, FORMATS)
        _check_choices("--metrics", "metric", self.metrics, METRICS)
        if self.group_by not in GROUP_BY:
            raise ReportError(f"--group-by: unknown grouping {self.group_by!r}; expected one of {', '.join(GROUP_BY)}")


def _check_choices(option: str, what: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    """At least one value, each one of ``allowed``; else :class:`ReportError` naming ``option``."""
    for v in values:
        if v not in allowed:
            raise ReportError(f"{option}: unknown {what} {v!r}; expected a comma-separated list of {', '.join(allowed)}")
    if not values:
        raise ReportError(f"{option}: expected at least one of {', '.join(allowed)}")


@dataclass
class ReportResult:
    out: Path
    tables: list[Table]
    records: int
    entries: int
    warnings: list[str]
    pdf: Path | None
    latex_message: str | None
    latex_failed: bool = False  # LaTeX is installed and could not compile report.tex
    skipped: list[str] = field(default_factory=list)  # figures that could not be made, and why
    files: list[Path] = field(default_factory=list)


def build_report(sources: Sequence[Path | str], out: Path | str, options: ReportOptions = ReportOptions(), *,
                 log: Callable[[str], None] = lambda _: None, argv: Sequence[str] = ()) -> ReportResult:
    """Write the report of the records under ``sources`` into ``out`` (see module doc)."""
    out = Path(out)
    _check_out(out)
    found = entries_from(sources)
    log(f"{len(found.records)} results records, {len(found.entries)} results")
    groups = group_entries(found.entries, options.group_by)
    tables = build_tables(groups, options.metrics)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        result = _write(stage, out, found, groups, tables, options, log)
        _write_json(stage / "report.json", _inputs(found, options, tables, stage))
        _write_json(stage / "provenance.json", _provenance(found, result, argv))
        _swap(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    result.out = out
    result.files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    if result.pdf is not None:
        result.pdf = out / result.pdf.name
    return result


# ------------------------------------------------------------------------------------- writing


def _write(stage: Path, out: Path, found: Found, groups: Sequence[Group], tables: list[Table],
           options: ReportOptions, log: Callable[[str], None]) -> ReportResult:
    result = ReportResult(stage, tables, len(found.records), len(found.entries), list(found.warnings), None, None)
    (stage / "tables").mkdir()
    for t in tables:
        if "latex" in options.formats:
            (stage / "tables" / f"{t.name}.tex").write_text(table_tex(t), encoding="utf-8")
        if "md" in options.formats:
            (stage / "tables" / f"{t.name}.md").write_text(table_markdown(t), encoding="utf-8")
    figs = _figures(stage, found.entries, groups, options, result, log) if options.figures else _Figures()
    figures, grids, details = figs.shown, figs.grids, figs.details
    sentences = headline(tables)
    if "md" in options.formats:
        (stage / "summary.md").write_text(
            summary_markdown(options.title, sentences, tables, [(m.path, m.caption) for m in figures]),
            encoding="utf-8")
    if "html" in options.formats:
        (stage / "index.html").write_text(index_html(options.title, sentences, tables, figures, details),
                                          encoding="utf-8")
    if "latex" in options.formats:
        refs = [FigureRef(str(Path(m.path).with_suffix(".pdf")), m.caption, Path(m.path).stem) for m in figures
                if not m.is_video and (stage / m.path).with_suffix(".pdf").is_file()]
        (stage / "report.tex").write_text(report_tex(options.title, tables, refs, summary=sentences, grids=grids),
                                          encoding="utf-8")
        if options.compile:
            log("compiling report.tex (latexmk)")
            compiled = compile_pdf(stage, shown_as=out)
            result.pdf, result.latex_message, result.latex_failed = compiled.pdf, compiled.message, compiled.failed
        else:
            result.latex_message = f"not compiled (--no-compile); compile with: cd {out} && latexmk -pdf report.tex"
    return result


@dataclass
class _Figures:
    """What the figures give each output: the document's figures (main runs only), its grid of
    gate maps, and the page's per-scene details (every run)."""

    shown: list[Media] = field(default_factory=list)
    grids: list = field(default_factory=list)
    details: list[SceneDetails] = field(default_factory=list)


def _figures(stage: Path, entries: list[Entry], groups: Sequence[Group], options: ReportOptions,
             result: ReportResult, log: Callable[[str], None]) -> _Figures:
    """Plots, gate maps, crops and videos. Global plots and the main mixture runs' per-frame
    plots, crops and gate maps go into the document; the page lists every run's under its scene."""
    from moegs_bench.reports import figures as image_figures
    from moegs_bench.reports.plots import run_names, write_plots

    folder = stage / "figures"
    folder.mkdir()
    out = _Figures()
    runs = [e for e in entries if e.role == "mixture"]  # (the order write_plots and gate_grid name them in)
    mains = {id(r) for g in groups for r in main_runs(g)}
    is_main = [id(r) in mains for r in runs]
    per_run: dict[int, list[Media]] = {i: [] for i in range(len(runs))}

    log("plots")
    frame_names = dict(zip(run_names(runs, "per_frame"), range(len(runs))))
    for plot in write_plots(entries, folder, gate_runs=lambda r: id(r) in mains):
        media = Media(str(plot.png.relative_to(stage)), plot.title)
        i = frame_names.get(plot.png.stem)
        if i is None:
            out.shown.append(media)
        else:
            per_run[i].append(media)
            if is_main[i]:
                out.shown.append(media)

    grid, skipped = image_figures.gate_grid(entries, folder)
    result.skipped += skipped
    gate_names = dict(zip(run_names(runs, "gates"), range(len(runs))))
    panels = []
    for panel in grid.panels if grid is not None else ():
        i = gate_names.get(Path(panel.path).stem)
        if i is not None:
            per_run[i].append(Media(str(panel.path), panel.caption))
            if is_main[i]:
                panels.append((str(panel.path), f"{runs[i].scene_name}: {'+'.join(runs[i].experts)}"))
    if panels:
        out.grids.append((grid.caption, "gates", panels))

    for i, (run, name) in enumerate(zip(runs, run_names(runs, "crops"))):
        log(f"crops and video of {run.scene_name}: {'+'.join(run.experts)} (seed {run.seed})")
        figure, reason = image_figures.crops(run, entries, folder, cache_dir=options.cache_dir, name=name)
        if figure is not None:
            shown = [Media(str(p.path), figure.caption) for p in figure.panels]
            per_run[i] += shown
            if is_main[i]:
                out.shown += shown
        elif reason:
            result.skipped.append(reason)
        video = _video(stage, run, name.replace("crops_", "gates_", 1))
        if video is not None:
            per_run[i].append(video)
    out.details = _details(entries, runs, per_run)
    return out


def _video(stage: Path, run: Entry, name: str) -> Media | None:
    """The run's gate video, copied into ``videos/`` (linked where it is when large)."""
    video = run.run_dir / "video" / "mixture_gates.mp4" if run.run_dir else None
    if video is None or not video.is_file():
        return None
    caption = f"{run.scene_name}: {'+'.join(run.experts)} (seed {run.seed}), the mixture and its gate winners"
    if video.stat().st_size > VIDEO_MAX_BYTES:
        return Media(os.path.relpath(video, stage), caption + " (linked, not copied)")
    target = stage / "videos" / f"{name}.mp4"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(video, target)
    return Media(str(target.relative_to(stage)), caption)


def _details(entries: list[Entry], runs: list[Entry], per_run: dict[int, list[Media]]) -> list[SceneDetails]:
    """Per scene: every result with its record, and the media of its mixture runs."""
    out = []
    for scene in sorted({e.scene for e in entries}):
        listed = []
        for e in sorted((e for e in entries if e.scene == scene and e.role not in ("average", "oracle")),
                        key=lambda e: (e.role, e.experts, e.model, e.seed, str(e.record))):
            over = f" over {'+'.join(e.experts)}" if len(e.experts) > 1 else ""
            psnr = f", {e.psnr:.2f} dB" if e.psnr is not None else ""
            listed.append((f"{e.model}{over}, seed {e.seed}{psnr}", (str(e.record),)))
        media = [m for i, r in enumerate(runs) if r.scene == scene for m in per_run[i]]
        out.append(SceneDetails(scene, tuple(listed), tuple(media)))
    return out


# ------------------------------------------------------------------------------------ headline


def headline(tables: Sequence[Table]) -> list[str]:
    """One sentence per main table: the mixture against its best expert, the average and the oracle."""
    out = []
    for t in tables:
        if not t.name.startswith("main_"):
            continue
        rows = {r.label: r for r in t.rows}
        col = next((c for c in t.columns if c.key == "psnr"), None)
        mix = rows.get("MoE-GS")
        if col is None or mix is None or mix.cells["psnr"].missing:
            continue

        def psnr(label: str) -> float | None:
            row = rows.get(label)
            return None if row is None or row.cells["psnr"].missing else row.cells["psnr"].mean

        def fmt(x: float, signed: bool = False) -> str:
            return format_number(x, col.digits, signed=signed)

        m = mix.cells["psnr"].mean
        block = []  # the experts: the rows above the first rule
        for r in t.rows:
            if r.rule_before:
                break
            block.append(r)
        experts = [(r.cells["psnr"].mean, r.label) for r in block if not r.cells["psnr"].missing]
        parts = [f"{t.title.split(', ', 1)[-1]}: MoE-GS {fmt(m)} dB PSNR"]
        if experts:
            best, name = max(experts)
            parts.append(f"best single expert {name} {fmt(best)} dB ({fmt(m - best, True)} dB)")
        avg = next((psnr(r.label) for r in t.rows if r.label.startswith("Average")), None)
        orc = next((psnr(r.label) for r in t.rows if r.bound), None)
        if avg is not None:
            parts.append(f"uniform average of its experts {fmt(avg)} dB (the router adds {fmt(m - avg, True)} dB)")
        if orc is not None:
            closed = (f"; MoE-GS closes {100 * (m - avg) / (orc - avg):.0f}% of the average-to-oracle gap"
                      if avg is not None and orc > avg else "")
            parts.append(f"per-pixel oracle (uses the ground truth; a bound) {fmt(orc)} dB{closed}")
        out.append("; ".join(parts) + ".")
    return out


# ---------------------------------------------------------------------------------- bookkeeping


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_report(out):
        raise ReportError(f"--out {out}: exists and is not a moegs-bench report (no report.json of "
                          f"{REPORT_FORMAT!r}); choose another --out")


def _is_report(folder: Path) -> bool:
    try:
        return json.loads((folder / "report.json").read_text()).get("format") == REPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _swap(stage: Path, out: Path) -> None:
    """Put ``stage`` in place of ``out``: the old report is renamed away first, then deleted."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(found: Found, options: ReportOptions, tables: list[Table], stage: Path) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "sources": [str(Path(s).resolve()) for s in found.searched],
        "records": [{"path": str(p), "sha256": _sha256(p)} for p in found.records],
        "options": {"formats": list(options.formats), "metrics": list(options.metrics), "group_by": options.group_by,
                    "title": options.title},
        "tables": [t.name for t in tables],
        "files": sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()),
    }


def _provenance(found: Found, result: ReportResult, argv: Sequence[str]) -> dict[str, Any]:
    from moegs_bench import __version__
    from moegs_bench.results import git_state

    commit, dirty = git_state()
    commits = sorted({str(e.commit) for e in found.entries})
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": list(argv),
        "moegs_bench_version": __version__, "git_commit": commit, "git_dirty": dirty,
        "python": platform.python_version(), "platform": platform.platform(), "executable": sys.executable,
        "records_git_commits": commits, "warnings": result.warnings, "figures_skipped": result.skipped,
        "latex": result.latex_message,
    }
