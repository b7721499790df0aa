"""LaTeX output: one booktabs table per file, a ``report.tex`` that inputs them with the figures,
and compiling it with latexmk when TeX is installed.

Each table file is a complete ``table`` float (caption, label, ``tabular``, notes; no placement
option, so the paper's default applies) that a paper can ``\\input``. Its look goes through
macros the file only *provides* (``\\providecommand``), so a paper that defines them first
restyles every table:

- ``\\mbbest{x}`` (default bold) and ``\\mbsecond{x}`` (underlined): best and second best per column;
- ``\\mbna`` (``n/a``): a figure that does not exist, with a footnote mark saying why;
- ``\\mbpm{mean}{std}``: mean ± standard deviation over seeds;
- ``\\mbbound{x}``: a row that is an upper bound, not a method (the per-pixel oracle; italic).

Only packages of Debian's texlive-latex-base and texlive-latex-recommended are used (booktabs,
graphicx, caption, subcaption, hyperref, amssymb, geometry, flafter).
"""

from __future__ import annotations

import os
import shutil
import unicodedata
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moegs_bench.reports.table import Cell, Column, Table, column_groups, footnote_marks, format_number, ranks

__all__ = ["MACROS", "CompileResult", "compile_pdf", "escape", "report_tex", "table_tex"]

MACROS = r"""\providecommand{\mbbest}[1]{\textbf{#1}}
\providecommand{\mbsecond}[1]{\underline{#1}}
\providecommand{\mbna}{n/a}
\providecommand{\mbpm}[2]{#1{\scriptsize$\,\pm\,$#2}}
\providecommand{\mbbound}[1]{\textit{#1}}
"""
_ARROWS = {1: r"$\uparrow$", -1: r"$\downarrow$", 0: ""}
TEXT_CHARS = 118  # characters of \small text across the document's text width (17 cm)
SOURCE_DATE_EPOCH = "0"  # pdfTeX's dates and document id come from it: the PDF is reproducible
LATEXMK_TIMEOUT_S = 300

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
            "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$", "Δ": r"$\Delta$", "→": r"$\rightarrow$", "−": r"$-$", "–": "--", "—": "---",
            "“": "``", "”": "''", "‘": "`", "’": "'", "…": r"\dots{}"}


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"}


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, and every character pdfLaTeX's default
    UTF-8 input does not know (beyond Latin-1) written as LaTeX: Greek letters as math symbols,
    anything else as its closest ASCII form (or ``?``)."""
    return "".join(_ESCAPES.get(c, c) if ord(c) < 0x100 or c in _ESCAPES else _beyond_latin1(c) for c in str(text))


def _beyond_latin1(c: str) -> str:
    name = unicodedata.name(c, "")
    if name.startswith("GREEK "):
        letter = name.rsplit(" ", 1)[-1].lower().replace("lamda", "lambda")
        if letter in _GREEK:
            capital = "CAPITAL" in name and letter not in ("alpha", "beta", "epsilon", "zeta", "eta", "iota",
                                                            "kappa", "mu", "nu", "rho", "tau", "chi")
            return f"$\\{letter.capitalize() if capital else letter}$"
    plain = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
    return escape(plain) if plain else "?"


def _cell_tex(cell: Cell | None, col: Column, rank: int | None, marks: dict[str, str]) -> str:
    if cell is None:
        return ""
    if cell.missing:
        if not cell.note:
            return "--"  # (does not apply; the table's notes say why)
        mark = marks.get(cell.note)
        return r"\mbna" + (rf"\textsuperscript{{{mark}}}" if mark else "")
    text = format_number(cell.mean, col.digits, signed=cell.signed)
    if cell.std is not None:
        text = rf"\mbpm{{{text}}}{{{format_number(cell.std, col.digits)}}}"
    if rank == 1:
        text = rf"\mbbest{{{text}}}"
    elif rank == 2:
        text = rf"\mbsecond{{{text}}}"
    return text


def _header(col: Column) -> str:
    unit = f" ({escape(col.unit)})" if col.unit else ""
    arrow = _ARROWS[col.direction]
    return f"{escape(col.header)}{unit}" + (f" {arrow}" if arrow else "")


def table_tex(table: Table) -> str:
    """The table as a ``table`` float with booktabs rules (see module doc)."""
    rank = ranks(table)
    marks = footnote_marks(table)
    cols = table.columns
    lines = [f"% {table.title}: written by moegs-bench report from the results records (do not edit)", MACROS.rstrip(),
             r"\begin{table}", r"\centering", rf"\caption{{{escape(table.caption)}}}",
             rf"\label{{tab:{table.name}}}", r"\small"]
    spec = "l" + "r" * len(cols)
    wide = _too_wide(table)
    if wide:
        lines.append(r"\resizebox{\linewidth}{!}{%")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    groups = column_groups(cols)
    if any(g for g, _ in groups):
        cells, rules, start = [""], [], 2
        for name, span in groups:
            if name:
                cells.append(rf"\multicolumn{{{span}}}{{c}}{{{escape(name)}}}")
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            else:
                cells.extend([""] * span)
            start += span
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([escape(table.label_header), *(_header(c) for c in cols)]) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(table.rows):
        if row.rule_before and i > 0:
            lines.append(r"\midrule")
        label = escape(row.label)
        cells = [_cell_tex(row.cells.get(c.key), c, rank.get((i, c.key)), marks) for c in cols]
        if row.bound:
            label = rf"\mbbound{{{label}}}"
            cells = [rf"\mbbound{{{t}}}" if t else t for t in cells]
        lines.append(" & ".join([label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if wide:
        lines.append("}")
    extra = [rf"\textsuperscript{{{m}}}\,{escape(n)}" for n, m in marks.items()] + [escape(n) for n in table.notes]
    if extra:
        lines.append(r"\par\smallskip{\footnotesize " + r"\par ".join(extra) + r"\par}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _too_wide(table: Table) -> bool:
    r"""Whether the table would overflow the text width at \small (estimated from its characters):
    such a table is scaled down to the width."""
    label = max([len(table.label_header), *(len(r.label) for r in table.rows)])
    widths = [max(len(c.header) + len(c.unit) + (5 if c.unit else 2), 7) for c in table.columns]
    return label + sum(widths) + 2 * len(widths) > TEXT_CHARS


@dataclass(frozen=True)
class FigureRef:
    """A figure ``report.tex`` includes: a path relative to the report folder and its caption."""

    path: str
    caption: str
    label: str


def report_tex(title: str, tables: Sequence[Table], figures: Sequence[FigureRef], *, summary: Sequence[str] = (),
               grids: Sequence[tuple[str, str, Sequence[tuple[str, str]]]] = ()) -> str:
    """A standalone document: the summary sentences, every table (``\\input``) and figure.

    ``grids``: (caption, label, [(image path, sub-caption)]) figures laid out two per row."""
    out = [r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
           r"\usepackage{graphicx}", r"\usepackage{amssymb}", r"\usepackage{flafter}", r"\usepackage{caption}", r"\usepackage{subcaption}",
           r"\usepackage[hidelinks]{hyperref}", r"\pdfinfoomitdate=1", r"\pdftrailerid{}",
           r"\makeatletter\def\fps@table{!htbp}\def\fps@figure{!htbp}\makeatother", "",  # (floats stay near)
           r"\begin{document}", rf"\section*{{{escape(title)}}}"]
    out += [escape(s) + "\n" for s in summary]
    for table in tables:
        out.append(rf"\input{{tables/{table.name}.tex}}")
    for fig in figures:
        out += [r"\begin{figure}", r"\centering",  # (natural size, fonts as drawn; shrunk to fit)
                rf"\resizebox{{\ifdim\width>\linewidth\linewidth\else\width\fi}}{{!}}"
                rf"{{\includegraphics{{{fig.path}}}}}",
                rf"\caption{{{escape(fig.caption)}}}", rf"\label{{fig:{fig.label}}}", r"\end{figure}"]
    for caption, label, images in grids:
        out += [r"\begin{figure}", r"\centering"]
        for i, (path, sub) in enumerate(images):
            out += [r"\begin{subfigure}[t]{0.49\linewidth}", r"\centering",
                    rf"\includegraphics[width=\linewidth]{{{path}}}", rf"\caption{{{escape(sub)}}}",
                    r"\end{subfigure}" + ("\\par\\medskip" if i % 2 == 1 else r"\hfill")]
        out += [rf"\caption{{{escape(caption)}}}", rf"\label{{fig:{label}}}", r"\end{figure}"]
    out += [r"\clearpage" if figures or grids else "", r"\end{document}"]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class CompileResult:
    """What compiling gave: the PDF, or why there is none (and how to compile by hand)."""

    pdf: Path | None
    message: str
    failed: bool = False  # LaTeX is there and failed (not: absent)


def compile_pdf(folder: Path, tex: str = "report.tex", *, shown_as: Path | None = None) -> CompileResult:
    """Compile ``folder/tex`` with latexmk (pdfLaTeX) into ``folder/<stem>.pdf``; auxiliary files
    are removed. No TeX installed: no PDF and the command to run where there is one (in
    ``shown_as``, where the folder will be, default ``folder``)."""
    how = f"cd {shown_as or folder} && latexmk -pdf {tex}"
    latexmk = shutil.which("latexmk")
    if latexmk is None or shutil.which("pdflatex") is None:
        return CompileResult(None, f"no LaTeX here (latexmk and pdflatex not found): the .tex files are written; "
                                   f"compile with: {how}")
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "FORCE_SOURCE_DATE": "1"}
    cmd = [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", tex]
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=LATEXMK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return CompileResult(None, f"latexmk did not finish in {LATEXMK_TIMEOUT_S} s; compile with: {how}", True)
    stem = Path(tex).stem
    log = folder / f"{stem}.log"
    errors = [line for line in (log.read_text(errors="replace").splitlines() if log.is_file() else [])
              if line.startswith("!") or ".tex:" in line and "error" in line.lower()]
    subprocess.run([latexmk, "-c", tex], cwd=folder, env=env, capture_output=True, text=True,
                   timeout=LATEXMK_TIMEOUT_S)
    for name in (f"{stem}.fls", f"{stem}.fdb_latexmk", f"{stem}.log", f"{stem}.aux", f"{stem}.out"):
        (folder / name).unlink(missing_ok=True)
    pdf = folder / f"{stem}.pdf"
    if proc.returncode != 0 or not pdf.is_file():
        first = errors[0] if errors else (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        return CompileResult(None, f"latexmk failed ({first}); the .tex files are written; compile with: {how}",
                             True)
    return CompileResult(pdf, f"compiled {pdf.name} with latexmk")
