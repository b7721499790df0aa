"""moegs-bench report: records found by schema, tables ranked after rounding, mean ± std over
seeds, dataset averages over complete rows, n/a with reasons, byte-identical reruns, nothing
half-written, and a report.tex that compiles, read back with pdftotext."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from moegs_bench.reports.build import ReportOptions, build_report
from moegs_bench.reports.latex import escape, table_tex
from moegs_bench.reports.records import ReportInputError, entries_from
from moegs_bench.reports.studies import build_tables, group_entries
from moegs_bench.reports.table import Cell, Column, Row, Table, cell_of, format_number, ranks
from moegs_bench.results import Metrics, Provenance, ResultRecord, Timing, write_record
from test_cli import cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
HAVE_TEX = shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None
HAVE_PDFTOTEXT = shutil.which("pdftotext") is not None
TEX_REASON = "LaTeX (latexmk, pdflatex) or pdftotext is not installed (.ci/run installs them)"


# ------------------------------------------------------------------------------ writing records


def record(kind: str, name: str, scene: str, psnr: float, *, seed: int = 0, ssim: float = 0.8,
           lpips: float | None = 0.1, config: dict | None = None, extra: dict | None = None,
           commit: str = COMMIT, created: str = "2026-01-01T00:00:00+00:00", fps: float = 20.0,
           storage_bytes: int = 2**20, train_seconds: float = 120.0, frames: tuple[float, ...] = ()) -> ResultRecord:
    per_view = [{"key": f"cam00/{i:06d}", "psnr": p, "ssim": ssim, "lpips": lpips} for i, p in enumerate(frames)]
    return ResultRecord(
        kind=kind, name=name, scene=scene, config=config or {"profile": "tiny"}, seed=seed, num_gaussians=1000,
        storage_bytes=storage_bytes, storage_mb=storage_bytes / 2**20,
        metrics=Metrics(psnr=psnr, ssim=ssim, lpips=lpips,
                        lpips_unavailable_reason=None if lpips is not None else "lpips weights are not installed",
                        lpips_metric="lpips_alex_v0.1" if lpips is not None else None, per_view=per_view),
        timing=Timing(train_seconds=train_seconds, render_fps=fps, render_ms_per_frame=1000.0 / fps),
        provenance=Provenance(moegs_bench_version="0.1.0", git_commit=commit, git_dirty=False, packages={},
                              python="3.11", platform="test", device="cpu: test", created=created),
        extra=extra or {})


def write_run(folder: Path, scene: str, experts: dict[str, float], mixture: float, average: float, oracle: float,
              *, seed: int = 0, variant: str = "volume-aware", lpips: bool = True, commit: str = COMMIT) -> Path:
    """A mixture run folder as ``moegs-bench run`` lays it out: results/<expert>.json, results/mixture.json."""
    for eid, psnr in experts.items():
        write_record(folder / "results" / f"{eid}.json",
                     record("expert", eid, scene, psnr, seed=seed, lpips=0.1 if lpips else None, commit=commit,
                            config={"profile": "tiny", "train": {"iterations": 1200}}))
    base = {"uniform_average": {"psnr": average, "ssim": 0.8, "lpips": 0.12 if lpips else None},
            "oracle": {"psnr": oracle, "ssim": 0.9, "lpips": 0.05 if lpips else None, "uses_ground_truth": True}}
    config = {"profile": "tiny", "experts": list(experts), "router": {"variant": variant, "iterations": 300},
              "expert_iterations": None}
    write_record(folder / "results" / "mixture.json",
                 record("mixture", "moe-gs:" + "+".join(experts), scene, mixture, seed=seed, config=config,
                        lpips=0.08 if lpips else None, extra={"baselines": base}, fps=8.0, commit=commit,
                        train_seconds=600.0))
    return folder


def table_named(tables: list[Table], prefix: str) -> Table:
    return next(t for t in tables if t.name.startswith(prefix))


def row(table: Table, label: str) -> Row:
    return next(r for r in table.rows if r.label == label)


# -------------------------------------------------------------------------------------- ranking


def test_ranks_after_rounding_ties_share_and_bounds_are_not_ranked():
    cols = [Column("psnr", "PSNR", "dB", +1, 2), Column("lpips", "LPIPS", "", -1, 1), Column("k", "K", "", 0, 0)]
    rows = [Row("a", {"psnr": Cell(23.456), "lpips": Cell(0.12), "k": Cell(1)}),
            Row("b", {"psnr": Cell(23.454), "lpips": Cell(0.14), "k": Cell(2)}),  # PSNR prints 23.45
            Row("c", {"psnr": Cell(22.1), "lpips": Cell(0.31), "k": Cell(3)}),
            Row("o", {"psnr": Cell(30.0), "lpips": Cell(0.01), "k": Cell(4)}, ranked=False, bound=True),
            Row("d", {"psnr": Cell(None, note="x"), "lpips": Cell(0.06), "k": Cell(5)})]
    got = ranks(Table("t", "t", "c", "m", cols, rows))
    # PSNR: 23.46 > 23.45 > 22.10; the oracle's 30 is not ranked, d has none.
    # LPIPS (1 digit, lower better): 0.1 (a), 0.1 (b), 0.3 (c), 0.1 (d, 0.06 prints 0.1): a, b, d tie best.
    assert got == {(0, "psnr"): 1, (1, "psnr"): 2, (0, "lpips"): 1, (1, "lpips"): 1, (4, "lpips"): 1,
                   (2, "lpips"): 2}


def test_format_and_cells():
    assert format_number(-0.001, 2) == "0.00" and format_number(0.126, 2, signed=True) == "+0.13"
    assert format_number(-0.126, 2, signed=True) == "-0.13"
    c = cell_of([1.0, 2.0, 4.0])
    assert c.mean == pytest.approx(statistics.fmean([1, 2, 4])) and c.std == pytest.approx(statistics.stdev([1, 2, 4]))
    assert c.n == 3 and cell_of([5.0]).std is None
    missing = cell_of([None, None], note="why")
    assert missing.missing and missing.note == "why"


def test_latex_escapes_special_characters():
    assert escape("a_b & 50% #1 $x {y} ~ ^") == r"a\_b \& 50\% \#1 \$x \{y\} \textasciitilde{} \textasciicircum{}"
    # pdfLaTeX's UTF-8 input knows Latin-1 only: Greek becomes math, the rest ASCII (or "?").
    assert escape("λ 0.5 ± Δ, σ, Ω, é, ﬁ, 中") == r"$\lambda$ 0.5 $\pm$ $\Delta$, $\sigma$, $\Omega$, é, fi, ?"


# ---------------------------------------------------------------------------------- the tables


@pytest.fixture
def suite(tmp_path) -> Path:
    """Two scenes, two seeds on kitchen, one on juggler; a 2-expert subset on kitchen only."""
    root = tmp_path / "records"
    write_run(root / "k0", "synthetic:kitchen", {"4dgs": 23.0, "e-d3dgs": 23.5}, 24.0, 23.8, 26.0, seed=0)
    write_run(root / "k1", "synthetic:kitchen", {"4dgs": 23.2, "e-d3dgs": 23.3}, 24.4, 23.9, 26.2, seed=1)
    write_run(root / "j0", "synthetic:juggler", {"4dgs": 21.0, "e-d3dgs": 22.0}, 22.6, 22.2, 24.0, seed=0)
    write_run(root / "k0s", "synthetic:kitchen", {"4dgs": 23.0}, 23.4, 23.0, 23.0, seed=0)  # K=1 subset
    return root


def test_main_table_means_over_seeds_and_averages_over_complete_scenes(suite):
    found = entries_from([suite])
    tables = build_tables(group_entries(found.entries, "dataset"))
    main = table_named(tables, "main_synthetic")
    # MoE-GS: kitchen seeds 0, 1 -> 24.0, 24.4; juggler seed 0 only -> no seed is common to both
    # scenes, so the average of the per-scene means: (24.2 + 22.6) / 2, no std.
    mix = row(main, "MoE-GS").cells["psnr"]
    assert mix.mean == pytest.approx((24.2 + 22.6) / 2) and mix.std is None
    # Per scene: kitchen has two seeds -> mean ± sample std.
    scenes = table_named(tables, "scenes_synthetic")
    k = row(scenes, "MoE-GS").cells["synthetic:kitchen/psnr"]
    assert k.mean == pytest.approx(24.2) and k.std == pytest.approx(statistics.stdev([24.0, 24.4]))
    assert row(scenes, "e-d3dgs").cells["synthetic:juggler/psnr"].mean == pytest.approx(22.0)
    # The oracle is a bound: listed, never ranked; the mixture is best, the average second.
    r = ranks(main)
    labels = [x.label for x in main.rows]
    assert r[(labels.index("MoE-GS"), "psnr")] == 1
    assert r[(labels.index("Average (uniform, no router)"), "psnr")] == 2
    assert not any(i == labels.index("Oracle (per-pixel, uses GT)") for i, _ in r)
    # The average has no FPS of its own: "--" (does not apply), not n/a, never 0.
    fps = row(main, "Average (uniform, no router)").cells["fps"]
    assert fps.missing and not fps.note
    assert "--" in table_tex(main)


def test_subsets_table_uses_the_scenes_every_subset_ran_on(suite):
    found = entries_from([suite])
    sub = table_named(build_tables(group_entries(found.entries, "dataset")), "subsets_synthetic")
    assert [x.label for x in sub.rows] == ["4dgs", "4dgs + e-d3dgs"]
    assert "kitchen" in sub.caption and "juggler" not in sub.caption
    pair = row(sub, "4dgs + e-d3dgs").cells
    # kitchen, seeds 0 and 1: mixture 24.0 / 24.4, average 23.8 / 23.9, oracle 26.0 / 26.2
    assert pair["mixture"].mean == pytest.approx(24.2)
    assert pair["gain"].mean == pytest.approx(statistics.fmean([0.2, 0.5]))
    assert pair["best"].mean == pytest.approx(statistics.fmean([23.5, 23.3]))
    assert pair["closed"].mean == pytest.approx(statistics.fmean([100 * 0.2 / 2.2, 100 * 0.5 / 2.3]))
    # The K=1 "mixture" has average == oracle: no gap, so the share closed is n/a with its reason.
    assert row(sub, "4dgs").cells["closed"].missing


def test_missing_scene_and_missing_lpips_are_na_with_a_reason(tmp_path):
    root = tmp_path / "r"
    write_run(root / "a", "synthetic:kitchen", {"4dgs": 23.0, "stg": 22.0}, 24.0, 23.5, 25.0)
    write_run(root / "b", "synthetic:juggler", {"4dgs": 21.0, "stg": 21.5}, 22.0, 21.8, 23.0, lpips=False)
    write_record(root / "c" / "results.json", record("expert", "ex4dgs", "synthetic:kitchen", 23.3))
    tables = build_tables(group_entries(entries_from([root]).entries, "dataset"))
    main = table_named(tables, "main_synthetic")
    ex = row(main, "ex4dgs").cells["psnr"]
    assert ex.missing and ex.note == "not run on juggler"
    lp = row(main, "MoE-GS").cells["lpips"]
    assert lp.missing and "lpips weights are not installed" in lp.note
    tex = table_tex(main)
    assert r"\mbna\textsuperscript{a}" in tex and "not run on juggler" in tex
    assert "lpips weights are not installed" in tex


def test_same_configuration_from_different_code_is_warned(tmp_path):
    write_run(tmp_path / "a", "synthetic:kitchen", {"4dgs": 23.0, "stg": 22.0}, 24.0, 23.5, 25.0)
    write_run(tmp_path / "b", "synthetic:kitchen", {"4dgs": 23.0, "stg": 22.0}, 24.0, 23.5, 25.0,
              commit=OTHER_COMMIT)
    found = entries_from([tmp_path])
    assert any("different code" in w and OTHER_COMMIT[:12] in w for w in found.warnings)
    assert len([e for e in found.entries if e.role == "mixture"]) == 1  # same figures: one result


def test_version_1_records_are_read_and_unknown_versions_refused(tmp_path):
    write_run(tmp_path / "a", "synthetic:kitchen", {"4dgs": 23.0, "stg": 22.0}, 24.0, 23.5, 25.0)
    path = tmp_path / "a" / "results" / "4dgs.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    del data["metrics"]["lpips_metric"]
    path.write_text(json.dumps(data))
    found = entries_from([tmp_path])
    four = next(e for e in found.entries if e.model == "4dgs")
    assert four.lpips_metric == "lpips_alex_v0.1"  # (version 1: the lpips package's AlexNet)
    data["schema_version"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(ReportInputError, match=r"4dgs\.json.*schema version 7"):
        entries_from([tmp_path])


# ------------------------------------------------------------------------------------ the folder


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "provenance.json"}


def test_rerun_is_byte_identical_and_a_failed_rerun_keeps_the_old_report(suite, tmp_path, monkeypatch):
    out = tmp_path / "report"
    options = ReportOptions(compile=False)
    build_report([suite], out, options)
    first = _digests(out)
    assert {"report.tex", "index.html", "summary.md", "report.json", "tables/main_synthetic.tex"} <= set(first)
    build_report([suite], out, options)
    assert _digests(out) == first

    import moegs_bench.reports.build as build

    def broken(tables):
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "headline", broken)
    with pytest.raises(RuntimeError):
        build_report([suite], out, options)
    assert _digests(out) == first  # the previous report, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records", "report"]  # no partial folder left


def test_cli_errors_are_one_line_and_write_nothing(suite, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "other.json").write_text('{"schema": "something/else"}')
    proc = cli("report", str(empty), "--out", str(tmp_path / "r1"))
    assert proc.returncode == 2 and "no moegs-bench results records under" in proc.stderr
    assert str(empty) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("mine")
    proc = cli("report", str(suite), "--out", str(foreign))
    assert proc.returncode == 2 and "is not a moegs-bench report" in proc.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["paper.tex"]
    proc = cli("report", str(empty / "sub" / "other.json"), "--out", str(tmp_path / "r1"))
    assert proc.returncode == 2 and "other.json: not a moegs-bench results record" in proc.stderr
    proc = cli("report", str(tmp_path / "missing"), "--out", str(tmp_path / "r1"))
    assert proc.returncode == 2 and "missing: no such file or folder" in proc.stderr
    proc = cli("report", str(suite), "--out", str(tmp_path / "r2"), "--metrics", "psnr,fid")
    assert proc.returncode == 2 and "--metrics: unknown metric 'fid'" in proc.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


# ---------------------------------------------------------------------------------- compiled PDF


@pytest.mark.skipif(not (HAVE_TEX and HAVE_PDFTOTEXT) and not os.environ.get("CI"), reason=TEX_REASON)
def test_report_compiles_and_the_pdf_holds_the_numbers(finished, suite, tmp_path):
    """From a real run folder (the session's finished run) plus the hand-written suite: the PDF
    compiles and its text (pdftotext) carries the numbers of the records, rounded as printed."""
    assert HAVE_TEX and HAVE_PDFTOTEXT, TEX_REASON  # (in CI they must be there)
    _, run_dir, _ = finished
    out = tmp_path / "report"
    cache = ["--cache", str(tmp_path / "cache")]  # (the crops read the scene's ground truth through it)
    proc = cli("report", str(run_dir), str(suite), "--out", str(out), "--no-progress", *cache, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (out / "figures" / "crops_kitchen_static-stg.png").is_file(), proc.stderr
    pdf = out / "report.pdf"
    assert pdf.is_file(), proc.stdout
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    mixture = json.loads((run_dir / "results" / "mixture.json").read_text())
    assert format_number(mixture["metrics"]["psnr"], 2) in text
    assert format_number(mixture["extra"]["baselines"]["oracle"]["psnr"], 2) in text
    # the hand-written suite: MoE-GS on synthetic averages (24.2 + 22.6) / 2 = 23.40
    line = next(x for x in text.splitlines() if re.match(r"\s*MoE-GS\s+23\.40", x))
    assert "0.080" in line  # its LPIPS, three digits
    # a rerun compiles to the same bytes (SOURCE_DATE_EPOCH)
    before = pdf.read_bytes()
    proc = cli("report", str(run_dir), str(suite), "--out", str(out), "--no-progress", *cache, timeout=600)
    assert proc.returncode == 0 and (out / "report.pdf").read_bytes() == before


def test_pruning_and_distillation_tables_against_their_references(tmp_path):
    scene = "synthetic:kitchen"
    run = write_run(tmp_path / "run", scene, {"4dgs": 23.0, "stg": 22.0}, 24.0, 23.5, 25.0)
    source = json.loads((run / "results" / "mixture.json").read_text())
    for criterion, ratio, psnr in (("gate", 0.5, 23.2), ("opacity", 0.5, 22.5), ("gate", 0.25, 23.8)):
        config = {**source["config"], "prune": {"criterion": criterion, "ratio": ratio, "threshold": None,
                                                 "views": None, "seed": 0, "finetune_steps": 0}}
        write_record(tmp_path / f"prune-{criterion}-{ratio}" / "results" / "mixture.json",
                     record("mixture", "pruned", scene, psnr, config=config, fps=12.0, storage_bytes=2**19))
    for lam, psnr in ((None, 23.1), (0.25, 23.4), (0.75, 22.9)):
        settings = {"student": "4dgs", "lam": lam, "steps": 300, "from_scratch": False, "start_step": 1200}
        write_record(tmp_path / f"distill-{lam}" / "results.json",
                     record("expert", "4dgs", scene, psnr, extra={
                         "variant": "baseline" if lam is None else "distilled", "distill": settings}))
    tables = build_tables(group_entries(entries_from([tmp_path]).entries, "dataset"))
    prune = table_named(tables, "pruning_synthetic")
    assert [r.label for r in prune.rows] == ["unpruned", "gate, ratio 0.25", "gate, ratio 0.5", "opacity, ratio 0.5"]
    unpruned, *cut = prune.rows
    assert unpruned.cells["delta"].missing and not unpruned.cells["delta"].note  # "--": the reference itself
    assert [r.cells["delta"].mean for r in cut] == pytest.approx([-0.2, -0.8, -1.5])
    assert row(prune, "gate, ratio 0.5").cells["storage_mb"].mean == pytest.approx(0.5)
    distill = table_named(tables, "distillation_synthetic")
    assert [r.label for r in distill.rows] == ["4dgs, ground truth only (300 steps, 1 scene)",
                                              "4dgs, lam 0.25 (300 steps, 1 scene)", "4dgs, lam 0.75 (300 steps, 1 scene)"]
    baseline, *distilled = distill.rows
    assert baseline.cells["gain"].missing and not baseline.cells["gain"].note  # "--": the baseline itself
    assert [r.cells["gain"].mean for r in distilled] == pytest.approx([0.3, -0.2])
    assert ranks(distill) == {(1, "gain"): 1, (2, "gain"): 2}  # (the gain only: blocks may differ in scenes)


def test_group_by_scene_and_the_html_page_is_self_contained(suite, tmp_path):
    out = tmp_path / "report"
    result = build_report([suite], out, ReportOptions(group_by="scene", compile=False, formats=("html", "md")))
    assert {t.name for t in result.tables} >= {"main_synthetic-kitchen", "main_synthetic-juggler"}
    assert not (out / "report.tex").exists() and not list((out / "tables").glob("*.tex"))
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # (opens offline)
    for link in re.findall(r'(?:src|href)="([^"#]+)"', page):
        assert (out / link).is_file(), link
    assert page.count('<table class="sortable"') == len(result.tables)
    summary = (out / "summary.md").read_text()
    assert "| **24.20 ± 0.28** |" in summary  # MoE-GS on kitchen, seeds 0 and 1: 24.2 ± stdev(24.0, 24.4)


def test_without_latex_the_tex_is_written_and_the_command_to_compile_it_given(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tex-here"))  # (latexmk, pdflatex not found)
    out = tmp_path / "report"
    result = build_report([suite], out, ReportOptions(figures=False))
    assert result.pdf is None and not (out / "report.pdf").exists()
    assert (out / "report.tex").is_file() and (out / "tables" / "main_synthetic.tex").is_file()
    assert result.latex_message.endswith(f"compile with: cd {out} && latexmk -pdf report.tex")
    assert json.loads((out / "provenance.json").read_text())["latex"] == result.latex_message


def test_crops_refuse_a_dataset_other_than_the_runs(finished, tmp_path):
    """The crops read the ground truth from the scene the record names; a dataset of another size
    than the run's (its record's extra.dataset) gives no figure and says why."""
    from moegs_bench.reports import figures

    _, run_dir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    found = entries_from([copy])
    mix = next(e for e in found.entries if e.role == "mixture")
    figure, reason = figures.crops(mix, found.entries, tmp_path / "a", cache_dir=tmp_path / "cache")
    assert figure is not None and reason is None
    path = copy / "results" / "mixture.json"
    data = json.loads(path.read_text())
    data["extra"]["dataset"]["bytes"] += 1
    path.write_text(json.dumps(data))
    found = entries_from([copy])
    mix = next(e for e in found.entries if e.role == "mixture")
    figure, reason = figures.crops(mix, found.entries, tmp_path / "b", cache_dir=tmp_path / "cache")
    assert figure is None and "is not the one the run used" in reason
