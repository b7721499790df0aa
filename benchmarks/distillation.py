"""Distillation table: each student distilled from its mixture (MoE-GS Eq. 11) at several lam,
against the fair baseline (the same student, the same extra steps, the ground truth alone).

    python benchmarks/distillation.py runs/synthetic-*_4dgs+e-d3dgs --student 4dgs
    python benchmarks/distillation.py RUN_DIR... --student e-d3dgs --lams 0.25,0.5,0.75 --steps 600
    python benchmarks/distillation.py RUN_DIR --student 4dgs --from-scratch
    python benchmarks/distillation.py RUN_DIR --student stg --quick      # 2 steps, lam 0.5 (CI smoke)

Every training goes through ``moegs-bench distill``'s library (:mod:`moegs_bench.app.distill`) into
``--out`` (default: each run's parent), so a rerun reuses the finished ones and a killed one
resumes. The table gives test PSNR: the student as trained in the run ("source"), the baseline,
each lam, and the best lam's gain over the baseline; a second table the gains per lam.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.distill import open_distillation
from moegs_bench.router.config import DistillConfig

TARGET_DB = 0.2  # the gain the issue asks for on 3 of the 4 synthetic scenes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished moegs-bench run folders (teachers)")
    ap.add_argument("--student", required=True, help="expert id of the student (one of each run's experts)")
    ap.add_argument("--lams", default="0.25,0.5,0.75", help="comma-separated lam values (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=None, help="extra steps (default: distill's)")
    ap.add_argument("--from-scratch", action="store_true", help="students start from their initialisation")
    ap.add_argument("--out", type=Path, default=None, help="parent of the distillation folders (default: each run's)")
    ap.add_argument("--cache", type=Path, default=None, help="the runs' cache")
    ap.add_argument("--quick", action="store_true", help="2 steps, lam 0.5 (a smoke run)")
    args = ap.parse_args(argv)
    lams = [0.5] if args.quick else [float(x) for x in args.lams.split(",")]
    steps = 2 if args.quick else args.steps
    registry = Registry.discover()
    print(f"# distillation benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    rows = []
    for run in args.runs:
        t0 = time.perf_counter()
        job = open_distillation(run, args.student, registry=registry, cache_dir=args.cache)
        parent = args.out if args.out is not None else job.run.folder.parent

        def train(lam, baseline=None):
            config = DistillConfig(student=args.student, lam=lam, steps=steps, from_scratch=args.from_scratch)
            return job.train(config, parent / job.default_name(config), baseline=baseline, progress=False,
                             log=lambda m: print(f"  {m}", file=sys.stderr))

        base = train(None)
        distilled = [train(lam, base) for lam in lams]
        rows.append((job.run.folder.name, job.steps(DistillConfig(student=args.student, lam=None, steps=steps,
                                                                  from_scratch=args.from_scratch)),
                     job.record.metrics.psnr, base.record.metrics.psnr, [d.record.metrics.psnr for d in distilled],
                     time.perf_counter() - t0))

    print(f"\n## test PSNR (dB) of {args.student}: as trained in the run, the fair baseline (+steps on the ground "
          "truth), distilled per lam")
    head = ["run", "student", "steps", "source", "baseline", *[f"lam={lam:g}" for lam in lams], "best_gain", "seconds"]
    print(" ".join(head))
    for name, n, src, base, psnrs, seconds in rows:
        best = max(p - base for p in psnrs)
        print(" ".join([name, args.student, str(n), f"{src:.3f}", f"{base:.3f}", *[f"{p:.3f}" for p in psnrs],
                        f"{best:+.3f}", f"{seconds:.0f}"]))
    print("\n## gain over the baseline (dB)")
    print(" ".join(["run", *[f"lam={lam:g}" for lam in lams]]))
    for name, _, _, base, psnrs, _ in rows:
        print(" ".join([name, *[f"{p - base:+.3f}" for p in psnrs]]))
    met = sum(max(p - base for p in psnrs) >= TARGET_DB for _, _, _, base, psnrs, _ in rows)
    print(f"\nruns where the best lam gains >= +{TARGET_DB} dB over the baseline: {met} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
