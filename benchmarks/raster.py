"""Rasterizer benchmark: forward / backward time and peak memory of ``moegs_bench.render.rasterize``.

    python benchmarks/raster.py            # N in {2k, 10k, 50k} x {64, 128, 256}^2 x {3, 3+4} channels
    python benchmarks/raster.py --quick    # one small configuration (CI smoke)

Times are medians over ``--repeats`` runs after ``--warmup`` runs; backward is the gradient of
``img.sum() + alpha.sum()`` w.r.t. all five Gaussian tensors. Scenes (``--scene``, default both):

- ``surface``: Gaussians on three spheres and a back wall, opacities 0.6-1 (like a trained model:
  occluded layers are cut by the transmittance stop);
- ``cloud``: a random cloud filling the view (worst case: little occlusion, about 40 fragments
  per pixel at 50k / 256^2).

Peak RSS is the process high-water mark (``ru_maxrss``) after each row, so it is monotone down
the table; run one configuration alone (``--only N,RES,C``) to see its own peak.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time

import torch

from moegs_bench.render import rasterize


def make_scene(n: int, res: int, channels: int, kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "cloud":
        means = torch.rand(n, 3, generator=g) * 2 - 1
        scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.03), generator=g))
    else:  # "surface": points on 3 spheres and a back wall, sized to close the surfaces
        k = torch.randint(0, 4, (n,), generator=g)
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
        centres = torch.tensor([[-0.5, 0.1, 0.0], [0.5, 0.2, 0.3], [0.0, -0.4, -0.2], [0.0, 0.0, 1.2]])
        radii = torch.tensor([0.35, 0.3, 0.25, 0.0])
        means = centres[k] + radii[k, None] * d
        wall = k == 3
        means[wall, :2] = torch.rand(int(wall.sum()), 2, generator=g) * 5.2 - 2.6
        area = 4 * math.pi * (radii**2).sum() + 5.2**2
        s = math.sqrt(area / n) * 0.6
        scales = s * torch.exp(torch.empty(n, 3).uniform_(-0.4, 0.4, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = torch.empty(n).uniform_(0.2, 0.95, generator=g) if kind == "cloud" else torch.empty(n).uniform_(0.6, 1.0, generator=g)
    colors = torch.rand(n, channels, generator=g)
    f = res / (2 * math.tan(math.radians(30)))
    K = torch.tensor([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1.0]])
    viewmat = torch.eye(4)
    viewmat[2, 3] = 3.0
    return (means, quats, scales, opac, colors), viewmat, K


def bench(n: int, res: int, channels: int, kind: str, warmup: int, repeats: int) -> dict:
    tensors, viewmat, K = make_scene(n, res, channels, kind)
    fwd, bwd = [], []
    for i in range(warmup + repeats):
        inputs = [t.clone().requires_grad_(True) for t in tensors]
        t0 = time.perf_counter()
        img, alpha, _ = rasterize(*inputs, viewmat, K, res, res, backend="torch")
        t1 = time.perf_counter()
        (img.sum() + alpha.sum()).backward()
        t2 = time.perf_counter()
        if i >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    fwd_ms, bwd_ms = statistics.median(fwd) * 1e3, statistics.median(bwd) * 1e3
    return {
        "N": n, "res": res, "C": channels, "fwd_ms": fwd_ms, "bwd_ms": bwd_ms, "total_ms": fwd_ms + bwd_ms,
        "coverage": float(alpha.detach().mean()), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one small configuration, 1 warm-up + 2 runs (CI smoke)")
    p.add_argument("--scene", choices=["surface", "cloud", "both"], default="both")
    p.add_argument("--only", default=None, help="one configuration N,RES,C, e.g. 50000,256,7")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        configs, args.warmup, args.repeats = [(2000, 64, 3)], 1, 2
    elif args.only:
        configs = [tuple(int(v) for v in args.only.split(","))]
    else:
        configs = [(n, r, c) for n in (2000, 10000, 50000) for r in (64, 128, 256) for c in (3, 7)]
    scenes = ["surface", "cloud"] if args.scene == "both" else [args.scene]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    header = (f"{'scene':>8} {'N':>6} {'res':>5} {'C':>2} {'fwd ms':>8} {'bwd ms':>8} {'total ms':>9} "
              f"{'alpha':>6} {'peak RSS MB':>12}")
    print(header)
    print("-" * len(header))
    for kind in scenes:
        for n, r, c in configs:
            row = bench(n, r, c, kind, args.warmup, args.repeats)
            print(f"{kind:>8} {row['N']:>6} {row['res']:>5} {row['C']:>2} {row['fwd_ms']:>8.1f} {row['bwd_ms']:>8.1f} "
                  f"{row['total_ms']:>9.1f} {row['coverage']:>6.2f} {row['peak_rss_mb']:>12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
