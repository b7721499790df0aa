"""``moegs-bench run``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path


def run_mixture_cli(*, experts: str, scene: str | None, out: Path, name: str | None, profile: str, router: str,
                    render_mode: str, temperature: float | None, reference_temperature: bool,
                    finetune_experts: bool, expert_iterations: int | None, router_iterations: int | None,
                    expert_runs: list[str], seed: int, force: bool, plugins: list[str], cache: Path | None,
                    progress: bool) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry, parse_expert_list
    from moegs_bench.cli._common import UserError
    from moegs_bench.data import default_cache_dir, open_scene
    from moegs_bench.app.run import RunRequest, default_run_name, run_mixture
    from moegs_bench.router.mixture import ROUTER_PROFILES

    console = Console()
    registry = Registry.discover(plugins)
    ids = parse_expert_list(experts, registry)
    if len(ids) < 2:
        raise UserError(f"--experts: a mixture needs at least two experts, got {len(ids)} ({', '.join(ids)})")
    for eid in ids:
        registry.get(eid)  # unavailable experts fail here, with the reason
    runs = []
    for item in expert_runs:
        eid, sep, folder = item.partition("=")
        if not sep or not eid or not folder:
            raise UserError(f"--expert-run: expected ID=FOLDER, got {item!r}")
        if eid in dict(runs):
            raise UserError(f"--expert-run: {eid} given twice")
        runs.append((eid, str(Path(folder).expanduser().resolve())))
    if temperature is not None and reference_temperature:
        raise UserError("--temperature and --reference-temperature exclude each other")
    cfg = replace(ROUTER_PROFILES[profile], variant=router, render_mode=render_mode, finetune_experts=finetune_experts)
    if router_iterations is not None:
        cfg = replace(cfg, iterations=router_iterations)
    if temperature is not None:
        cfg = replace(cfg, temperature=temperature)
    if reference_temperature:
        cfg = cfg.with_reference_temperature()
    loaded, spec = open_scene(scene, cache_dir=cache)
    request = RunRequest(experts=tuple(ids), scene_spec=spec, profile=profile, router=cfg, seed=seed,
                         expert_iterations=expert_iterations, expert_runs=tuple(runs))
    folder = out / (name or default_run_name(spec, ids))
    console.print(f"[b]MoE-GS[/b] {' + '.join(ids)} on {spec}: {len(loaded.train)} training views, "
                  f"{len(loaded.test)} test views; router {router} ({cfg.iterations} steps, T={cfg.temperature:g}"
                  f"{'' if cfg.eval_temperature is None else f', test T={cfg.eval_temperature:g}'}), "
                  f"render mode {render_mode}; run folder {folder}")
    cache_root = (cache if cache is not None else default_cache_dir()) / "experts"
    result = run_mixture(request, loaded, folder, registry=registry, cache_root=cache_root, force=force,
                         progress=progress, log=console.print)
    print_summary(console, result)


def print_summary(console, result) -> None:
    from rich.table import Table

    table = Table(title=f"{result.mixture.name} on {result.mixture.scene}", title_justify="left")
    for col in ("model", "PSNR", "SSIM", "LPIPS", "FPS", "Gaussians", "MB", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = [*result.experts, result.mixture]
    best = max(r.metrics.psnr for r in result.experts)
    for r in rows:
        m, t = r.metrics, r.timing
        table.add_row(
            r.name if r.kind == "expert" else "[b]mixture[/b]", f"{m.psnr:.2f}", f"{m.ssim:.4f}",
            f"{m.lpips:.4f}" if m.lpips is not None else "n/a", f"{t.render_fps:.1f}", f"{r.num_gaussians:,}",
            f"{r.storage_mb:.2f}", f"{t.train_seconds:.0f}",
        )
    console.print(table)
    lp = result.mixture.metrics.lpips_unavailable_reason
    if lp:
        console.print(f"LPIPS unavailable: {lp}")
    console.print(f"mixture - best expert: {result.mixture.metrics.psnr - best:+.2f} dB PSNR")
    console.print(f"results: {result.out_dir / 'results'}  gate maps: {result.out_dir / 'gates'}  "
                  f"video: {result.out_dir / 'video' / 'mixture_gates.mp4'}")
