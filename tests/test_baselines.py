"""What the router buys: the experts' uniform average and the per-pixel oracle, by hand and on a
finished run (against each expert rendered on its own through the expert path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.finished import open_finished_run
from moegs_bench.metrics import psnr
from moegs_bench.router.baselines import EnsembleBaselines, Score, average_image, ensemble_baselines, oracle_image
from moegs_bench.training.trainer import render_expert


def test_oracle_and_average_by_brute_force():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 5, 7, 3, generator=g)
    gt = torch.rand(5, 7, 3, generator=g)
    orc = oracle_image(images, gt).numpy()
    ims, ref = images.numpy(), gt.numpy()
    for y in range(5):
        for x in range(7):
            errors = [float(((ims[k, y, x] - ref[y, x]) ** 2).sum()) for k in range(3)]
            assert np.array_equal(orc[y, x], ims[int(np.argmin(errors)), y, x])
    over = torch.full((2, 2, 2, 3), 0.9)
    over[1] = 1.5  # the blend is clamped as the mixture's is: (0.9 + 1.5) / 2 -> 1
    assert torch.equal(average_image(over), torch.ones(2, 2, 3))
    assert torch.allclose(average_image(images), images.mean(0))


def test_fine_tuned_experts_are_compared_with_the_best_expert_as_trained_alone():
    """By hand: with fine-tuned experts the average and the oracle are theirs, the best expert the
    best as trained alone (a fine-tuned expert scores less on its own: the weaker baseline)."""
    tuned = {"a": Score(20.0, 0.70, 0.20), "b": Score(21.0, 0.72, 0.18)}
    base = EnsembleBaselines(tuned, average=Score(22.0, 0.75, 0.15), oracle=Score(24.0, 0.80, 0.10))
    plain = base.record(23.0)
    assert plain["best_expert"] == {"name": "b", "psnr": 21.0, "ssim": 0.72, "lpips": 0.18}
    assert plain["mixture_gain_over_best_expert_db"] == 2.0 and "finetuned_experts" not in plain
    alone = {"a": Score(21.5, 0.74, 0.17), "b": Score(21.25, 0.73, 0.16)}
    rec = base.record(23.0, trained_alone=alone)
    assert rec["best_expert"] == {"name": "a", "psnr": 21.5, "ssim": 0.74, "lpips": 0.17}
    assert rec["mixture_gain_over_best_expert_db"] == 1.5
    assert rec["finetuned_experts"] == {"a": {"psnr": 20.0, "ssim": 0.70, "lpips": 0.20},
                                        "b": {"psnr": 21.0, "ssim": 0.72, "lpips": 0.18}}
    assert rec["router_gain_over_average_db"] == 1.0 and rec["gap_closed"] == 0.5  # (the tuned experts' average)


def test_a_fine_tuned_run_records_its_best_expert_as_trained_alone(finished, tmp_path):
    """End to end: --finetune-experts on the fixture's cached experts; the record's best expert is
    the run's own expert record, the fine-tuned experts' scores are those of their renders (the
    per-view rows), and the summary says which experts the average blends."""
    from test_cli import cli

    scene, _, cache = finished
    proc = cli("run", "--experts", "static,stg", "--expert-iterations", "10", "--router-iterations", "20",
               "--finetune-experts", "--scene", str(scene), "--out", str(tmp_path), "--name", "ft", "--cache",
               str(cache), "--no-progress", "--lpips", "none", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "experts after fine-tuning with the router: static" in " ".join(proc.stdout.split())
    results = tmp_path / "ft" / "results"
    base = json.loads((results / "mixture.json").read_text())["extra"]["baselines"]
    alone = {e: json.loads((results / f"{e}.json").read_text())["metrics"]["psnr"] for e in ("static", "stg")}
    best = max(alone, key=alone.get)
    assert base["best_expert"]["name"] == best and base["best_expert"]["psnr"] == alone[best]
    for e in ("static", "stg"):
        views = [row[f"{e}_psnr"] for row in base["per_view"]]
        assert base["finetuned_experts"][e]["psnr"] == pytest.approx(sum(views) / len(views), abs=1e-9)
    assert any(abs(base["finetuned_experts"][e]["psnr"] - alone[e]) > 1e-4 for e in alone)  # (they did move)


def test_a_finished_run_records_the_baselines_and_they_match_the_experts_own_renders(finished):
    _, folder, cache = finished
    record = json.loads((folder / "results" / "mixture.json").read_text())
    base = record["extra"]["baselines"]
    assert base["oracle"]["uses_ground_truth"] is True
    mix = record["metrics"]["psnr"]
    avg, orc = base["uniform_average"]["psnr"], base["oracle"]["psnr"]
    assert base["router_gain_over_average_db"] == pytest.approx(mix - avg)
    assert base["gap_closed"] == pytest.approx((mix - avg) / (orc - avg))
    assert orc > avg  # picking per pixel with the ground truth beats averaging
    # the fixture's scene is the suite's kitchen: its test views carry regime masks
    assert "static" in base["regions"] and base["regions_unavailable_reason"] is None
    assert set(base["regions"]) <= {"static", "rigid", "oscillating", "appearance", "topology"}
    assert sum(r["pixels"] for r in base["regions"].values()) == pytest.approx(1.0)
    experts = {e: json.loads((folder / "results" / f"{e}.json").read_text())["metrics"]["psnr"]
               for e in ("static", "stg")}
    assert base["best_expert"]["name"] == max(experts, key=experts.get)
    assert base["best_expert"]["psnr"] == pytest.approx(max(experts.values()), abs=1e-4)

    run = open_finished_run(folder, registry=Registry.discover(), cache_dir=cache)
    again = ensemble_baselines(run.mixture, run.scene)
    assert again.average.psnr == pytest.approx(avg, abs=1e-6) and again.oracle.psnr == pytest.approx(orc, abs=1e-6)
    scores = []
    with torch.no_grad():
        for frame in run.scene.test:  # independently: each expert through the expert render path
            own = torch.stack([render_expert(e, frame.camera, run.scene.background)[0] for e in run.mixture.experts])
            gt = run.scene.image(frame)
            best = oracle_image(own.clamp(0, 1), gt)
            scores.append((float(psnr(own.mean(0).clamp(0, 1), gt)), float(psnr(best, gt))))
    assert again.average.psnr == pytest.approx(sum(s[0] for s in scores) / len(scores), abs=1e-3)
    assert again.oracle.psnr == pytest.approx(sum(s[1] for s in scores) / len(scores), abs=1e-3)


def test_without_masks_the_regions_are_na_with_the_reason(finished, tmp_path):
    import shutil

    from moegs_bench.data import load_scene

    scene_dir, folder, cache = finished
    run = open_finished_run(folder, registry=Registry.discover(), cache_dir=cache)
    bare = tmp_path / "bare"
    shutil.copytree(scene_dir, bare)
    (bare / "regions.json").unlink()
    shutil.rmtree(bare / "regions")
    out = ensemble_baselines(run.mixture, load_scene(bare)).record(20.0)
    assert out["regions"] is None and "no region masks" in out["regions_unavailable_reason"]


def test_router_analysis_benchmark_on_a_finished_run(finished):
    """benchmarks/router_analysis.py: its avg / mix / oracle are the run's recorded ones, and its
    global blend is the least-squares optimum (checked against a brute-force grid of weights)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    _, run, cache = finished
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "router_analysis.py"), str(run), "--cache",
                          str(cache), "--fit-views", "3", "--train-views", "3"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    header, row = (line.split() for line in out.splitlines()[1:3])
    cells = dict(zip(header, row))
    record = json.loads((run / "results" / "mixture.json").read_text())
    base = record["extra"]["baselines"]
    assert float(cells["avg"]) == pytest.approx(base["uniform_average"]["psnr"], abs=0.006)
    assert float(cells["oracle"]) == pytest.approx(base["oracle"]["psnr"], abs=0.006)
    assert float(cells["mix"]) == pytest.approx(record["metrics"]["psnr"], abs=0.006)
    assert 0.5 <= float(cells["maxG"]) <= 1.0 and 0 <= float(cells["agree"]) <= 1

    global_fit = _router_analysis().global_fit
    opened = open_finished_run(run, registry=Registry.discover(), cache_dir=cache)
    w = global_fit(opened, 3)  # [2]
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)
    frames = list(opened.scene.train)[::3]
    with torch.no_grad():
        images = [opened.mixture.render_experts(f.camera, opened.scene.background, mode="separate").images
                  for f in frames]  # each [2, H, W, 3]
    gts = [opened.scene.image(f) for f in frames]

    def loss(a: float) -> float:
        return sum(float(((a * im[0] + (1 - a) * im[1]).double() - gt.double()).square().sum())
                   for im, gt in zip(images, gts))

    grid = min(loss(a) for a in torch.linspace(-0.5, 1.5, 201).tolist())
    assert loss(float(w[0])) <= grid + 1e-6 * grid


def _router_analysis():
    """benchmarks/router_analysis.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "router_analysis.py"
    spec = importlib.util.spec_from_file_location("router_analysis", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_oracles_by_brute_force():
    """One expert per tile, the one with the least squared error over the tile (tiles cut by the
    border included); tile 1 is the per-pixel oracle, a tile as large as the view the best expert."""
    block_oracle_image = _router_analysis().block_oracle_image
    g = torch.Generator().manual_seed(3)
    images, gt = torch.rand(3, 7, 10, 3, generator=g), torch.rand(7, 10, 3, generator=g)
    assert torch.equal(block_oracle_image(images, gt, 1), oracle_image(images, gt))
    sse = [float((im - gt).square().sum()) for im in images]
    assert torch.equal(block_oracle_image(images, gt, 10), images[int(np.argmin(sse))])
    im, ref = images.numpy().astype(np.float64), gt.numpy().astype(np.float64)
    expected = np.empty_like(ref)
    for y in range(0, 7, 3):
        for x in range(0, 10, 3):
            err = [((im[k, y:y + 3, x:x + 3] - ref[y:y + 3, x:x + 3]) ** 2).sum() for k in range(3)]
            expected[y:y + 3, x:x + 3] = im[int(np.argmin(err)), y:y + 3, x:x + 3]
    assert np.array_equal(block_oracle_image(images, gt, 3).numpy(), expected.astype(np.float32))


def test_error_correlation_against_numpy():
    """The mean off-diagonal Pearson correlation of the experts' errors, pooled over two views,
    equals numpy's corrcoef; errors that are copies correlate 1, opposite ones -1."""
    correlation = _router_analysis().ErrorCorrelation
    g = torch.Generator().manual_seed(4)
    views = [(torch.rand(3, 5, 6, 3, generator=g), torch.rand(5, 6, 3, generator=g)) for _ in range(2)]
    c = correlation(3)
    for images, gt in views:
        c.add(images, gt)
    r = np.concatenate([(im - gt).reshape(3, -1).double().numpy() for im, gt in views], axis=1)
    corr = np.corrcoef(r)
    assert c.value() == pytest.approx((corr.sum() - np.trace(corr)) / 6, abs=1e-9)
    gt = torch.rand(4, 4, 3, generator=g)
    noise = torch.rand(4, 4, 3, generator=g) - 0.5
    same, opposite = correlation(2), correlation(2)
    same.add(torch.stack([gt + noise, gt + 2 * noise]), gt)
    opposite.add(torch.stack([gt + noise, gt - noise]), gt)
    assert same.value() == pytest.approx(1.0, abs=1e-6) and opposite.value() == pytest.approx(-1.0, abs=1e-6)
