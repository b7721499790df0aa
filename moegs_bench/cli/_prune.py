"""``moegs-bench prune``."""

from __future__ import annotations

from pathlib import Path

from moegs_bench.cli._common import ErrorContext, check_cache_writable, check_folder_name, check_writable, lpips_text

#: The settings of ``prune`` by flag (README, "Pruning"): errors about a key name the flag.
PRUNE_FLAGS = {"criterion": "--criterion", "ratio": "--ratio", "threshold": "--threshold", "views": "--views",
               "seed": "--seed", "finetune_steps": "--finetune-steps"}


def run_prune(*, run_dir: Path, criterion: str, ratio: float | None, threshold: float | None, views: int | None,
              seed: int, finetune_steps: int = 0, out: Path | None, name: str | None, force: bool, plugins: list[str], cache: Path | None,
              progress: bool, context: ErrorContext | None = None, lpips: str | None = None) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry
    from moegs_bench.app.prune import default_prune_name, prune_run
    from moegs_bench.errors import computed_values
    from moegs_bench.metrics import lpips_metric
    from moegs_bench.router.config import PruneConfig

    context = context if context is not None else ErrorContext(cache=cache)
    context.flags.update(PRUNE_FLAGS)
    config = PruneConfig(criterion=criterion, ratio=ratio, threshold=threshold, views=views, seed=seed,
                         finetune_steps=finetune_steps)
    if name is not None:
        check_folder_name("--name", name)
    parent = out if out is not None else Path(run_dir).resolve().parent
    check_writable("--out", parent)
    check_cache_writable(cache)
    metric = lpips_metric(lpips)
    folder = parent / (name or default_prune_name(run_dir, config))
    context.run_folder = folder
    console = Console()
    console.print(f"[b]prune[/b] {run_dir} by {config.criterion}, "
                  + (f"{config.ratio:.0%} of each expert's Gaussians" if config.ratio is not None
                     else f"every Gaussian scoring below {config.threshold:g}") + f"; into {folder}")
    with computed_values("moegs-bench prune"):
        result = prune_run(run_dir, folder, config, registry=Registry.discover(plugins), cache_dir=cache, force=force,
                           progress=progress, log=console.print, lpips=metric)
    print_prune_summary(console, result)


def print_prune_summary(console, result) -> None:
    from rich.table import Table

    src, new = result.source, result.pruned
    table = Table(title=f"{new.name} on {new.scene}", title_justify="left")
    for col in ("model", "PSNR", "SSIM", "LPIPS", "FPS", "Gaussians", "MB"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, r in (("source (as recorded)", src), ("pruned", new)):
        m = r.metrics
        table.add_row(label, f"{m.psnr:.2f}", f"{m.ssim:.4f}", lpips_text(m, named=True),
                      f"{r.timing.render_fps:.1f}", f"{r.num_gaussians:,}", f"{r.storage_mb:.2f}")
    console.print(table)
    console.print(f"pruned - source: {new.metrics.psnr - src.metrics.psnr:+.2f} dB PSNR, storage "
                  f"{new.storage_bytes / src.storage_bytes:.0%} of the source's; FPS are measured at different "
                  f"times (benchmarks/pruning.py compares them side by side)")
    base = new.extra.get("baselines")
    if base:  # the pruned experts' average and oracle: what the pruned router still buys
        from moegs_bench.cli._run import print_baselines

        print_baselines(console, base, new.metrics.psnr)
    console.print(f"results: {result.out_dir / 'results' / 'mixture.json'}  gate maps: {result.out_dir / 'gates'}")
