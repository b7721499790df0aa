"""``moegs-bench experts list``: the built-in, installed (entry point) and ``--plugin`` experts."""

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
