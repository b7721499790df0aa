"""Markdown output: the report's tables as GitHub-flavoured Markdown, for a README or a pull request.

Best values are **bold**, second best _italic_ (Markdown has no underline); a missing figure is
``n/a`` with a footnote letter, ``--`` where a figure does not apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from moegs_bench.reports.table import ARROWS, Table, cell_text, footnote_marks, ranks

__all__ = ["table_markdown", "summary_markdown"]



def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def table_markdown(table: Table) -> str:
    """``table`` as a titled Markdown table with its caption and notes."""
    rank = ranks(table)
    marks = footnote_marks(table)
    heads = [_md(table.label_header)]
    for col in table.columns:
        group = f"{col.group} " if col.group else ""
        unit = f" ({col.unit})" if col.unit else ""
        heads.append(_md(f"{group}{col.header}{unit}") + ARROWS[col.direction])
    lines = [f"### {_md(table.title)}", "", _md(table.caption), "", "| " + " | ".join(heads) + " |",
             "|" + "---|" + "---:|" * len(table.columns)]
    for i, row in enumerate(table.rows):
        cells = [f"_{_md(row.label)}_" if row.bound else _md(row.label)]
        for col in table.columns:
            cell = row.cells.get(col.key)
            if cell is None:
                cells.append("")
            elif cell.missing:
                cells.append(f"n/a ({marks[cell.note]})" if cell.note else "--")
            else:
                text = cell_text(cell, col)
                r = rank.get((i, col.key))
                cells.append(f"**{text}**" if r == 1 else f"_{text}_" if r == 2 else text)
        lines.append("| " + " | ".join(cells) + " |")
    extra = [f"({m}) {_md(n)}" for n, m in marks.items()] + [_md(n) for n in table.notes]
    if extra:
        lines += [""] + [f"{line}  " for line in extra]
    return "\n".join(lines) + "\n"


def summary_markdown(title: str, sentences: Sequence[str], tables: Sequence[Table],
                     figures: Sequence[tuple[str, str]]) -> str:
    """The whole Markdown summary: title, headline sentences, tables, figure links (path, caption)."""
    parts = [f"# {_md(title)}", ""]
    parts += [_md(s) for s in sentences]
    parts.append("")
    for t in tables:
        parts.append(table_markdown(t))
    if figures:
        parts.append("### Figures\n")
        parts += [f"- [{_md(caption)}]({path})" for path, caption in figures]
    return "\n".join(parts).rstrip() + "\n"
