"""LPIPS evaluation cost: what ``--lpips alex|vgg`` adds to evaluating one test view.

    python benchmarks/lpips.py            # 96x72 (the synthetic suite), 160x90, 320x240, 640x360
    python benchmarks/lpips.py --quick    # 96x72 only, fewer repeats (CI smoke)

Per resolution, the time to score one rendered view against its ground truth (random images in
[0, 1], one image at a time, as ``moegs_bench.training.evaluate`` does), with no gradient:

- ``psnr+ssim``: what the evaluation computed before LPIPS (the reference);
- ``alex``, ``vgg``: ``LpipsMetric`` of each variant;

and the ratios ``alex/ref`` and ``vgg/ref``. Medians over ``--repeats`` runs after ``--warmup``
runs, the three metrics interleaved within each run. Printed first: the time to set each variant
up (locate and hash its weight files, read them, build the network), paid once per evaluation.
A variant whose weights are not installed is reported as such and its columns are ``n/a``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from moegs_bench.metrics import LPIPS_VARIANTS, LpipsMetric, psnr, ssim

FULL = ((96, 72), (160, 90), (320, 240), (640, 360))
QUICK = ((96, 72),)


def _median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small resolution (CI smoke)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 7, --quick 3)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {repeats} runs after {args.warmup}")

    metrics: dict[str, LpipsMetric | None] = {}
    for name in LPIPS_VARIANTS:
        t0 = time.perf_counter()
        metric = LpipsMetric(name)
        setup = time.perf_counter() - t0
        metrics[name] = metric if metric.available else None
        print(f"setup {name}: " + (f"{setup * 1000:.0f} ms" if metric.available else f"n/a ({metric.reason})"))

    print(f"{'WxH':>9} {'psnr+ssim':>10} {'alex':>9} {'vgg':>9} {'alex/ref':>9} {'vgg/ref':>8}")
    g = torch.Generator().manual_seed(0)
    for w, h in QUICK if args.quick else FULL:
        img, gt = torch.rand(h, w, 3, generator=g), torch.rand(h, w, 3, generator=g)
        runs = {"ref": lambda: (psnr(img, gt), ssim(img, gt))}
        for name, metric in metrics.items():
            if metric is not None:
                runs[name] = lambda m=metric: m(img, gt)
        for fn in runs.values():  # warm-up, interleaved
            for _ in range(args.warmup):
                fn()
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for k, fn in runs.items():
                samples[k].append(_median_ms(fn, 0, 1))
        ms = {k: statistics.median(v) for k, v in samples.items()}

        def cell(k: str, width: int) -> str:
            return f"{ms[k]:>{width}.2f}" if k in ms else f"{'n/a':>{width}}"

        def ratio(k: str, width: int) -> str:
            return f"{ms[k] / ms['ref']:>{width}.2f}" if k in ms else f"{'n/a':>{width}}"

        print(f"{f'{w}x{h}':>9} {cell('ref', 10)} {cell('alex', 9)} {cell('vgg', 9)} {ratio('alex', 9)} "
              f"{ratio('vgg', 8)}")


if __name__ == "__main__":
    main()
