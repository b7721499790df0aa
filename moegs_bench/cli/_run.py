"""``moegs-bench run``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from moegs_bench.cli._common import (TRAINING_SHORTCUTS, ErrorContext, Shortcut, assignments, check_cache_writable,
                                     check_folder_name, check_writable, lpips_name, lpips_text)

#: Shortcut flags of ``run`` and the keys they set (README, "Settings"), applied in this order
#: before ``--set``: (parameter, flag, key, value from the parameter's value).
RUN_SHORTCUTS: tuple[Shortcut, ...] = (
    *TRAINING_SHORTCUTS,
    ("expert_iterations", "--expert-iterations", "expert_iterations", lambda v: v),
    ("router", "--router", "router.variant", lambda v: v),
    ("render_mode", "--render-mode", "router.render_mode", lambda v: v),
    ("router_iterations", "--router-iterations", "router.iterations", lambda v: v),
    ("temperature", "--temperature", "router.temperature", lambda v: v),
    ("reference_temperature", "--reference-temperature", "router.temperature", lambda v: 0.01),
    ("reference_temperature", "--reference-temperature", "router.eval_temperature", lambda v: 1.0),
    ("finetune_experts", "--finetune-experts", "router.finetune_experts", lambda v: v),
)


def run_mixture_cli(*, experts: str, scene: str | None, out: Path, name: str | None, profile: str, router: str,
                    render_mode: str, temperature: float | None, reference_temperature: bool,
                    finetune_experts: bool, expert_iterations: int | None, router_iterations: int | None,
                    expert_runs: list[str], seed: int, force: bool, plugins: list[str], cache: Path | None,
                    retrain_experts: bool = False,
                    progress: bool, downscale: int | None = None, frames: str | None = None,
                    frame_stride: int | None = None, test_cameras: str | None = None,
                    settings: Sequence[str] = (), given: set[str] | None = None,
                    context: ErrorContext | None = None, lpips: str | None = None) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry, parse_expert_list
    from moegs_bench.app.config import RunConfig, open_configured_scene
    from moegs_bench.app.run import RunRequest, default_run_name, run_mixture
    from moegs_bench.cli._common import UserError
    from moegs_bench.config import ConfigError
    from moegs_bench.data import default_cache_dir
    from moegs_bench.errors import computed_values
    from moegs_bench.metrics import lpips_metric

    context = context if context is not None else ErrorContext(cache=cache)
    values = {"profile": profile, "seed": seed, "expert_iterations": expert_iterations, "scene": scene,
              "downscale": downscale, "frames": frames, "frame_stride": frame_stride,
              "test_cameras": test_cameras, "router": router, "render_mode": render_mode,
              "router_iterations": router_iterations, "temperature": temperature,
              "reference_temperature": reference_temperature, "finetune_experts": finetune_experts}
    given = set(values) if given is None else given  # called from Python: every argument counts
    if name is not None:
        check_folder_name("--name", name)
    console = Console()
    registry = Registry.discover(plugins)
    ids = parse_expert_list(experts, registry)
    if len(ids) < 2:
        raise UserError(f"--experts: a mixture needs at least two experts, got {len(ids)} ({', '.join(ids)})")
    classes = [registry.get(eid) for eid in ids]  # unavailable experts fail here, with the reason
    runs = []
    for item in expert_runs:
        eid, sep, folder = item.partition("=")
        if not sep or not eid or not folder:
            raise UserError(f"--expert-run: expected ID=FOLDER, got {item!r}")
        if eid in dict(runs):
            raise UserError(f"--expert-run: {eid} given twice")
        if eid not in ids:
            raise UserError(f"--expert-run names {eid}, which is not in --experts")
        runs.append((eid, str(Path(folder).expanduser().resolve())))
    if "temperature" in given and temperature is not None and "reference_temperature" in given and reference_temperature:
        raise UserError("--temperature and --reference-temperature exclude each other")
    todo = assignments(RUN_SHORTCUTS, values, given, settings, context)
    for a in todo:
        eid = next((e for e, _ in runs if a.key.startswith(f"experts.{e}.")), None)
        if eid is not None:
            raise ConfigError(a.key, f"expert {eid} comes from --expert-run {dict(runs)[eid]}; its settings are "
                                     "that training's")
    config = RunConfig.resolve(classes, todo)  # every value validated: nothing has run yet
    check_writable("--out", out)
    check_cache_writable(cache)
    metric = lpips_metric(lpips)  # (an explicit variant without its weights: refused before training)

    opened = open_configured_scene(config.scene, cache)
    loaded = opened.scene
    request = RunRequest(config=replace(config, scene=opened.config), scene_spec=opened.scene_id,
                         expert_runs=tuple(runs))
    folder = out / (name or default_run_name(opened.scene_id, ids))
    context.run_folder = folder
    cfg = config.router
    console.print(f"[b]MoE-GS[/b] {' + '.join(ids)} on {opened.scene_id}: {len(loaded.train)} training views, "
                  f"{len(loaded.test)} test views; router {cfg.variant} ({cfg.iterations} steps, T={cfg.temperature:g}"
                  f"{'' if cfg.eval_temperature is None else f', test T={cfg.eval_temperature:g}'}), "
                  f"render mode {cfg.render_mode}; run folder {folder}")
    cache_root = (cache if cache is not None else default_cache_dir()) / "experts"
    with computed_values("moegs-bench run"):
        result = run_mixture(request, loaded, folder, registry=registry, cache_root=cache_root, force=force,
                             retrain_experts=retrain_experts, progress=progress, log=console.print, lpips=metric)
    print_summary(console, result)


def print_summary(console, result) -> None:
    from rich.table import Table

    table = Table(title=f"{result.mixture.name} on {result.mixture.scene}", title_justify="left")
    which = result.mixture.metrics.lpips_metric
    lpips_col = "LPIPS" + (f" ({lpips_name(which)})" if which else "")
    for col in ("model", "PSNR", "SSIM", lpips_col, "FPS", "Gaussians", "MB", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = [*result.experts, result.mixture]
    best = max(r.metrics.psnr for r in result.experts)
    for r in rows:
        m, t = r.metrics, r.timing
        table.add_row(
            r.name if r.kind == "expert" else "[b]mixture[/b]", f"{m.psnr:.2f}", f"{m.ssim:.4f}",
            lpips_text(m), f"{t.render_fps:.1f}", f"{r.num_gaussians:,}",
            f"{r.storage_mb:.2f}", f"{t.train_seconds:.0f}",
        )
    console.print(table)
    lp = result.mixture.metrics.lpips_unavailable_reason
    if lp:
        console.print(f"LPIPS unavailable: {lp}")
    console.print(f"mixture - best expert: {result.mixture.metrics.psnr - best:+.2f} dB PSNR")
    base = result.mixture.extra.get("baselines")
    if base:  # (records of runs before the baselines existed have none)
        print_baselines(console, base, result.mixture.metrics.psnr)
    console.print(f"results: {result.out_dir / 'results'}  gate maps: {result.out_dir / 'gates'}  "
                  f"video: {result.out_dir / 'video' / 'mixture_gates.mp4'}")


def print_baselines(console, base: dict, mixture_psnr: float) -> None:
    """The router's gain over the experts' uniform average, and the oracle's bound."""
    avg, orc = base["uniform_average"]["psnr"], base["oracle"]["psnr"]
    closed = base["gap_closed"]

    def lpips(entry: dict) -> str:  # (records before LPIPS reached the baselines have no key)
        return f", LPIPS {entry['lpips']:.4f}" if entry.get("lpips") is not None else ""

    tuned = base.get("finetuned_experts")
    if tuned:  # (the table's experts are as trained alone; the average and the oracle blend these)
        console.print("experts after fine-tuning with the router: "
                      + ", ".join(f"{eid} {score['psnr']:.2f} dB" for eid, score in tuned.items())
                      + " (the average and the oracle below are theirs)")
    console.print(f"uniform average of the experts (no router): {avg:.2f} dB{lpips(base['uniform_average'])}; "
                  f"mixture - average: {mixture_psnr - avg:+.2f} dB (the router's gain)")
    console.print(f"per-pixel oracle (picks the expert closest to the ground truth: a bound, not a method): "
                  f"{orc:.2f} dB{lpips(base['oracle'])}; the router closes "
                  + (f"{closed:.0%}" if closed is not None else "n/a") + " of the average-to-oracle gap")
    flicker = base.get("gate_flicker") or {}
    if flicker.get("all") is not None:
        console.print(f"gate flicker between consecutive test frames: {flicker['all']:.3f} over all pixels"
                      + (f", {flicker['static']:.3f} over static ones" if flicker.get("static") is not None else ""))
    if base.get("regions"):
        print_regions(console, base["regions"])
    elif base.get("regions_unavailable_reason"):
        console.print(f"per-region scores: n/a ({base['regions_unavailable_reason']})")


def print_regions(console, regions: dict) -> None:
    """PSNR per region (the dataset's masks) of each expert, the average, the mixture and the
    oracle; then each expert's mean gate per region."""
    from rich import box
    from rich.table import Table

    first = next(iter(regions.values()))
    models, experts = list(first["psnr"]), list(first["gate_share"])
    short = {"average": "avg", "mixture": "MoE"}

    def table(title: str, columns: list[str]) -> Table:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in columns:
            t.add_column(col, justify="left" if col == "region" else "right", no_wrap=True)
        return t

    psnr = table("test PSNR per region (dB)", ["region", "pixels", *(short.get(m, m) for m in models)])
    gates = table("mean gate per region", ["region", *experts])
    for label, r in regions.items():
        best = max(r["psnr"][e] or float("inf") for e in experts)
        cells = [("inf" if v is None else f"{v:.2f}") + ("*" if m in experts and v == best else "")
                 for m, v in r["psnr"].items()]
        psnr.add_row(label, f"{r['pixels']:.0%}", *cells)
        gates.add_row(label, *(f"{r['gate_share'][e]:.2f}" for e in experts))
    console.print(psnr)
    console.print("*: the region's best single expert; avg: uniform average; oracle: a bound that looks at the "
                  "ground truth")
    console.print(gates)
