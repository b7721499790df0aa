"""The report's table model: columns with a direction and printed digits, cells with mean ± std,
and the ranking every output format shares (best and second best, after rounding).

Ranking follows the convention of the field's tables (e.g. 3DGS, 4DGaussians, MoE-GS, Tables 1-2):
per column, among the rows that are ranked (an upper bound such as the per-pixel oracle is not a
method and never ranked), the value *as printed* decides: values are rounded to the column's digits
first, so two rows that print the same share a rank. The best printed value is rank 1 (bold), the
next distinct one rank 2 (underlined). A column with fewer than two ranked values is not ranked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ARROWS", "Cell", "Column", "Row", "Table", "cell_of", "cell_text", "column_groups", "footnote_marks",
           "format_number", "ranks"]

ARROWS = {1: " ↑", -1: " ↓", 0: ""}  # a column's direction, after its header (plain text)
_MARKS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Column:
    """One figure column: ``direction`` +1 higher is better, -1 lower is better, 0 not ranked."""

    key: str
    header: str
    unit: str = ""
    direction: int = 0
    digits: int = 2
    group: str = ""  # a spanning header above the column (e.g. the scene), "" for none


@dataclass(frozen=True)
class Cell:
    """A value (``mean`` over ``n`` seeds, ``std`` their sample standard deviation when n > 1), or
    none: ``mean`` None with ``note`` saying why (printed "n/a" with a footnote)."""

    mean: float | None
    std: float | None = None
    n: int = 1
    note: str | None = None
    signed: bool = False  # print a "+" on positive values (differences)

    @property
    def missing(self) -> bool:
        return self.mean is None


@dataclass
class Row:
    """A table row: ``ranked`` False for rows that are not methods (an upper bound)."""

    label: str
    cells: dict[str, Cell]
    ranked: bool = True
    bound: bool = False  # printed in the "bound" style (the oracle)
    rule_before: bool = False  # a \midrule above this row


@dataclass
class Table:
    """A titled table; ``name`` is its file stem (``tables/<name>.tex``)."""

    name: str
    title: str
    caption: str
    label_header: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # sentences under the table

    def footnotes(self) -> list[str]:
        """The distinct reasons of the table's missing cells, in order of appearance."""
        seen: list[str] = []
        for row in self.rows:
            for col in self.columns:
                cell = row.cells.get(col.key)
                note = cell.note if cell is not None and cell.missing else None
                if note and note not in seen:
                    seen.append(note)
        return seen


def cell_of(values: Sequence[float | None], note: str | None = None, *, signed: bool = False) -> Cell:
    """The cell of some seeds' values: mean and sample std (n > 1) of the values that exist; a
    missing cell (``note``) when none does."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not present:
        return Cell(None, note=note or "not recorded")
    std = statistics.stdev(present) if len(present) > 1 else None
    return Cell(statistics.fmean(present), std, len(present), signed=signed)


def format_number(value: float, digits: int, *, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals; ``-0.00`` prints as ``0.00``; ``signed``: ``+`` on positives."""
    text = f"{value:.{digits}f}"
    if float(text) == 0.0:
        text = text.lstrip("-")
    elif signed and value > 0:
        text = "+" + text
    return text


def ranks(table: Table) -> dict[tuple[int, str], int]:
    """``{(row index, column key): 1 or 2}`` for the best and second-best printed values."""
    out: dict[tuple[int, str], int] = {}
    for col in table.columns:
        if col.direction == 0:
            continue
        printed: dict[int, float] = {}
        for i, row in enumerate(table.rows):
            cell = row.cells.get(col.key)
            if row.ranked and cell is not None and not cell.missing:
                printed[i] = float(format_number(cell.mean, col.digits))
        if len(printed) < 2:
            continue
        order = sorted(set(printed.values()), reverse=col.direction > 0)
        for i, value in printed.items():
            if value == order[0]:
                out[(i, col.key)] = 1
            elif len(order) > 1 and value == order[1]:
                out[(i, col.key)] = 2
    return out


def cell_text(cell: Cell, col: Column) -> str:
    """A present cell as plain text: the mean with the column's digits, `` ± std`` over seeds."""
    text = format_number(cell.mean, col.digits, signed=cell.signed)
    return text + (f" ± {format_number(cell.std, col.digits)}" if cell.std is not None else "")


def footnote_marks(table: Table) -> dict[str, str]:
    """``{reason: letter}`` for the table's missing cells' reasons (:meth:`Table.footnotes`), a, b, ..."""
    return {note: _MARKS[i % len(_MARKS)] for i, note in enumerate(table.footnotes())}


def column_groups(columns: Sequence[Column]) -> list[tuple[str, int]]:
    """``(group, span)`` of consecutive columns sharing a group header, in order ("" for none)."""
    out: list[tuple[str, int]] = []
    for col in columns:
        if out and out[-1][0] == col.group:
            out[-1] = (col.group, out[-1][1] + 1)
        else:
            out.append((col.group, 1))
    return out
