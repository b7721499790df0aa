"""Pruning benchmark: what each criterion keeps of a finished mixture run, at several ratios.

    python benchmarks/pruning.py runs/synthetic-kitchen_4dgs+e-d3dgs
    python benchmarks/pruning.py RUN_DIR --ratios 0.5,0.75 --criteria gate,opacity --views 60
    python benchmarks/pruning.py RUN_DIR --finetune-steps 100   # each pruned copy's router trained on
    python benchmarks/pruning.py RUN_DIR --quick        # one ratio, 2 scoring views, 1 repeat (CI smoke)

For every criterion (``gate``: the gate's sensitivity to each Gaussian's router vector, Eq. 10 of
MoE-GS; ``opacity`` and ``random`` baselines) the scores are computed once on the trained mixture,
then each ratio removes that fraction of every expert's Gaussians from a fresh copy and the copy
is evaluated on the test views (PSNR, SSIM) with its storage (experts + router columns). With
``--finetune-steps N`` every pruned copy's router then trains N steps (as ``prune
--finetune-steps`` does: the same steps for every criterion).

Render time: the median over ``--repeats`` passes over the test cameras after one warm-up pass;
within each pass the unpruned mixture and every pruned copy render one after another
(interleaved, so load from other processes spreads over all), so the speed-ups are comparable.
A breakdown of the unpruned mixture's frame time (the experts' deformation ``gaussians_at``,
``render_experts`` and the router's gates plus the blend) shows what pruning can speed up.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.finished import open_finished_run
from moegs_bench.metrics import psnr, ssim, storage_mb
from moegs_bench.router.prune import CRITERIA, apply_pruning, evenly_spaced, importance, removal_masks
from moegs_bench.router.train import continued, train_router


@torch.no_grad()
def quality(mixture, scene) -> tuple[float, float]:
    bg = scene.background
    rows = []
    for f in scene.test:
        img = mixture(f.camera, bg).image.clamp(0, 1)
        gt = scene.image(f)
        rows.append((float(psnr(img, gt)), float(ssim(img, gt))))
    return statistics.fmean(r[0] for r in rows), statistics.fmean(r[1] for r in rows)


@torch.no_grad()
def frame_times(models: dict[str, object], scene, repeats: int) -> dict[str, float]:
    """Median ms per frame of each model over ``repeats`` interleaved passes (after one warm-up)."""
    bg, cams = scene.background, [f.camera for f in scene.test]
    samples: dict[str, list[float]] = {k: [] for k in models}
    for r in range(repeats + 1):
        for name, m in models.items():
            t0 = time.perf_counter()
            for c in cams:
                m(c, bg)
            if r:  # the first pass warms up
                samples[name].append(1000 * (time.perf_counter() - t0) / len(cams))
    return {k: statistics.median(v) for k, v in samples.items()}


@torch.no_grad()
def breakdown(mixture, scene, repeats: int) -> dict[str, float]:
    """Median ms per frame spent in the experts' deformation, in render_experts, in gates + blend."""
    bg, cams = scene.background, [f.camera for f in scene.test]
    parts: dict[str, list[float]] = {"gaussians_at": [], "render_experts": [], "gates + blend": []}
    for r in range(repeats + 1):
        acc = dict.fromkeys(parts, 0.0)
        for c in cams:
            t0 = time.perf_counter()
            for e in mixture.experts:
                e.gaussians_at(c)
            t1 = time.perf_counter()
            multi = mixture.render_experts(c, bg)
            t2 = time.perf_counter()
            gates = mixture.router.gates(multi.router_maps, c, mixture.temperature)
            multi.blend(gates, bg)
            t3 = time.perf_counter()
            acc["gaussians_at"] += t1 - t0
            acc["render_experts"] += t2 - t1  # (it calls gaussians_at again: see the note)
            acc["gates + blend"] += t3 - t2
        if r:
            for k in parts:
                parts[k].append(1000 * acc[k] / len(cams))
    return {k: statistics.median(v) for k, v in parts.items()}


def finetune(mixture, scene, config, steps: int, seed: int) -> None:
    """``steps`` router steps on a pruned copy at the rates its schedule ended with (as ``prune``)."""
    mixture.config = continued(config, steps)
    with tempfile.TemporaryDirectory() as tmp:
        train_router(mixture, scene, Path(tmp) / "latest.pt", seed=seed, progress=False, log=lambda _: None)
    mixture.freeze_experts()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a finished moegs-bench run folder")
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--criteria", default=",".join(CRITERIA))
    ap.add_argument("--views", type=int, default=None, help="training views the gate criterion averages over")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-steps", type=int, default=0, help="router steps after each cut (default 0)")
    ap.add_argument("--quick", action="store_true", help="ratio 0.5, 2 scoring views, 1 repeat")
    args = ap.parse_args()
    ratios = [0.5] if args.quick else [float(r) for r in args.ratios.split(",")]
    criteria = args.criteria.split(",")
    views = 2 if args.quick else args.views
    repeats = 1 if args.quick else args.repeats

    run = open_finished_run(args.run_dir, registry=Registry.discover(), cache_dir=args.cache)
    mixture, scene = run.mixture, run.scene
    frames = evenly_spaced(scene.train, views)
    times = scene.frame_times
    print(f"# {run.record.name} on {run.scene_id}; {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; gate scores over {len(frames)} training views")

    models = {"unpruned": mixture}
    results = {"unpruned": (sum(e.num_gaussians for e in mixture.experts), mixture.total_storage_bytes(),
                            *quality(mixture, scene))}
    for criterion in criteria:
        t0 = time.perf_counter()
        scores = importance(mixture, criterion, frames, times, background=scene.background, seed=args.seed)
        print(f"# {criterion} scores: {time.perf_counter() - t0:.1f} s")
        for ratio in ratios:
            pruned = copy.deepcopy(mixture)
            apply_pruning(pruned, removal_masks(scores, ratio=ratio))
            if args.finetune_steps:
                finetune(pruned, scene, run.config.router, args.finetune_steps, args.seed)
            pruned.eval()
            name = f"{criterion} {ratio:g}" + (f" +{args.finetune_steps}" if args.finetune_steps else "")
            models[name] = pruned
            results[name] = (sum(e.num_gaussians for e in pruned.experts), pruned.total_storage_bytes(),
                             *quality(pruned, scene))
    ms = frame_times(models, scene, repeats)

    base_n, base_bytes, base_psnr, _ = results["unpruned"]
    print(f"{'model':<20} {'Gaussians':>9} {'MB':>6} {'storage':>8} {'PSNR':>7} {'dPSNR':>7} {'SSIM':>7} "
          f"{'ms/frame':>9} {'speed-up':>8}")
    for name, (n, nbytes, p, s) in results.items():
        print(f"{name:<20} {n:>9d} {storage_mb(nbytes):>6.2f} {nbytes / base_bytes:>8.2f} {p:>7.2f} "
              f"{p - base_psnr:>+7.2f} {s:>7.4f} {ms[name]:>9.1f} {ms['unpruned'] / ms[name]:>8.2f}")
    parts = breakdown(mixture, scene, repeats)
    print("# unpruned frame time (ms, median): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
          + " (render_experts includes its own gaussians_at call)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
