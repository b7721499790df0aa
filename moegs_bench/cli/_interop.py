"""``moegs-bench import`` and ``moegs-bench export-ply``."""

from __future__ import annotations

from pathlib import Path

from moegs_bench.cli._common import ErrorContext, UserError, check_cache_writable, check_writable


def run_import(*, fmt: str, source: Path, scene: str, out: Path, iteration: int | None, force: bool,
               cache: Path | None, downscale: int | None, lpips: str | None,
               context: ErrorContext | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    from moegs_bench.app.config import SceneConfig, open_configured_scene
    from moegs_bench.app.upstream import import_upstream
    from moegs_bench.cli._train import print_record
    from moegs_bench.errors import computed_values
    from moegs_bench.interop import get_importer
    from moegs_bench.metrics import lpips_metric

    context = context if context is not None else ErrorContext(run_folder=out, cache=cache)
    context.flags.update({"scene.downscale": "--downscale"})
    importer = get_importer(fmt)  # (an unknown format first: nothing else is read)
    check_writable("--out", out)
    check_cache_writable(cache)
    metric = lpips_metric(lpips)
    opened = open_configured_scene(SceneConfig(spec=scene, downscale=downscale), cache)
    console = Console()
    console.print(f"[b]import[/b] {fmt} ({importer.upstream.repo} @ {importer.upstream.commit[:7]}) from "
                  f"{escape(str(source))} as [b]{importer.expert_id}[/b] on {escape(opened.scene_id)}", highlight=False)
    with computed_values(f"importing {fmt}"):
        result = import_upstream(fmt, source, opened.scene, opened.scene_id, out, iteration=iteration, force=force,
                                 log=lambda m: console.print(m, markup=False, highlight=False), lpips=metric)
    up = result.upstream
    console.print(f"iteration {up['iteration']}, {len(up['files'])} file(s) read; provenance in "
                  f"{out / 'upstream.json'}", markup=False, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    print_record(console, result.record, out)
    console.print(f"use it: moegs-bench run --scene {scene} --experts {importer.expert_id},... --expert-run "
                  f"{importer.expert_id}={out}", markup=False, highlight=False)


def run_export_ply(*, run_dir: Path, time: float, out: Path, expert: str | None, plugins: list[str],
                   cache: Path | None, context: ErrorContext | None = None) -> None:
    from rich.console import Console

    from moegs_bench.adapters.registry import Registry
    from moegs_bench.errors import computed_values
    from moegs_bench.interop.export import export_ply

    context = context if context is not None else ErrorContext(cache=cache)
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; expected the PLY file to write, e.g. {out / 'gaussians.ply'}")
    check_writable("--out", out.parent)
    console = Console()
    with computed_values("export-ply"):
        written = export_ply(run_dir, time, out, expert=expert, registry=Registry.discover(plugins), cache_dir=cache)
    for eid, n in written.counts.items():
        console.print(f"{eid}: {n:,} Gaussians", markup=False, highlight=False)
    console.print(f"wrote {out} (t = {time:g}, SH degree {written.sh_degree}"
                  + (", property expert_id: " + ", ".join(f"{i} = {e}" for i, e in enumerate(written.counts))
                     if written.with_ids else "") + ")", markup=False, highlight=False)
