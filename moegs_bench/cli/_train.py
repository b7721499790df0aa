"""``moegs-bench train-expert``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from moegs_bench.cli._common import (TRAINING_SHORTCUTS, ErrorContext, Shortcut, assignments, check_cache_writable,
                                     check_writable)


#: Shortcut flags of ``train-expert`` and the keys they set, applied in this order before ``--set``.
TRAIN_SHORTCUTS: tuple[Shortcut, ...] = (
    *TRAINING_SHORTCUTS,
    ("iterations", "--iterations", "expert_iterations", lambda v: v),
)


def run_train_expert(*, expert: str, out: Path, scene: str | None, profile: str, iterations: int | None,
                     seed: int, resume: bool, force: bool, plugins: list[str], cache: Path | None,
                     progress: bool, downscale: int | None = None, frames: str | None = None,
                     frame_stride: int | None = None, test_cameras: str | None = None,
                     settings: Sequence[str] = (), given: set[str] | None = None,
                     context: ErrorContext | None = None, lpips: str | None = None) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry
    from moegs_bench.app.config import ExpertsConfig, open_configured_scene
    from moegs_bench.errors import computed_values
    from moegs_bench.metrics import lpips_metric
    from moegs_bench.training.trainer import train_expert

    context = context if context is not None else ErrorContext(run_folder=out, cache=cache)
    values = {"profile": profile, "seed": seed, "iterations": iterations, "scene": scene, "downscale": downscale,
              "frames": frames, "frame_stride": frame_stride, "test_cameras": test_cameras}
    given = set(values) if given is None else given  # called from Python: every argument counts
    console = Console()
    cls = Registry.discover(plugins).get(expert)
    config = ExpertsConfig.resolve([cls], assignments(TRAIN_SHORTCUTS, values, given, settings, context))
    check_writable("--out", out)
    check_cache_writable(cache)
    metric = lpips_metric(lpips)  # (an explicit variant without its weights: refused before training)
    opened = open_configured_scene(config.scene, cache)
    loaded, expert_config = opened.scene, config.experts[cls.info.id]
    console.print(f"[b]{cls.info.id}[/b] ({cls.info.method}) on {opened.scene_id}: {len(loaded.train)} training "
                  f"views, {len(loaded.test)} test views, {expert_config.train.iterations} steps, profile "
                  f"{config.profile}")
    with computed_values(f"training {cls.info.id}"):
        run = train_expert(cls, loaded, out, scene_spec=opened.scene_id, config=expert_config,
                           profile=config.profile, seed=config.seed, resume=resume, force=force, progress=progress,
                           log=console.print, lpips=metric)
        run = run.with_lpips(loaded, metric)  # (a finished run evaluated with another LPIPS: this one's numbers)
    print_record(console, run.record, out)


def print_record(console, record, out: Path) -> None:
    from moegs_bench.cli._common import facts_table

    m, t = record.metrics, record.timing
    rows = {
        "test PSNR": f"{m.psnr:.2f} dB", "test SSIM": f"{m.ssim:.4f}",
        "test LPIPS": f"{m.lpips:.4f}" if m.lpips is not None else f"unavailable ({m.lpips_unavailable_reason})",
        "Gaussians": f"{record.num_gaussians:,}", "storage": f"{record.storage_mb:.2f} MB",
        "train time": "trained upstream (not recorded)" if "upstream" in record.extra else f"{t.train_seconds:.1f} s",
        "render": f"{t.render_fps:.1f} FPS ({t.render_ms_per_frame:.1f} ms)",
        "results": str(out / "results.json"),
    }
    console.print(facts_table(f"{record.name} on {record.scene}", rows))
