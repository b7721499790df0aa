"""Report plots (moegs_bench.reports.plots) and image figures (moegs_bench.reports.figures).

The plotted numbers are checked against hand-computed values and brute-force oracles through the
pure series functions; the drawing functions are checked for drawing exactly those series; the
writers for files, determinism and writing nothing when there is nothing to plot."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.colors import to_hex

from moegs_bench.errors import UserInputError
from moegs_bench.reports import figures, plots
from moegs_bench.reports.plots import Style
from moegs_bench.reports.records import Entry
from moegs_bench.results import Metrics, Provenance, ResultRecord, Timing, write_record

SCENE = "synthetic:kitchen"
ROUTER = (("router.variant", "volume-aware"),)


def expert(model: str, psnr: float | None = 24.0, *, fps: float | None = 30.0, storage: float | None = 1.0,
           seed: int = 0, scene: str = SCENE, per_frame: tuple = (), run_dir: Path | None = None) -> Entry:
    return Entry(role="expert", model=model, scene=scene, seed=seed, experts=(model,), psnr=psnr, fps=fps,
                 storage_mb=storage, per_frame=per_frame, run_dir=run_dir)


def mixture(experts: tuple[str, ...], psnr: float | None = 25.0, *, fps: float | None = 10.0,
            storage: float | None = 3.0, seed: int = 0, scene: str = SCENE, per_frame: tuple = (),
            regions: dict | None = None, run_dir: Path | None = None, record: Path | None = None,
            role: str = "mixture", model: str = "MoE-GS", settings: tuple = ROUTER) -> Entry:
    return Entry(role=role, model=model, scene=scene, seed=seed, experts=experts, settings=settings, psnr=psnr,
                 fps=fps, storage_mb=storage, per_frame=per_frame, regions=regions, run_dir=run_dir, record=record)


def pruned(criterion: str, ratio: float | None, psnr: float, *, seed: int = 0, threshold: float | None = None,
           experts: tuple[str, ...] = ("a", "b")) -> Entry:
    prune = [("prune.criterion", criterion)]
    prune += [("prune.ratio", ratio)] if ratio is not None else [("prune.threshold", threshold)]
    return mixture(experts, psnr, seed=seed, role="pruned", model="MoE-GS (pruned)",
                   settings=ROUTER + tuple(sorted(prune)))


def student(name: str, psnr: float, *, lam: float | None, steps: int = 100, seed: int = 0,
            scene: str = SCENE) -> Entry:
    settings = [("distill.from_scratch", False), ("distill.steps", steps), ("distill.student", name)]
    if lam is not None:
        settings.append(("distill.lam", lam))
    role, label = ("distilled", f"{name} (distilled)") if lam is not None else ("distill-baseline",
                                                                               f"{name} (GT baseline)")
    return Entry(role=role, model=label, scene=scene, seed=seed, experts=(name,), settings=tuple(sorted(settings)),
                 psnr=psnr, fps=30.0, storage_mb=1.0)


def frames(*values: float) -> tuple[tuple[int, float], ...]:
    return tuple(enumerate(values))


# ------------------------------------------------------------------------------------- Pareto


def brute_force_front(xs, ys, x_higher_better):
    def better_or_equal(q, p):
        bx = xs[q] >= xs[p] if x_higher_better else xs[q] <= xs[p]
        return bx and ys[q] >= ys[p]

    def dominates(q, p):
        return better_or_equal(q, p) and (xs[q], ys[q]) != (xs[p], ys[p])

    return sorted((p for p in range(len(xs)) if not any(dominates(q, p) for q in range(len(xs)))),
                  key=lambda i: (xs[i], i))


@pytest.mark.parametrize("x_higher_better", [True, False])
def test_pareto_front_matches_brute_force(x_higher_better):
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        xs = rng.integers(0, 5, n).astype(float).tolist()  # a small grid: many ties and duplicates
        ys = rng.integers(0, 5, n).astype(float).tolist()
        assert plots.pareto_front(xs, ys, x_higher_better=x_higher_better) == brute_force_front(xs, ys, x_higher_better)


def test_pareto_front_hand_made():
    # fps: (10, 25) (20, 24) (15, 23.5: dominated by (20, 24)) (30, 22)
    assert plots.pareto_front([10, 20, 15, 30], [25, 24, 23.5, 22], x_higher_better=True) == [0, 1, 3]
    # storage (lower better): (1, 22) (3, 25) (2, 21: dominated by (1, 22))
    assert plots.pareto_front([1, 3, 2], [22, 25, 21], x_higher_better=False) == [0, 1]
    assert plots.pareto_front([], [], x_higher_better=True) == []


# ------------------------------------------------------------------------- trade-off points


def test_tradeoff_points_average_seeds_and_skip_missing_figures():
    entries = [expert("a", 24.0, fps=30.0, seed=0), expert("a", 26.0, fps=40.0, seed=1),
               expert("b", 23.0, fps=None, storage=2.0),  # no FPS: not on the FPS plot, on the storage one
               mixture(("a", "b"), 25.0, fps=10.0),
               Entry(role="average", model="Average", scene=SCENE, seed=0, experts=("a", "b"), psnr=24.5),
               Entry(role="oracle", model="Oracle", scene=SCENE, seed=0, experts=("a", "b"), psnr=28.0, fps=99.0)]
    (panel,) = plots.tradeoff_points(entries, "fps")
    got = {(p.model, p.experts): (p.x, p.psnr, p.seeds) for p in panel.points}
    assert got == {("a", ("a",)): (35.0, 25.0, 2), ("MoE-GS", ("a", "b")): (10.0, 25.0, 1)}
    (panel,) = plots.tradeoff_points(entries, "storage_mb")
    assert {p.model for p in panel.points} == {"a", "b", "MoE-GS"}


def test_tradeoff_points_one_panel_per_scene_with_its_own_front():
    entries = [expert("a", 24.0, fps=30.0), expert("a", 20.0, fps=30.0, scene="synthetic:carousel"),
               mixture(("a", "b"), 25.0, fps=10.0), mixture(("a", "b"), 19.0, fps=10.0, scene="synthetic:carousel")]
    panels = plots.tradeoff_points(entries, "fps")
    assert [p.scene for p in panels] == ["synthetic:carousel", "synthetic:kitchen"]
    carousel, kitchen = panels
    assert [carousel.points[i].model for i in carousel.front] == ["a"]  # the mixture is dominated there
    assert [kitchen.points[i].model for i in kitchen.front] == ["MoE-GS", "a"]


# ------------------------------------------------------------------------------------ pruning


def test_prune_series_lines_per_criterion_and_reference():
    entries = [pruned("gate", 0.5, 24.0, seed=0), pruned("gate", 0.5, 23.0, seed=1), pruned("gate", 0.25, 24.5),
               pruned("random", 0.5, 22.0), pruned("gate", None, 21.0, threshold=0.1),  # threshold: no ratio
               mixture(("a", "b"), 25.0, seed=0), mixture(("a", "b"), 24.0, seed=1),
               mixture(("a", "c"), 30.0)]  # other experts: not the reference
    (panel,) = plots.prune_series(entries)
    lines = {ln.label: (ln.xs, ln.ys) for ln in panel.lines}
    assert lines == {"gate": ((0.25, 0.5), (24.5, 23.5)), "random": ((0.5,), (22.0,))}
    assert panel.reference == pytest.approx(24.5)
    assert plots.prune_series([mixture(("a", "b"))]) == []


# ------------------------------------------------------------------------------- distillation


def test_distill_series_gain_over_matching_baseline():
    entries = [student("a", 25.0, lam=0.5, seed=0), student("a", 24.0, lam=None, seed=0),
               student("a", 26.0, lam=0.5, seed=1), student("a", 24.5, lam=None, seed=1),
               student("a", 23.0, lam=0.0, seed=0),
               student("a", 20.0, lam=None, seed=0, steps=50),  # other steps: not this student's baseline
               student("b", 30.0, lam=0.5)]  # no baseline: left out
    (line,) = plots.distill_series(entries)
    assert line.label == "a" and line.style == "a"
    assert line.xs == (0.0, 0.5)
    assert line.ys == pytest.approx((23.0 - 24.0, ((25.0 - 24.0) + (26.0 - 24.5)) / 2))


def test_distill_series_splits_students_by_steps_when_they_differ():
    entries = [student("a", 25.0, lam=0.5, steps=100), student("a", 24.0, lam=None, steps=100),
               student("a", 21.0, lam=0.5, steps=50), student("a", 20.0, lam=None, steps=50)]
    lines = {ln.label: ln.ys for ln in plots.distill_series(entries)}
    assert lines == {"a (steps=50)": (1.0,), "a (steps=100)": (1.0,)}


# ---------------------------------------------------------------------------------- per frame


def per_frame_entries() -> list[Entry]:
    run = mixture(("a", "b"), per_frame=frames(25.0, 26.0, 27.0))
    return [expert("a", per_frame=frames(24.0, 22.0, 23.0)), expert("b", per_frame=frames(23.0, 23.5, 23.0)),
            expert("a", per_frame=frames(1.0, 1.0, 1.0), seed=5),  # another seed: not this run's
            run,
            Entry(role="average", model="Average", scene=SCENE, seed=0, experts=("a", "b"), settings=ROUTER,
                  psnr=24.0, per_frame=frames(24.5, 24.0, 24.1)),
            Entry(role="oracle", model="Oracle", scene=SCENE, seed=0, experts=("a", "b"), settings=ROUTER,
                  psnr=28.0, per_frame=frames(28.0, 28.5, 29.0))]


def test_per_frame_series_equals_the_entries_numbers():
    data = plots.per_frame_series(per_frame_entries(), "kitchen", ["b", "a"])
    got = {ln.label: (ln.xs, ln.ys) for ln in data.lines}
    assert got == {"a": ((0.0, 1.0, 2.0), (24.0, 22.0, 23.0)), "b": ((0.0, 1.0, 2.0), (23.0, 23.5, 23.0)),
                   "MoE-GS": ((0.0, 1.0, 2.0), (25.0, 26.0, 27.0)),
                   "Average": ((0.0, 1.0, 2.0), (24.5, 24.0, 24.1)),
                   plots.ORACLE_LABEL: ((0.0, 1.0, 2.0), (28.0, 28.5, 29.0))}
    assert data.best == ((0, "a"), (1, "b"), (2, "a"))  # a tie goes to the first expert


def test_per_frame_figure_draws_the_series_and_marks_the_oracle_as_a_bound():
    entries = per_frame_entries()
    data = plots.per_frame_series(entries, SCENE, ["a", "b"])
    styles = plots.report_styles(entries)
    with plots.paper_style():
        fig = plots.per_frame_figure(data, styles)
    drawn = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    for line in data.lines:
        np.testing.assert_array_equal(drawn[line.label].get_xydata(), np.column_stack([line.xs, line.ys]))
    assert "bound" in plots.ORACLE_LABEL
    assert to_hex(drawn[plots.ORACLE_LABEL].get_color()) == plots.FIXED_STYLES["Oracle"].color
    assert drawn[plots.ORACLE_LABEL].get_linestyle() == ":"


def test_per_frame_psnr_ambiguous_run_is_a_user_error(tmp_path):
    entries = per_frame_entries() + [mixture(("a", "b"), seed=1, per_frame=frames(1.0, 2.0, 3.0))]
    with pytest.raises(UserInputError, match="2 mixture runs match"):
        plots.per_frame_psnr(entries, tmp_path / "x", scene=SCENE, experts=("a", "b"))
    assert plots.per_frame_psnr(entries, tmp_path / "x", scene=SCENE, experts=("a", "b"), seed=1) is not None


# --------------------------------------------------------------------------------- gate share


def test_gate_share_series_all_pixels_is_the_pixel_weighted_mean():
    regions = {"static": {"pixels": 0.6, "gate_share": {"a": 0.5, "b": 0.5}},
               "rigid": {"pixels": 0.2, "gate_share": {"a": 0.1, "b": 0.9}},
               "topology": {"pixels": 0.0, "gate_share": None}}  # no pixels: no shares, left out
    (panel,) = plots.gate_share_series([mixture(("a", "b"), regions=regions), mixture(("a", "c"))])
    assert panel.title == "kitchen: a+b"
    names = [name for name, _ in panel.rows]
    assert names == ["static", "rigid", "all pixels"]
    assert panel.rows[2][1] == pytest.approx(((0.6 * 0.5 + 0.2 * 0.1) / 0.8, (0.6 * 0.5 + 0.2 * 0.9) / 0.8))


# ------------------------------------------------------------------------------------- styles


def test_model_styles_fixed_and_colours_by_expert_id():
    styles = plots.model_styles(["stg", "MoE-GS", "4dgs", "Average", "Oracle", "4dgs (distilled)"])
    palette = [styles["4dgs"].color, styles["stg"].color]
    # The runs' gate maps colour an expert the same (reports.palette): 4dgs blue, stg vermilion.
    assert palette == ["#0173b2", "#d55e00"]
    assert plots.model_styles(["stg", "e-d3dgs"])["stg"].color == "#d55e00"  # (whatever the company)
    assert styles["MoE-GS"] == Style("#000000", "*", "-")
    assert styles["Average"].linestyle == "--" and styles["Oracle"].linestyle == ":"
    assert styles["4dgs (distilled)"].color == styles["4dgs"].color
    assert len({(s.marker, str(s.linestyle)) for k, s in styles.items() if k in ("4dgs", "stg")}) == 2
    assert "#949494" not in palette  # the colour-blind palette's grey is the Average's


def test_same_expert_same_colour_in_two_plots():
    entries = per_frame_entries() + [expert("c", 20.0, fps=50.0)]
    styles = plots.report_styles(entries)
    data = plots.per_frame_series(entries, SCENE, ["a", "b"])
    with plots.paper_style():
        frame_fig = plots.per_frame_figure(data, styles)
        trade_fig = plots.tradeoff_figure(plots.tradeoff_points(entries, "fps"), "fps", styles)
    colour = {}
    for fig in (frame_fig, trade_fig):
        for line in fig.axes[0].get_lines():
            if line.get_label() in ("a", "b", "c"):
                colour.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    assert colour["a"] == {styles["a"].color} and colour["b"] == {styles["b"].color}
    assert len({styles[x].color for x in "abc"}) == 3


def test_none_figures_are_not_drawn_as_zero():
    entries = [expert("a", 24.0, fps=None, storage=1.0), expert("b", None, fps=30.0), mixture(("a", "b"), 25.0)]
    panels = plots.tradeoff_points(entries, "fps")
    with plots.paper_style():
        fig = plots.tradeoff_figure(panels, "fps", plots.report_styles(entries))
    points = np.concatenate([ln.get_xydata() for ln in fig.axes[0].get_lines() if ln.get_label() != "Pareto front"])
    np.testing.assert_array_equal(points, [[10.0, 25.0]])  # only the mixture has both figures


# ------------------------------------------------------------------------------------- output


def report_entries() -> list[Entry]:
    regions = {"static": {"pixels": 0.9, "gate_share": {"a": 0.3, "b": 0.7}},
               "rigid": {"pixels": 0.1, "gate_share": {"a": 0.8, "b": 0.2}}}
    entries = per_frame_entries()
    entries[3] = mixture(("a", "b"), per_frame=frames(25.0, 26.0, 27.0), regions=regions)
    return entries + [pruned("gate", 0.5, 24.0), student("a", 25.0, lam=0.5), student("a", 24.0, lam=None)]


def test_write_plots_writes_every_plot_deterministically(tmp_path):
    first = plots.write_plots(report_entries(), tmp_path / "one")
    second = plots.write_plots(report_entries(), tmp_path / "two")
    assert [p.name for p in first] == ["quality_vs_fps", "quality_vs_storage", "psnr_vs_prune_ratio",
                                       "distill_gain_vs_lam", "gate_share", "per_frame_kitchen_a-b"]
    for a, b in zip(first, second):
        assert a.pdf.read_bytes()[:5] == b"%PDF-" and a.png.read_bytes()[:4] == b"\x89PNG"
        assert a.pdf.read_bytes() == b.pdf.read_bytes() and a.png.read_bytes() == b.png.read_bytes()
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", a.pdf.name) and a.title
    assert b"CreationDate" not in first[0].pdf.read_bytes()
    assert "Oracle" in first[-1].title and "ground truth" in first[-1].title
    assert "mean gate weight" in first[4].title.lower() and "argmax" in first[4].title
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(
        f"{p.name}.{ext}" for p in first for ext in ("pdf", "png"))


def test_nothing_to_plot_writes_nothing(tmp_path):
    only_baselines = [Entry(role="average", model="Average", scene=SCENE, seed=0, experts=("a", "b"), psnr=24.0),
                      expert("a", None, fps=None, storage=None)]
    out = tmp_path / "out"
    assert plots.quality_vs_fps(only_baselines, out / "q") is None
    assert plots.quality_vs_storage(only_baselines, out / "s") is None
    assert plots.psnr_vs_prune_ratio(only_baselines, out / "p") is None
    assert plots.distill_gain_vs_lam(only_baselines, out / "d") is None
    assert plots.gate_share(only_baselines, out / "g") is None
    assert plots.per_frame_psnr(only_baselines, out / "f", scene=SCENE, experts=("a", "b")) is None
    assert plots.write_plots(only_baselines, out) == []
    assert not out.exists()


def test_run_names_are_safe_and_unique():
    runs = [mixture(("4dgs", "e/d3dgs")), mixture(("4dgs", "e/d3dgs"), seed=1), mixture(("x",)), mixture(("x",))]
    assert plots.run_names(runs, "per_frame") == ["per_frame_kitchen_4dgs-e-d3dgs_seed0",
                                                  "per_frame_kitchen_4dgs-e-d3dgs_seed1",
                                                  "per_frame_kitchen_x_seed0", "per_frame_kitchen_x_seed0_2"]


# ------------------------------------------------------------------------------------ figures


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, pixels)
    return path


def test_gate_grid_copies_the_first_gate_figure_and_skips_runs_without(tmp_path):
    run = tmp_path / "runs" / "ab"
    first = write_png(run / "gates" / "cam00__000000.png", np.full((4, 6, 3), 10, np.uint8))
    write_png(run / "gates" / "cam00__000001.png", np.full((4, 6, 3), 200, np.uint8))
    entries = [mixture(("a", "b"), run_dir=run), mixture(("a", "c"), run_dir=tmp_path / "runs" / "ac")]
    fig, skipped = figures.gate_grid(entries, tmp_path / "report" / "figures")
    (panel,) = fig.panels
    assert panel.path == Path("figures/gates_kitchen_a-b.png")
    assert (tmp_path / "report" / panel.path).read_bytes() == first.read_bytes()
    assert "cam00/000000" in panel.caption and "kitchen" in panel.caption and "a, b" in panel.caption
    assert len(skipped) == 1 and "a+c" in skipped[0] and "no gates folder" in skipped[0]
    assert figures.gate_grid(entries[1:], tmp_path / "none") == (None, skipped)


def test_best_window_matches_brute_force():
    rng = np.random.default_rng(1)
    score = rng.normal(size=(7, 9))
    for h, w in itertools.product((1, 3, 7), (1, 4, 9)):
        sums = {(y, x): score[y:y + h, x:x + w].sum() for y in range(8 - h) for x in range(10 - w)}
        assert figures.best_window(score, h, w) == max(sums, key=lambda k: (sums[k], -k[0], -k[1]))


def test_gain_view_and_best_expert():
    assert figures.gain_view({"v0": 25.0, "v1": 26.0, "v2": 30.0}, {"v0": 24.0, "v1": 23.0}) == "v1"
    assert figures.gain_view({"v0": 1.0}, {"v1": 1.0}) is None
    run = mixture(("a", "b"))
    entries = [expert("a", 24.0), expert("b", 25.0), expert("c", 30.0), expert("b", 26.0, seed=3)]
    assert figures.best_expert(run, entries).model == "b"
    assert figures.best_expert(run, entries).seed == 0


def make_record(path: Path, kind: str, name: str, per_view: list[dict], extra: dict | None = None) -> Path:
    metrics = Metrics(psnr=float(np.mean([v["psnr"] for v in per_view])), ssim=0.9, lpips=None,
                      lpips_unavailable_reason="not installed", per_view=per_view)
    provenance = Provenance(moegs_bench_version="0.1.0", git_commit=None, git_dirty=None, packages={},
                            python="3.11", platform="test", device="cpu", created="2025-01-01T00:00:00+00:00")
    record = ResultRecord(kind=kind, name=name, scene=SCENE, config={}, seed=0, num_gaussians=1, storage_bytes=1,
                          storage_mb=1 / 2**20, metrics=metrics, timing=Timing(1.0, 1.0, 1.0), provenance=provenance,
                          extra=extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_record(path, record)
    return path


@pytest.fixture
def crop_run(tmp_path):
    """A fake mixture run of experts a and b on 8x12 images: renders, expert folders, records."""
    rng = np.random.default_rng(2)
    truth = {k: rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for k in ("cam00/000000", "cam00/000001")}
    run = tmp_path / "run"
    folders = {x: tmp_path / "experts" / x for x in ("a", "b")}
    (run).mkdir()
    (run / "experts.json").write_text(json.dumps({x: {"folder": str(f)} for x, f in folders.items()}))
    for key, gt in truth.items():
        name = figures.render_name(key)
        write_png(run / "renders" / "test" / name, gt // 2 + 60)  # the mixture: closer to the truth
        for x, folder in folders.items():
            write_png(folder / "renders" / "test" / name, gt // 3)
    views = lambda gains: [{"key": k, "psnr": 20.0 + g, "ssim": 0.9, "lpips": None}  # noqa: E731
                           for k, g in zip(truth, gains)]
    mix = make_record(run / "results" / "mixture.json", "mixture", "moe-gs:a+b", views([1.0, 3.0]))
    best = make_record(run / "results" / "b.json", "expert", "b", views([0.5, 0.5]))
    entries = [mixture(("a", "b"), run_dir=run, record=mix), expert("a", 20.0, run_dir=run),
               Entry(role="expert", model="b", scene=SCENE, seed=0, experts=("b",), psnr=21.0, run_dir=run,
                     record=best)]
    return entries, truth, folders


def test_crops_default_view_is_the_largest_gain_and_rerun_is_identical(crop_run, tmp_path):
    entries, truth, _ = crop_run
    asked: list[str] = []

    def ground_truth(key):
        asked.append(key)
        return truth[key]

    out = tmp_path / "report" / "figures"
    fig, reason = figures.crops(entries[0], entries, out, ground_truth=ground_truth)
    assert reason is None and asked == ["cam00/000001"]  # gains: 0.5 dB and 2.5 dB
    assert "cam00/000001 (+2.50 dB)" in fig.caption and "b, highest mean PSNR" in fig.caption
    (panel,) = fig.panels
    assert panel.path == Path("figures/crops_kitchen_a-b.png") and fig.pdf == Path("figures/crops_kitchen_a-b.pdf")
    png, pdf = (out.parent / panel.path).read_bytes(), (out.parent / fig.pdf).read_bytes()
    again, _ = figures.crops(entries[0], entries, out, views=["cam00/000001"], ground_truth=truth.__getitem__)
    assert (out.parent / panel.path).read_bytes() == png and (out.parent / fig.pdf).read_bytes() == pdf


def test_crops_two_views_and_error_map(crop_run, tmp_path):
    entries, truth, _ = crop_run
    fig, reason = figures.crops(entries[0], entries, tmp_path / "f", views=list(truth), ground_truth=truth.get,
                                name="two")
    assert reason is None and fig.name == "two" and (tmp_path / "f" / "two.png").is_file()
    gt = np.zeros((2, 2, 3))
    render = np.stack([np.full((2, 2), 0.3), np.zeros((2, 2)), np.full((2, 2), 0.6)], axis=2)  # [2, 2, 3]
    np.testing.assert_allclose(figures.error_map(render, gt), np.full((2, 2), 0.3))
    with pytest.raises(UserInputError, match="1 to 2 views"):
        figures.crops(entries[0], entries, tmp_path / "f", views=["a", "b", "c"], ground_truth=truth.get)
    with pytest.raises(UserInputError, match="mixture entry"):
        figures.crops(entries[1], entries, tmp_path / "f", ground_truth=truth.get)


@pytest.mark.parametrize("damage", ["expert folder", "render", "ground truth", "size", "experts.json"])
def test_crops_missing_input_gives_a_reason_not_an_error(crop_run, tmp_path, damage):
    entries, truth, folders = crop_run
    run = entries[0].run_dir
    def missing(key):
        raise KeyError(key)

    ground_truth = truth.__getitem__
    if damage == "expert folder":
        import shutil
        shutil.rmtree(folders["b"])
    elif damage == "render":
        (run / "renders" / "test" / "cam00__000001.png").unlink()
    elif damage == "ground truth":
        ground_truth = missing
    elif damage == "size":
        ground_truth = lambda key: np.zeros((4, 4, 3), np.uint8)  # noqa: E731
    else:
        (run / "experts.json").unlink()
    out = tmp_path / "out"
    fig, reason = figures.crops(entries[0], entries, out, ground_truth=ground_truth)
    assert fig is None and reason.startswith("crops of kitchen: a+b: ")
    assert not out.exists()


def test_crops_of_large_images_add_a_zoomed_row(tmp_path):
    run = tmp_path / "run"
    key = "cam00/000000"
    truth = np.zeros((256, 260, 3), np.uint8)
    mixture_img = truth.copy()
    expert_img = truth.copy()
    expert_img[150:250, 10:90] = 255  # where the expert is wrong and the mixture is right
    write_png(run / "renders" / "test" / figures.render_name(key), mixture_img)
    write_png(tmp_path / "b" / "renders" / "test" / figures.render_name(key), expert_img)
    (run / "experts.json").write_text(json.dumps({"b": {"folder": str(tmp_path / "b")}}))
    run_entry = mixture(("b",), run_dir=run)
    fig, reason = figures.crops(run_entry, [run_entry, expert("b", run_dir=run)], tmp_path / "f", views=[key],
                                ground_truth=lambda k: truth)
    assert reason is None
    image = iio.imread(tmp_path / "f" / fig.panels[0].path.name)
    assert image.shape[0] > image.shape[1] * 0.25  # two rows of panels (full view and zoom)
    assert figures.best_window(figures.error_map(expert_img / 255.0, truth / 255.0), 128, 130) == (122, 0)


def test_plots_leave_the_global_style_alone(tmp_path):
    import matplotlib

    before = dict(matplotlib.rcParams)
    plots.gate_share(report_entries(), tmp_path / "g")
    assert dict(matplotlib.rcParams) == before


def test_winner_share_series_reads_the_win_shares():
    regions = {"static": {"pixels": 0.75, "gate_share": {"a": 0.5, "b": 0.5}, "win_share": {"a": 1.0, "b": 0.0}},
               "rigid": {"pixels": 0.25, "gate_share": {"a": 0.5, "b": 0.5}, "win_share": {"a": 0.2, "b": 0.8}}}
    (panel,) = plots.gate_share_series([mixture(("a", "b"), regions=regions)], "win_share")
    assert dict(panel.rows)["static"] == (1.0, 0.0)
    assert dict(panel.rows)[plots.ALL_PIXELS] == pytest.approx((0.75 + 0.25 * 0.2, 0.25 * 0.8))
    older = {k: {kk: vv for kk, vv in v.items() if kk != "win_share"} for k, v in regions.items()}
    assert plots.gate_share_series([mixture(("a", "b"), regions=older)], "win_share") == []  # (records before it)
