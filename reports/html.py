"""HTML output: one static ``index.html`` that opens from disk (no server, no network): the
headline, every table (click a header to sort; best bold, second underlined, as in the PDF), the
figures and, per scene, the runs with their records, gate maps and videos.

Everything it shows lies beside it in the report folder (relative links); styles and the sorting
script are inline, so the page works offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from moegs_bench.reports.table import ARROWS, Table, cell_text, column_groups, footnote_marks, ranks

__all__ = ["Media", "SceneDetails", "index_html", "table_html"]


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: .5em 0 .3em; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-size: 0.95em; color: #444; padding-bottom: .4em; }
th, td { padding: .25em .7em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; cursor: pointer; user-select: none; }
thead tr.groups th { border-bottom: 1px solid #999; border-top: 2px solid #222; cursor: default; }
tbody tr:last-child td { border-bottom: 2px solid #222; }
tr.rule td { border-top: 1px solid #999; }
tr.bound td { font-style: italic; color: #666; }
.best { font-weight: bold; } .second { text-decoration: underline; }
.notes { font-size: 0.85em; color: #555; margin: 0 0 1.6em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { width: 31%; margin: 0; }
code { background: #f4f4f4; padding: 0 .2em; }
"""

_SCRIPT = """
document.querySelectorAll("table.sortable thead tr:last-child th").forEach(function (th, col) {
  th.title = "sort";
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var up = th.dataset.order !== "asc"; th.dataset.order = up ? "asc" : "desc";
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      if (x === undefined || y === undefined) {
        x = a.cells[col].textContent; y = b.cells[col].textContent;
        return up ? x.localeCompare(y) : y.localeCompare(x);
      }
      x = x === "" ? NaN : parseFloat(x); y = y === "" ? NaN : parseFloat(y);
      if (isNaN(x)) return 1; if (isNaN(y)) return -1;
      return up ? x - y : y - x;
    });
    rows.forEach(function (r) { r.classList.remove("rule"); body.appendChild(r); });
  });
});
"""


def table_html(table: Table) -> str:
    """``table`` as a sortable HTML table with its caption and notes."""
    rank = ranks(table)
    marks = footnote_marks(table)
    out = [f'<table class="sortable" id="{escape(table.name)}">', f"<caption>{escape(table.caption)}</caption>",
           "<thead>"]
    groups = column_groups(table.columns)
    if any(g for g, _ in groups):
        out.append('<tr class="groups"><th></th>' + "".join(f'<th colspan="{n}" style="text-align:center">'
                                                            f"{escape(g)}</th>" for g, n in groups) + "</tr>")
    heads = [escape(table.label_header)]
    heads += [escape(c.header + (f" ({c.unit})" if c.unit else "") + ARROWS[c.direction]) for c in table.columns]
    out.append("<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>")
    for i, row in enumerate(table.rows):
        classes = " ".join(c for c, on in (("rule", row.rule_before and i > 0), ("bound", row.bound)) if on)
        cells = [f"<td>{escape(row.label)}</td>"]
        for col in table.columns:
            cell = row.cells.get(col.key)
            if cell is None:
                cells.append('<td data-v=""></td>')
            elif cell.missing:
                text = (f'n/a<sup title="{escape(cell.note)}">{marks[cell.note]}</sup>' if cell.note
                        else '<span title="does not apply">--</span>')
                cells.append(f'<td data-v="">{text}</td>')
            else:
                text = cell_text(cell, col)
                r = rank.get((i, col.key))
                cls = ' class="best"' if r == 1 else ' class="second"' if r == 2 else ""
                cells.append(f'<td data-v="{cell.mean!r}"{cls}>{escape(text)}</td>')
        out.append(f'<tr class="{classes}">' if classes else "<tr>")
        out.append("".join(cells) + "</tr>")
    out.append("</tbody></table>")
    extra = [f"<sup>{m}</sup> {escape(n)}" for n, m in marks.items()] + [escape(n) for n in table.notes]
    if extra:
        out.append('<p class="notes">' + "<br>".join(extra) + "</p>")
    else:
        out.append('<p class="notes"></p>')
    return "\n".join(out)


@dataclass(frozen=True)
class Media:
    """An image or video in the report folder: relative path and caption."""

    path: str
    caption: str

    @property
    def is_video(self) -> bool:
        return self.path.lower().endswith((".mp4", ".webm"))


@dataclass(frozen=True)
class SceneDetails:
    """What the page lists for one scene: its runs (label, record paths) and their media."""

    scene: str
    runs: tuple[tuple[str, tuple[str, ...]], ...]
    media: tuple[Media, ...]


def _media(m: Media) -> str:
    if m.is_video:
        body = f'<video controls muted loop preload="none" src="{escape(m.path)}"></video>'
    else:
        body = f'<a href="{escape(m.path)}"><img src="{escape(m.path)}" alt="{escape(m.caption)}"></a>'
    return f"<figure>{body}<figcaption>{escape(m.caption)} (<a href=\"{escape(m.path)}\">file</a>)</figcaption></figure>"


def index_html(title: str, sentences: Sequence[str], tables: Sequence[Table], figures: Sequence[Media],
               scenes: Sequence[SceneDetails], links: Sequence[Media] = ()) -> str:
    """The whole page (see module doc)."""
    toc = "".join(f'<li><a href="#{escape(t.name)}">{escape(t.title)}</a></li>' for t in tables)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{escape(title)}</title>",
           f"<style>{_STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    out += [f"<p>{escape(s)}</p>" for s in sentences]
    if links:
        out.append("<p>" + " · ".join(f'<a href="{escape(m.path)}">{escape(m.caption)}</a>' for m in links) + "</p>")
    out += [f"<h2>Tables</h2><ul>{toc}</ul>"]
    for t in tables:
        out += [f"<h3>{escape(t.title)}</h3>", table_html(t)]
    if figures:
        out.append("<h2>Figures</h2>")
        out += [_media(m) for m in figures]
    if scenes:
        out.append("<h2>Per scene</h2>")
    for s in scenes:
        out.append(f"<h3>{escape(s.scene)}</h3><ul>")
        for label, records in s.runs:
            out.append(f"<li>{escape(label)}: " + ", ".join(f"<code>{escape(r)}</code>" for r in records) + "</li>")
        out.append("</ul>")
        if s.media:
            out.append('<div class="grid">' + "".join(_media(m) for m in s.media) + "</div>")
    out += [f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(out) + "\n"
