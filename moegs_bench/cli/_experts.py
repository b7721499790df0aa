"""``moegs-bench experts list`` (the built-in, installed (entry point) and ``--plugin`` experts)
and ``moegs-bench experts check`` (the expert contract of :mod:`moegs_bench.adapters.testing`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def expert_rows(plugins: Sequence[str] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """One dict per expert (in registry order) and the discovery notes (clashes)."""
    from moegs_bench.adapters.registry import Registry

    registry = Registry.discover(plugins)
    rows = []
    for spec in registry.specs():
        available, detail, cls = registry.status(spec.id)
        info = getattr(cls, "info", None)
        rows.append({
            "id": spec.id,
            "method": getattr(info, "method", ""),
            "paper": getattr(info, "paper", ""),
            "repo": getattr(info, "repo", ""),
            "description": getattr(info, "description", ""),
            "licence": getattr(info, "licence", ""),
            "source": spec.source,
            "target": spec.target,
            "available": available,
            "detail": detail,
            "profiles": list(getattr(cls, "profiles", {}) or {}),
            "notes": registry.notes_for(spec.id),
        })
    return rows, list(registry.notes)


def run_list(*, plugins: Sequence[str], as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows, notes = expert_rows(plugins)
    err = Console(stderr=True, highlight=False)
    for note in notes:
        err.print(Text.assemble(("Warning:", "bold yellow"), (" " + note, "yellow")), soft_wrap=True)
    if as_json:
        print(json.dumps(rows, indent=2))
        return

    table = Table(title="Experts", title_justify="left")
    for name in ("id", "method", "paper", "upstream repository", "source", "available", "profiles"):
        table.add_column(name, overflow="fold", no_wrap=name == "id")
    for r in rows:
        available = Text("yes", style="green") if r["available"] else Text(f"no: {r['detail']}", style="red")
        table.add_row(r["id"], r["method"], r["paper"], r["repo"], r["source"], available,
                      ", ".join(r["profiles"]))
    Console().print(table)


def check_targets(ids: Sequence[str], plugins: Sequence[str]) -> list[type]:
    """The classes to check: ``ids`` (any registry id), else the ``--plugin`` classes."""
    from moegs_bench.adapters.registry import PLUGIN, Registry
    from moegs_bench.cli._common import UserError

    if not ids and not plugins:
        raise UserError("experts check: give an expert ID or --plugin MODULE:CLASS")
    registry = Registry.discover(plugins)  # a broken --plugin is a one-line error here
    wanted = list(dict.fromkeys(ids)) if ids else [s.id for s in registry.specs() if s.source == PLUGIN]
    return [registry.get(i) for i in wanted]  # an unknown or unavailable id is a one-line error


def run_check(*, ids: Sequence[str], plugins: Sequence[str], as_json: bool) -> int:
    """Check each expert; print a table per expert (or JSON). Returns the exit code: 0 when every
    check passed, 1 when one failed (a finding about the expert, not a usage error)."""
    import tempfile
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from moegs_bench.adapters.testing import check_expert, tiny_scene

    classes = check_targets(ids, plugins)
    err = Console(stderr=True, highlight=False)
    reports = []
    with tempfile.TemporaryDirectory(prefix="moegs-check-") as tmp:
        frames = max([10, *(int(c.min_frames) for c in classes)])
        if not as_json:
            err.print(f"building a tiny synthetic scene ({frames} frames) ...")
        scene = tiny_scene(Path(tmp) / "scene", frames=frames)
        for cls in classes:
            if not as_json:
                err.print(f"checking {cls.info.id} ({cls.__module__}:{cls.__qualname__}) ...")
            reports.append(check_expert(cls, scene=scene, workdir=Path(tmp) / cls.info.id))
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        style = {"pass": "green", "fail": "bold red", "skip": "yellow"}
        console = Console()
        for report in reports:
            table = Table(title=f"Expert contract: {report.expert_id} ({report.target})", title_justify="left")
            table.add_column("check", no_wrap=True)
            table.add_column("result", no_wrap=True)
            table.add_column("detail", overflow="fold")
            table.add_column("time", justify="right", no_wrap=True)
            for r in report.results:
                table.add_row(r.name, Text(r.status, style=style[r.status]), r.detail, f"{r.seconds:.1f} s")
            console.print(table)
            failed = report.failures()
            verdict = (Text(f"{report.expert_id}: all {len(report.results)} checks passed", style="green") if not failed
                       else Text(f"{report.expert_id}: {len(failed)} of {len(report.results)} checks did not pass: "
                                 + ", ".join(r.name for r in failed), style="bold red"))
            console.print(verdict)
    return 0 if all(r.passed for r in reports) else 1
