"""The training guard (moegs_bench.training.guard) on hand-made histories: a collapsing Gaussian
count, a loss that turns NaN, a loss that keeps rising, and the opacity reset it must forgive."""

from __future__ import annotations

import math

import pytest

from moegs_bench.training.densify import DensifyReport
from moegs_bench.training.guard import COLLAPSE_SHARE, LOSS_WINDOW, HealthGuard, TrainingFailed


def test_collapse_stops_a_stopping_guard_naming_the_step_and_the_causes():
    g = HealthGuard("4dgs", stop=True)
    g.after_step(100, 0.2, 10_000, DensifyReport())
    g.after_step(101, 0.2, 9_000, DensifyReport())  # a normal pruning
    report = DensifyReport(pruned=8_000, pruned_screen=5_000, pruned_world=6_000, pruned_transparent=100)
    with pytest.raises(TrainingFailed) as e:
        g.after_step(200, 0.2, 1_000, report)
    msg = str(e.value)
    assert "4dgs collapsed at step 200" in msg and "1,000" in msg and "10,000" in msg
    assert "5,000 too wide on screen" in msg and "6,000 too large in the world" in msg and "100 transparent" in msg
    assert "experts.4dgs.train.on_failure=warn" in msg and "\n" not in msg


def test_a_warning_guard_reports_each_problem_once_and_keeps_it():
    lines = []
    g = HealthGuard("static", stop=False, log=lines.append)
    g.after_step(1, 0.3, 8_000, DensifyReport())
    g.after_step(2, 0.3, int(8_000 * COLLAPSE_SHARE) - 1, DensifyReport(pruned=6_001, pruned_transparent=6_001))
    g.after_step(3, 0.3, 100, DensifyReport())
    assert len(g.problems) == 1 and lines == [f"warning: {g.problems[0]}"]
    assert "static collapsed at step 2" in g.problems[0]


def test_shrinking_by_less_than_the_share_is_fine():
    g = HealthGuard("e-d3dgs", stop=True)
    for step, n in enumerate([5_000, 4_000, 3_000, 2_000, int(5_000 * COLLAPSE_SHARE) + 1], 1):
        g.after_step(step, 0.1, n, DensifyReport())
    assert g.problems == [] and g.peak == 5_000


def test_a_non_finite_loss_is_divergence():
    g = HealthGuard("stg", stop=True)
    g.after_step(1, 0.1, 100, DensifyReport())
    with pytest.raises(TrainingFailed, match="stg diverged at step 2: the training loss is nan"):
        g.after_step(2, math.nan, 100, DensifyReport())


def test_a_rising_loss_is_divergence_but_an_opacity_reset_is_forgiven():
    g = HealthGuard("4dgs", stop=True)
    step = 0
    for _ in range(3 * LOSS_WINDOW):  # converged at 0.05
        step += 1
        g.after_step(step, 0.05, 100, DensifyReport())
    step += 1
    g.after_step(step, 0.5, 100, DensifyReport(reset_opacity=True))  # a reset: the loss jumps
    for _ in range(LOSS_WINDOW - 2):  # ... and recovers within the window
        step += 1
        g.after_step(step, 0.06, 100, DensifyReport())
    assert g.problems == []
    with pytest.raises(TrainingFailed, match=r"4dgs diverged at step \d+: the training loss .* rose to"):
        for _ in range(10 * LOSS_WINDOW):  # now it climbs for good
            step += 1
            g.after_step(step, 0.5, 100, DensifyReport())


def test_state_round_trip_continues_the_same_history():
    a = HealthGuard("4dgs", stop=False, log=lambda _: None)
    for step in range(1, 80):
        a.after_step(step, 0.1, 1_000, DensifyReport())
    b = HealthGuard("4dgs", stop=False, log=lambda _: None)
    b.load_state_dict(a.state_dict())
    for g in (a, b):
        g.after_step(80, 0.1, 100, DensifyReport())
    assert a.problems == b.problems and len(a.problems) == 1 and a.state_dict() == b.state_dict()


def test_a_refinement_that_would_prune_everything_is_a_collapse():
    """Densification keeps every Gaussian rather than none (``kept_all``): still a collapse."""
    g = HealthGuard("4dgs", stop=True)
    with pytest.raises(TrainingFailed, match="4dgs collapsed at step 300: densification would have pruned all 500 "
                                             r"Gaussians \(500 too wide on screen\)"):
        g.after_step(300, 0.1, 500, DensifyReport(pruned_screen=500, kept_all=True))


def test_empty_renders_are_a_collapse():
    """Every Gaussian transparent (D-NeRF's white background rewards rendering nothing): the
    running mean of the renders' alpha falls to nothing and the guard says so."""
    lines = []
    g = HealthGuard("e-d3dgs", stop=False, log=lines.append)
    step = 0
    for coverage in [0.2] * LOSS_WINDOW + [0.0] * (5 * LOSS_WINDOW):
        step += 1
        g.after_step(step, 0.05, 9_000, DensifyReport(), coverage=coverage)
    assert len(g.problems) == 1 and "e-d3dgs collapsed at step" in g.problems[0]
    assert "renders are empty" in g.problems[0]
    first = int(g.problems[0].split("step ")[1].split(":")[0])
    assert LOSS_WINDOW < first < 5 * LOSS_WINDOW  # once the running mean has fallen
    h = HealthGuard("4dgs", stop=True)
    for step in range(1, 4 * LOSS_WINDOW):
        h.after_step(step, 0.05, 9_000, DensifyReport(), coverage=0.15)  # a small subject on white: fine
    assert h.problems == []
