"""Why a mixture gains little over averaging its experts: what each finished run's router does.

    python benchmarks/router_analysis.py runs/synthetic-kitchen_4dgs+e-d3dgs runs/ablation-*
    python benchmarks/router_analysis.py RUN_DIR... --fit-views 4    # every 4th training view for the fit

For every finished ``moegs-bench run`` folder (only read), on its test views (means of per-view
PSNR, as the records' metrics are):

- ``avg``: the experts' uniform average (every gate 1/K); ``mix``: the trained mixture as recorded
  (its test temperature); ``oracle``: the per-pixel best expert (looks at the ground truth: a bound);
- ``fit``: the best *global* blend, one weight per expert (summing to 1) for every pixel of every
  view, fitted by least squares on the training views (every ``--fit-views``-th), then applied to
  the test views: what a router that knows nothing about pixels can get;
- ``hard``: the router's argmax expert at every pixel (one-hot gates); ``T/10``, ``T*10``: the
  trained router's logits at a tenth and ten times its test temperature (softmax routers only);
- ``maxG``: the mean over test pixels of the largest gate (1/K: uniform, 1: one expert per pixel);
- ``dec``: the share of test pixels where the experts differ (the best and the second-best expert's
  squared colour errors, summed over RGB, differ by more than ``--margin``), and ``agree``: how often
  the router's argmax is the oracle's expert there (1/K is chance); ``agreeW``: the same, each pixel
  weighted by that error gap (the pixels where a wrong choice costs more count more);
- ``orc4``, ``orc16``, ``orcV``: the oracle restricted to one expert per 4x4 block, per 16x16 block
  and per whole view (each block takes the expert with the least squared error over it, using the
  ground truth): how much of the oracle's lead lies in choices finer than anything smooth can make;
- ``rho``: the correlation of the experts' errors (``I_k - gt`` per pixel and channel, pooled over
  the test views, the mean over expert pairs): averaging K experts of equal error variance and
  correlation rho leaves ``(1 + (K - 1) rho) / K`` of their mean squared error;
- ``tr_*``: ``avg``, ``mix`` and ``agree`` on the training views (every ``--train-views``-th), which
  the router was trained on: whether it can learn the assignment at all, or learns it and fails to
  carry it to the test camera.

Columns of the second table: the router's settings (variant, training temperature, test temperature,
steps, whether the experts were fine-tuned with it).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path

import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.finished import FinishedRun, open_finished_run
from moegs_bench.metrics import psnr
from moegs_bench.router.baselines import average_image, oracle_image
from moegs_bench.router.gate import VolumeRouter


@torch.no_grad()
def global_fit(run: FinishedRun, every: int) -> torch.Tensor:
    """Weights ``[K]`` summing to 1 minimising ``sum ||sum_k w_k I_k - gt||^2`` over the training
    views ``[::every]`` (the constrained least squares of the normal equations, in float64)."""
    k = len(run.mixture.expert_ids)
    ata = torch.zeros(k, k, dtype=torch.float64)
    atb = torch.zeros(k, dtype=torch.float64)
    for frame in list(run.scene.train)[::every]:
        images = run.mixture.render_experts(frame.camera, run.scene.background, mode="separate").images  # [K,H,W,3]
        a = images.reshape(k, -1).double()  # [K, P]
        b = run.scene.image(frame).reshape(-1).double()  # [P]
        ata += a @ a.T
        atb += a @ b
    # minimise w' A w - 2 b' w subject to 1' w = 1: the KKT system
    kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    kkt[:k, :k], kkt[:k, k], kkt[k, :k] = 2 * ata, 1.0, 1.0
    rhs = torch.cat([2 * atb, torch.ones(1, dtype=torch.float64)])
    return torch.linalg.solve(kkt, rhs)[:k].float()


def block_oracle_image(images: torch.Tensor, gt: torch.Tensor, block: int) -> torch.Tensor:
    """``[K, H, W, 3]`` clamped expert renders and the ground truth ``[H, W, 3]`` -> the image that
    takes, in every ``block`` x ``block`` tile (the last row and column of tiles may be cut by the
    border), the one expert with the least squared error summed over the tile ``[H, W, 3]``."""
    k, h, w, _ = images.shape
    err = (images - gt).square().sum(dim=-1)  # [K, H, W]
    tiles = torch.nn.functional.avg_pool2d(err[None], block, ceil_mode=True)[0]  # [K, h', w']
    best = tiles.argmin(dim=0).repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w]  # [H, W]
    return images.gather(0, best[None, :, :, None].expand(1, h, w, 3))[0]


class ErrorCorrelation:
    """The mean over expert pairs of the Pearson correlation of their errors, pooled over views."""

    def __init__(self, k: int) -> None:
        self.n = 0
        self.sums = torch.zeros(k, dtype=torch.float64)  # [K]
        self.products = torch.zeros(k, k, dtype=torch.float64)  # [K, K]

    def add(self, images: torch.Tensor, gt: torch.Tensor) -> None:
        r = (images - gt).reshape(images.shape[0], -1).double()  # [K, P]
        self.n += r.shape[1]
        self.sums += r.sum(1)
        self.products += r @ r.T

    def value(self) -> float:
        mean = self.sums / self.n
        cov = self.products / self.n - torch.outer(mean, mean)  # [K, K]
        std = cov.diagonal().clamp_min(1e-30).sqrt()
        corr = cov / torch.outer(std, std)
        k = len(mean)
        return float((corr.sum() - corr.diagonal().sum()) / (k * (k - 1)))


@torch.no_grad()
def analyse(run: FinishedRun, fit_every: int, margin: float, train_every: int) -> dict[str, float | str]:
    weights = global_fit(run, fit_every)
    out = _views(run, run.scene.test, weights, margin)
    train = _views(run, list(run.scene.train)[::train_every], weights, margin)
    out.update({f"tr_{k}": train[k] for k in ("avg", "mix", "agree")},
               weights=" ".join(f"{w:.2f}" for w in weights.tolist()))
    return out


def _views(run: FinishedRun, frames, weights: torch.Tensor, margin: float) -> dict[str, float | str]:
    mixture, scene = run.mixture, run.scene
    router, k = mixture.router, len(mixture.expert_ids)
    softmax = not isinstance(router, VolumeRouter)  # (the volume router's gates have no temperature)
    t = mixture.temperature
    rows: dict[str, list[float]] = {n: [] for n in ("avg", "mix", "fit", "hard", "T/10", "T*10", "oracle", "orc4",
                                                     "orc16", "orcV")}
    correlation = ErrorCorrelation(k)
    max_gate = decisive = agree = pixels = gap_all = gap_agree = 0.0
    for frame in frames:
        multi = mixture.render_experts(frame.camera, scene.background)
        gates = router.gates(multi.router_maps, frame.camera, t)  # [K, H, W]
        gt = scene.image(frame)  # [H, W, 3]
        own = multi.images.clamp(0, 1)
        hard = torch.nn.functional.one_hot(gates.argmax(0), k).permute(2, 0, 1).to(gates)  # [K, H, W]
        images = {"avg": average_image(multi.images), "mix": multi.blend(gates, scene.background),
                  "fit": torch.einsum("k,khwc->hwc", weights, multi.images),
                  "hard": multi.blend(hard, scene.background), "oracle": oracle_image(own, gt),
                  "orc4": block_oracle_image(own, gt, 4), "orc16": block_oracle_image(own, gt, 16),
                  "orcV": block_oracle_image(own, gt, max(gt.shape[:2]))}
        correlation.add(own, gt)
        if softmax:
            images["T/10"] = multi.blend(router.gates(multi.router_maps, frame.camera, t / 10), scene.background)
            images["T*10"] = multi.blend(router.gates(multi.router_maps, frame.camera, t * 10), scene.background)
        for name, img in images.items():
            rows[name].append(float(psnr(img.clamp(0, 1), gt)))
        err = (own - gt).square().sum(-1)  # [K, H, W]
        two = err.topk(2, dim=0, largest=False).values  # [2, H, W]: best, second best
        gap = two[1] - two[0]  # [H, W]
        split = gap > margin  # [H, W]
        right = gates.argmax(0) == err.argmin(0)  # [H, W]
        max_gate += float(gates.max(0).values.sum())
        decisive += float(split.sum())
        agree += float(right[split].sum())
        gap_all += float(gap[split].sum())
        gap_agree += float(gap[split & right].sum())
        pixels += gt.shape[0] * gt.shape[1]
    out: dict[str, float | str] = {n: sum(v) / len(v) if v else math.nan for n, v in rows.items()}
    out.update(maxG=max_gate / pixels, dec=decisive / pixels, agree=agree / max(decisive, 1.0), rho=correlation.value(),
               agreeW=gap_agree / gap_all if gap_all else math.nan)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished moegs-bench run folders")
    ap.add_argument("--fit-views", type=int, default=4, help="fit the global blend on every N-th training view")
    ap.add_argument("--margin", type=float, default=1e-3, help="squared-error gap that makes a pixel decisive")
    ap.add_argument("--train-views", type=int, default=12, help="the tr_* columns on every N-th training view")
    ap.add_argument("--cache", type=Path, default=None, help="the runs' cache")
    args = ap.parse_args(argv)
    registry = Registry.discover()
    print(f"# router analysis: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; test PSNR in dB (means over the test views)")
    names = [folder.name for folder in args.runs]
    if len(set(names)) < len(names):  # (a sweep's points all name their run folder "run")
        names = [str(folder) for folder in args.runs]
    results = []
    for folder in args.runs:
        run = open_finished_run(folder, registry=registry, cache_dir=args.cache)
        results.append((run, analyse(run, args.fit_views, args.margin, args.train_views)))
    cols = ("avg", "fit", "mix", "hard", "T/10", "T*10", "oracle", "orc4", "orc16", "orcV", "rho", "maxG", "dec",
            "agree", "agreeW", "tr_avg", "tr_mix", "tr_agree")
    ratios = ("rho", "maxG", "dec", "agree", "agreeW", "tr_agree")
    print(" ".join(["run", *cols, "fit_weights"]))
    for name, (run, r) in zip(names, results):
        cells = [f"{r[c]:.3f}" if c in ratios else f"{r[c]:.2f}" for c in cols]
        print(" ".join([name, *[c.replace("nan", "n/a") for c in cells], r["weights"]]))
    print("\n" + " ".join(["run", "experts", "variant", "T_train", "T_test", "steps", "finetune"]))
    for name, (run, _) in zip(names, results):
        c = run.config.router
        print(" ".join([name, "+".join(run.mixture.expert_ids), c.variant, f"{c.temperature:g}",
                        f"{run.mixture.config.test_temperature:g}", str(c.iterations),
                        "yes" if c.finetune_experts else "no"]))
    return 0


if __name__ == "__main__":
    from moegs_bench.errors import UserInputError

    try:
        sys.exit(main())
    except UserInputError as e:  # (a run folder that cannot be used: one line, as the CLI says it)
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)
