"""Multi-expert rendering benchmark: ``moegs_bench.router.render.render_experts`` in its four modes.

    python benchmarks/multi_expert.py              # K=4, N/expert in {2k, 5k, 20k} x {96x72, 256x192}
    python benchmarks/multi_expert.py --quick      # one small configuration (CI smoke)
    python benchmarks/multi_expert.py --backward   # also forward+backward (router training)

Each configuration renders K experts (``--experts``, default 4) that model the *same* scene, as
MoE-GS experts do: every expert is its own reconstruction of the same surfaces (three spheres and
a back wall, opacities 0.6-1, like raster.py's ``surface`` scene), drawn with its own generator
seed and a small per-expert misalignment, so the experts' Gaussians overlap in space. Each expert
has N Gaussians with plain RGB colours ``[N, 3]`` and random router values ``[N, 3]``.

Modes (see router/render.py): ``reference`` (2K rasterizations: per expert a colour pass, then a
router pass), ``separate`` (K passes, colour and router channels stacked), ``merged`` (one pass,
one shared transmittance: the paper's Eq. 9) and ``exact`` (one projection and sort of the union,
one transmittance per expert: equal to separate).

Timed (CPU, PyTorch rasterizer):

- forward: ``render_experts`` under ``torch.no_grad()`` (test-time render speed of the mixture,
  router channels included);
- with ``--backward``: forward + backward of ``images.sum() + router_maps.sum()`` w.r.t. the
  router values and the colours (the geometry is frozen, as when the router is trained).

Times are medians over ``--repeats`` runs after ``--warmup`` runs; within each run the four modes
run one after another (interleaved, so load from other processes spreads over all modes). The
ratios ``ref/exact`` and ``sep/exact`` are the speed-ups of ``exact`` (targets at K=4: >= 1.7 and
>= 1.0). Printed once: the max abs difference between exact and separate images and router maps
for the first configuration (should be float round-off), and merged's difference for comparison.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.router.render import RENDER_MODES, render_experts


def make_scene(n: int, experts: int, width: int, height: int, seed: int = 0, jitter: float = 0.01):
    """``experts`` Gaussian sets of ``n`` each on the same surfaces, their router values ``[n, 3]``
    and a camera at (0, 0, -3) looking at the origin (60 degree horizontal field of view)."""
    centres = torch.tensor([[-0.5, 0.1, 0.0], [0.5, 0.2, 0.3], [0.0, -0.4, -0.2], [0.0, 0.0, 1.2]])
    radii = torch.tensor([0.35, 0.3, 0.25, 0.0])
    area = 4 * math.pi * (radii**2).sum() + 5.2**2
    s = float(math.sqrt(area / n) * 0.6)  # sized to close the surfaces with n Gaussians
    states, router = [], []
    for e in range(experts):
        g = torch.Generator().manual_seed(seed + 1000 * e)
        # each reconstruction is slightly off: its own offset and sphere radii (about jitter)
        offset = jitter * torch.randn(1, 3, generator=g)
        r_e = radii * (1 + jitter * torch.randn(4, generator=g))
        k = torch.randint(0, 4, (n,), generator=g)
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
        means = centres[k] + r_e[k, None] * d
        wall = k == 3
        means[wall, :2] = torch.rand(int(wall.sum()), 2, generator=g) * 5.2 - 2.6
        means = means + offset
        scales = s * torch.exp(torch.empty(n, 3).uniform_(-0.4, 0.4, generator=g))
        quats = torch.randn(n, 4, generator=g)
        opac = torch.empty(n).uniform_(0.6, 1.0, generator=g)
        colors = torch.rand(n, 3, generator=g)
        states.append(GaussianState(means, quats, scales, opac, colors))
        router.append(torch.rand(n, 3, generator=g))
    camera = Camera.look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0), width=width, height=height, fov_x_deg=60.0)
    return states, router, camera


def _forward(states, router, camera, mode):
    with torch.no_grad():
        return render_experts(states, camera, router=router, mode=mode)


def _forward_backward(states, router, camera, mode):
    colors = [s.colors.detach().clone().requires_grad_(True) for s in states]
    rv = [r.detach().clone().requires_grad_(True) for r in router]
    st = [GaussianState(s.means, s.quats, s.scales, s.opacities, c) for s, c in zip(states, colors)]
    out = render_experts(st, camera, router=rv, mode=mode)
    (out.images.sum() + out.router_maps.sum()).backward()
    return out


def bench(states, router, camera, fn, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per mode; the modes run interleaved within each of warmup + repeats rounds."""
    times: dict[str, list[float]] = {m: [] for m in RENDER_MODES}
    for i in range(warmup + repeats):
        for mode in RENDER_MODES:
            t0 = time.perf_counter()
            fn(states, router, camera, mode)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[mode].append(dt)
    return {m: statistics.median(v) * 1e3 for m, v in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one small configuration (N=1000, 64x48), 1 warm-up + 3 runs (CI smoke)")
    p.add_argument("--experts", type=int, default=4, metavar="K", help="number of experts (default 4)")
    p.add_argument("--only", default=None, metavar="N,WxH", help="one configuration, e.g. 5000,96x72")
    p.add_argument("--backward", action="store_true",
                   help="also time forward+backward w.r.t. router values and colours")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.experts < 1:
        p.error("--experts must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        configs, args.warmup, args.repeats = [(1000, 64, 48)], 1, 3
    elif args.only:
        n, wh = args.only.split(",")
        w, h = wh.lower().split("x")
        configs = [(int(n), int(w), int(h))]
    else:
        configs = [(n, w, h) for n in (2000, 5000, 20000) for w, h in ((96, 72), (256, 192))]
    K = args.experts

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}, "
          f"median of {args.repeats} after {args.warmup} warm-up")

    # sanity check on the first configuration: exact == separate (merged is not, where experts overlap)
    states, router, camera = make_scene(configs[0][0], K, configs[0][1], configs[0][2])
    outs = {m: _forward(states, router, camera, m) for m in ("separate", "exact", "merged")}
    sep, ex, mer = outs["separate"], outs["exact"], outs["merged"]
    d_img = float((ex.images - sep.images).abs().max())
    d_map = float((ex.router_maps - sep.router_maps).abs().max())
    print(f"exact vs separate (K={K}, N={configs[0][0]}, {configs[0][1]}x{configs[0][2]}): "
          f"max |d image| = {d_img:.3e}, max |d router| = {d_map:.3e}")
    print(f"merged vs separate (for comparison, shared transmittance): "
          f"max |d image| = {float((mer.images - sep.images).abs().max()):.3e}, "
          f"max |d router| = {float((mer.router_maps - sep.router_maps).abs().max()):.3e}")

    passes = [("forward, torch.no_grad()", _forward)]
    if args.backward:
        passes.append(("forward + backward (router values and colours)", _forward_backward))
    header = (f"{'K':>3} {'N/expert':>9} {'WxH':>8} {'ref ms':>9} {'sep ms':>9} {'merged ms':>10} "
              f"{'exact ms':>9} {'ref/exact':>10} {'sep/exact':>10}")
    for title, fn in passes:
        print()
        print(title)
        print(header)
        print("-" * len(header))
        for n, w, h in configs:
            states, router, camera = make_scene(n, K, w, h)
            t = bench(states, router, camera, fn, args.warmup, args.repeats)
            print(f"{K:>3} {n:>9} {f'{w}x{h}':>8} {t['reference']:>9.2f} {t['separate']:>9.2f} "
                  f"{t['merged']:>10.2f} {t['exact']:>9.2f} {t['reference'] / t['exact']:>10.2f} "
                  f"{t['separate'] / t['exact']:>10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
