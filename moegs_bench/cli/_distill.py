"""``moegs-bench distill``."""

from __future__ import annotations

from pathlib import Path

from moegs_bench.cli._common import (ErrorContext, UserError, check_cache_writable, check_folder_name, check_writable,
                                     lpips_text)

#: The settings of ``distill`` by flag (README, "Distillation"): errors about a key name the flag.
DISTILL_FLAGS = {"student": "--student", "lam": "--lam", "steps": "--steps", "from_scratch": "--from-scratch"}


def parse_lams(text: str) -> list[float]:
    """``"0.25,0.5"`` -> ``[0.25, 0.5]`` (range checks are the config's)."""
    items = [t.strip() for t in text.split(",")]
    try:
        values = [float(t) for t in items]
    except ValueError:
        raise UserError(f"--lam: expected one number or a comma-separated list of numbers in [0, 1], got {text!r}") \
            from None
    if len(set(values)) != len(values):
        raise UserError(f"--lam: {text!r} names a value twice")
    return values


def run_distill(*, run_dir: Path, student: str, lams: str, steps: int | None, from_scratch: bool, baseline: bool,
                out: Path | None, name: str | None, force: bool, plugins: list[str], cache: Path | None,
                progress: bool, context: ErrorContext | None = None, lpips: str | None = None,
                baseline_out: Path | None = None) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry
    from moegs_bench.app.distill import open_distillation
    from moegs_bench.errors import computed_values
    from moegs_bench.metrics import lpips_metric
    from moegs_bench.router.config import DistillConfig

    context = context if context is not None else ErrorContext(cache=cache)
    context.flags.update(DISTILL_FLAGS)
    configs = [DistillConfig(student=student, lam=lam, steps=steps, from_scratch=from_scratch)
               for lam in parse_lams(lams)]  # (checked before anything is opened)
    if name is not None:
        check_folder_name("--name", name)
        if len(configs) > 1:
            raise UserError("--name: one folder name for several --lam values; leave --name out")
    parent = out if out is not None else Path(run_dir).resolve().parent
    check_writable("--out", parent)
    baseline_parent = parent if baseline_out is None else baseline_out
    if baseline_out is not None:
        check_writable("--baseline-out", baseline_out)
    check_cache_writable(cache)
    metric = lpips_metric(lpips)
    console = Console()
    registry = Registry.discover(plugins)
    registry.get(student)  # (an unknown expert id is refused before the run is opened)
    with computed_values("moegs-bench distill"):
        job = open_distillation(run_dir, student, registry=registry, cache_dir=cache)
        n = job.steps(configs[0])
        how = "from scratch" if from_scratch else f"from its checkpoint (step {job.config.train.iterations})"
        console.print(f"[b]distill[/b] {job.run.folder} into {student}, {how}, {n} steps; teacher "
                      f"{job.run.record.name} ({job.run.record.metrics.psnr:.2f} dB)")
        rows = []
        base = None
        if baseline:
            base_config = DistillConfig(student=student, lam=None, steps=steps, from_scratch=from_scratch)
            folder = baseline_parent / job.default_name(base_config)
            context.run_folder = folder
            console.print(f"fair baseline (the same {n} steps on the ground truth alone): {folder}")
            base = job.train(base_config, folder, progress=progress, log=console.print, lpips=metric,
                             wait=True)  # (shared by distillations running at once: one trains it)
            rows.append(("baseline (ground truth)", base))
        for config in configs:
            folder = parent / (name or job.default_name(config))
            context.run_folder = folder
            console.print(f"distilling with lam {config.lam:g} into {folder}")
            rows.append((f"distilled, lam {config.lam:g}", job.train(config, folder, baseline=base, force=force,
                                                                     progress=progress, log=console.print,
                                                                     lpips=metric)))
    print_distill_summary(console, job, rows, base)


def print_distill_summary(console, job, rows, base) -> None:
    from rich.table import Table

    src = job.record
    table = Table(title=f"{job.student} on {src.scene}: distilled from {job.run.record.name}", title_justify="left")
    for col in ("student", "steps", "PSNR", "SSIM", "LPIPS", "vs baseline", "Gaussians"):
        table.add_column(col, justify="left" if col == "student" else "right")


    table.add_row("as trained in the run", str(job.config.train.iterations), f"{src.metrics.psnr:.2f}",
                  f"{src.metrics.ssim:.4f}", lpips_text(src.metrics), "", f"{src.num_gaussians:,}")
    for label, result in rows:
        r = result.record
        gain = "" if base is None or result is base else f"{r.metrics.psnr - base.record.metrics.psnr:+.2f} dB"
        settings = r.extra["distill"]
        table.add_row(label, f"{settings['start_step']}+{settings['steps']}", f"{r.metrics.psnr:.2f}",
                      f"{r.metrics.ssim:.4f}", lpips_text(r.metrics), gain, f"{r.num_gaussians:,}")
    console.print(table)
    for label, result in rows:
        console.print(f"{label}: {result.out_dir}")
    if base is None:
        console.print("no baseline (--no-baseline): a gain over the shorter original training is not a fair one")
    console.print(f"use a student in a mixture: moegs-bench run --experts ... --name NAME "
                  f"--expert-run {job.student}=FOLDER")
