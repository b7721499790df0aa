"""``moegs-bench report``: results records -> LaTeX tables, plots, figures, HTML and Markdown."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from moegs_bench.cli._common import UserError, check_writable


SHOWN = 5  # warnings (and skipped figures) printed; all of them are in provenance.json


def split_list(option: str, text: str | None, default: Sequence[str]) -> tuple[str, ...]:
    """A comma-separated option value as a tuple (``default`` when not given)."""
    if text is None:
        return tuple(default)
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise UserError(f"{option}: expected a comma-separated list, got {text!r}")
    return items


def run_report(*, sources: Sequence[Path], out: Path, formats: str | None, metrics: str | None, group_by: str,
               title: str | None, compile_pdf: bool, figures: bool, cache: Path | None, progress: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    from moegs_bench.reports.build import FORMATS, ReportOptions, build_report
    from moegs_bench.reports.studies import DEFAULT_METRICS

    err = Console(stderr=True, highlight=False)
    options = ReportOptions(formats=split_list("--format", formats, FORMATS),
                            metrics=split_list("--metrics", metrics, DEFAULT_METRICS), group_by=group_by,
                            title=title or ReportOptions.title, compile=compile_pdf, figures=figures,
                            cache_dir=cache)
    check_writable("--out", out.parent if out.parent != Path("") else Path("."))

    def log(message: str) -> None:
        if progress:
            err.print(f"[dim]report:[/dim] {escape(message)}")

    result = build_report(sources, out, options, log=log, argv=sys.argv)
    console = Console(highlight=False)
    for kind, lines in (("warning", result.warnings), ("skipped", result.skipped)):
        for line in lines[:SHOWN]:
            err.print(f"[yellow]{kind}:[/yellow] {escape(line)}", soft_wrap=True)
        if len(lines) > SHOWN:
            err.print(f"[yellow]{kind}:[/yellow] ... {len(lines) - SHOWN} more in {escape(str(out))}/provenance.json",
                      soft_wrap=True)
    console.print(f"{result.records} records, {result.entries} results -> {len(result.tables)} tables in "
                  f"[b]{escape(str(out))}[/b]")
    for t in result.tables:
        console.print(f"  tables/{t.name}.tex  {escape(t.title)}", markup=False) if "latex" in options.formats \
            else console.print(f"  tables/{t.name}.md  {t.title}", markup=False)
    if "html" in options.formats:
        console.print(f"  index.html  (open in a browser: file://{(out / 'index.html').resolve()})", markup=False)
    if "md" in options.formats:
        console.print("  summary.md", markup=False)
    if result.latex_failed:  # (the report is written; its PDF is not: a bug in our LaTeX, or the TeX set)
        err.print(f"[red]error:[/red] {escape(result.latex_message)}", soft_wrap=True)
        sys.exit(1)
    if result.latex_message:
        pdf = f"  {result.pdf.name}  " if result.pdf else "  "
        console.print(f"{pdf}{result.latex_message}", markup=False)
