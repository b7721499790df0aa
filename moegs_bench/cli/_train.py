"""``moegs-bench train-expert``."""

from __future__ import annotations

from pathlib import Path


def run_train_expert(*, expert: str, out: Path, scene: str | None, profile: str, iterations: int | None,
                     seed: int, resume: bool, force: bool, plugins: list[str], cache: Path | None,
                     progress: bool) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry
    from moegs_bench.data import open_scene
    from moegs_bench.training.trainer import train_expert

    console = Console()
    cls = Registry.discover(plugins).get(expert)
    config = cls.profile(profile)
    if iterations is not None:
        config = config.with_iterations(iterations)
    loaded, spec = open_scene(scene, cache_dir=cache)
    console.print(f"[b]{cls.info.id}[/b] ({cls.info.method}) on {spec}: {len(loaded.train)} training views, "
                  f"{len(loaded.test)} test views, {config.train.iterations} steps, profile {profile}")
    run = train_expert(cls, loaded, out, scene_spec=spec, config=config, profile=profile, seed=seed,
                       resume=resume, force=force, progress=progress, log=console.print)
    print_record(console, run.record, out)


def print_record(console, record, out: Path) -> None:
    from moegs_bench.cli._common import facts_table

    m, t = record.metrics, record.timing
    rows = {
        "test PSNR": f"{m.psnr:.2f} dB", "test SSIM": f"{m.ssim:.4f}",
        "test LPIPS": f"{m.lpips:.4f}" if m.lpips is not None else f"unavailable ({m.lpips_unavailable_reason})",
        "Gaussians": f"{record.num_gaussians:,}", "storage": f"{record.storage_mb:.2f} MB",
        "train time": f"{t.train_seconds:.1f} s", "render": f"{t.render_fps:.1f} FPS ({t.render_ms_per_frame:.1f} ms)",
        "results": str(out / "results.json"),
    }
    console.print(facts_table(f"{record.name} on {record.scene}", rows))
