"""``moegs-bench sweep plan | run | status | collect``."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from moegs_bench.cli._common import UserError, check_writable

DEFAULT_PARENT = Path("runs") / "sweeps"


def _load(spec_file: Path, settings: Sequence[str]):
    from moegs_bench.sweep.plan import build_plan
    from moegs_bench.sweep.spec import load_spec, parse_override

    spec = load_spec(spec_file, [parse_override(s) for s in settings])
    return spec, build_plan(spec)


def _folder_of(spec, out: Path | None) -> Path:
    return out if out is not None else DEFAULT_PARENT / spec.name


def run_plan(*, spec_file: Path, out: Path | None, settings: Sequence[str], as_json: bool) -> None:
    from rich.console import Console

    from moegs_bench.sweep.folder import PointState, SweepFolder

    spec, plan = _load(spec_file, settings)
    root = _folder_of(spec, out)
    folder = SweepFolder(root)
    states = folder.states(plan) if folder.meta_path.is_file() else [PointState(p, "pending", {}) for p in plan]
    if as_json:
        print(json.dumps([{**s.point.to_json(), "state": s.state} for s in states], indent=2, default=str))
        return
    console = Console()
    console.print(f"[b]sweep[/b] {spec.name}: {spec.command}, {len(spec.scenes)} scene(s) x {len(spec.seeds)} seed(s) x "
                  f"{len(spec.combinations())} combination(s) of {', '.join(a.key for a in spec.axes) or 'no axes'}"
                  f"{' (' + spec.combine + ')' if len(spec.axes) > 1 else ''}; folder {root}")
    print_states(console, states)
    console.print("nothing was run or written (sweep run SPEC runs it)")


def print_states(console, states, *, logs: bool = False) -> None:
    """A table of the points' states; with ``logs``, their attempts and job ids, and then each
    failed or lost point's error and log file on lines of their own (to copy)."""
    from rich.table import Table

    from moegs_bench.sweep.folder import POINT_STATES

    table = Table(box=None, pad_edge=False)
    for col in ("point", "stage", "state", *(["tries", "job"] if logs else []), "what"):
        table.add_column(col, no_wrap=col != "what")
    style = {"done": "green", "failed": "red", "lost": "yellow", "running": "cyan"}
    for s in states:
        state = f"[{style[s.state]}]{s.state}[/]" if s.state in style else s.state
        extra = [str(s.status.get("attempts", 0)), str(s.status.get("job_id") or "")] if logs else []
        table.add_row(s.point.id, s.point.stage, state, *extra, escape(s.point.label))
    console.print(table)
    counts = Counter(s.state for s in states)
    console.print(" · ".join(f"{k} {counts[k]}" for k in POINT_STATES if counts[k]) + f" (of {len(states)} points)")
    if logs:
        for s in states:
            if s.state in ("failed", "lost"):
                say = "failed" if s.state == "failed" else "lost (killed or gone from the queue; runs again)"
                console.print(f"{s.point.id} {say}: {s.status.get('error') or ''}", markup=False, highlight=False,
                              soft_wrap=True)
                if s.status.get("log"):
                    console.print(f"  log: {s.status['log']}", markup=False, highlight=False, soft_wrap=True)


def run_sweep(*, spec_file: Path, out: Path | None, launcher: str | None, max_parallel: int | None,
              retry_failed: bool, dry_run: bool, settings: Sequence[str], cache: Path | None, progress: bool) -> int:
    from rich.console import Console

    from moegs_bench.data import default_cache_dir
    from moegs_bench.sweep import launchers as L
    from moegs_bench.sweep.execute import point_argv
    from moegs_bench.sweep.folder import SweepFolder, now

    spec, plan = _load(spec_file, settings)
    launcher = launcher or spec.resources.launcher
    root = _folder_of(spec, out)
    cache = (cache if cache is not None else default_cache_dir()).expanduser().resolve()
    console = Console()
    if launcher == "slurm" and (problem := L.slurm_available()) is not None:
        raise UserError(f"--launcher slurm: {problem}")
    if dry_run:
        folder = SweepFolder(root.resolve(), plan)
        exists = folder.meta_path.is_file()
        todo, skipped = L.to_launch(folder, plan, retry_failed=retry_failed) if exists else (list(plan), 0)
        console.print(f"[b]dry run[/b]: {len(todo)} point(s) would run with the {launcher} launcher in {root} "
                      f"({skipped} finished or failed before are skipped); nothing is written")
        for p in todo:
            what = ("train the expert into the cache" if p.command == "expert" else
                    "moegs-bench " + " ".join(point_argv(folder, p, cache=cache)))
            console.print(f"[{p.stage}] {p.id} {p.label}: {what}", markup=False, highlight=False, soft_wrap=True)
        return 0
    check_writable("--out", root)
    check_writable("--cache", cache)
    spec_text = Path(spec_file).read_text(encoding="utf-8")
    folder = SweepFolder.create_or_check(root, spec, plan, spec_text, cache)
    folder.add_provenance(_provenance(launcher))
    todo, skipped = L.to_launch(folder, plan, retry_failed=retry_failed)
    if launcher == "slurm":
        queued = {p.id: str(st.get("job_id")) for p in todo if (st := folder.status(p)).get("state") == "queued"}
        alive = L.live_jobs(list(queued.values()))
        held = {pid for pid, job in queued.items() if job in alive}
        todo = [p for p in todo if p.id not in held]
        skipped += len(held)
    failed_before = sum(1 for s in folder.states(plan) if s.state == "failed")
    console.print(f"[b]sweep[/b] {spec.name}: {len(plan)} point(s), {len(todo)} to run, {skipped} skipped "
                  f"(finished, running or queued{', or failed: --retry-failed reruns those' if failed_before and not retry_failed else ''}); "
                  f"launcher {launcher}; folder {root}; started {now()}")
    if not todo:
        console.print("nothing to run")
        return 0
    res = spec.resources

    def say(text: str) -> None:  # (point labels hold brackets: no markup)
        console.print(text, markup=False, highlight=False)

    if launcher == "debug":
        summary = L.run_debug(folder, todo, log=say, progress=progress)
    elif launcher == "local":
        cores = max(1, (os.cpu_count() or 1) // res.cpus_per_task)  # (more would oversubscribe the CPU)
        summary = L.run_local(folder, todo, max_parallel=max_parallel or min(res.array_parallelism, cores),
                              threads=res.cpus_per_task, console=console, live=None if progress else False)
    else:
        if max_parallel is not None:
            from dataclasses import replace

            res = replace(res, array_parallelism=max_parallel)
        summary = L.run_slurm(folder, todo, res, name=spec.name, log=say)
        ids = ",".join(summary.job_ids.values())
        console.print(f"submitted; the jobs run without this process. Follow them with:\n"
                      f"  squeue -j {ids}\n  moegs-bench sweep status {root}\n"
                      f"  tail -f {folder.root / 'points'}/<point>/log.txt   (SLURM's own logs: {folder.root / 'slurm'})")
        return 0
    if summary.interrupted:
        console.print("interrupted: run the same command again to go on (finished points are kept; the stopped "
                      "ones resume from their checkpoints)")
        return 130
    console.print(f"done {summary.done}, failed {len(summary.failed)} of {summary.launched} run")
    for pid in summary.failed:
        console.print(f"  {pid}: {folder.status(pid).get('error')}  log: {folder.log_path(pid)}", highlight=False)
    console.print(f"status: moegs-bench sweep status {root}   table: moegs-bench sweep collect {root}")
    return 1 if summary.failed else 0


def _provenance(launcher: str) -> dict[str, Any]:
    import platform
    import socket

    from moegs_bench import __version__
    from moegs_bench.results import git_state, package_versions
    from moegs_bench.sweep.folder import now

    commit, dirty = git_state()
    return {"time": now(), "launcher": launcher, "moegs_bench_version": __version__, "git_commit": commit,
            "git_dirty": dirty, "packages": package_versions(), "python": platform.python_version(),
            "host": socket.gethostname(), "argv": sys.argv}


def run_status(*, sweep_dir: Path, as_json: bool) -> None:
    from rich.console import Console

    from moegs_bench.sweep.folder import PointState, SweepFolder
    from moegs_bench.sweep.launchers import live_jobs, slurm_available

    folder = SweepFolder.open(sweep_dir)
    states = folder.states()
    queued = [s for s in states if s.state == "queued"]
    if queued and slurm_available() is None:  # (a queued job SLURM no longer lists was cancelled or lost)
        alive = live_jobs([str(s.status.get("job_id")) for s in queued])
        states = [PointState(s.point, "lost", s.status) if s.state == "queued" and str(s.status.get("job_id"))
                  not in alive else s for s in states]
    if as_json:
        print(json.dumps([{"point": s.point.id, "stage": s.point.stage, "state": s.state, "label": s.point.label,
                           **{k: s.status.get(k) for k in ("attempts", "job_id", "host", "started", "finished",
                                                            "exit_code", "error", "log")}}
                          for s in states], indent=2))
        return
    console = Console()
    meta = folder.meta()
    console.print(f"[b]sweep[/b] {meta.get('name')} in {folder.root} (expert cache {meta.get('cache')})")
    print_states(console, states, logs=True)


def run_collect(*, sweep_dir: Path) -> None:
    from rich.console import Console

    from moegs_bench.sweep.collect import collect, write_tables
    from moegs_bench.sweep.folder import SweepFolder

    folder = SweepFolder.open(sweep_dir)
    table = collect(folder)
    console = Console()
    if table.empty:
        raise UserError(f"{sweep_dir}: no finished point yet (see moegs-bench sweep status {sweep_dir})")
    paths = write_tables(folder, table)
    points = table["point"].nunique()
    console.print(f"{len(table)} row(s) from {points} finished point(s): {', '.join(map(str, paths))}")
    print_collected(console, folder, table)


def print_collected(console, folder, table) -> None:
    """One line per finished point: its PSNR (the mixture, or the distilled student), the
    uniform average's and the oracle's, or the fair baseline's, and its LPIPS."""
    from rich.table import Table

    labels = {p.id: p.label for p in folder.plan()}
    t = Table(box=None, pad_edge=False)
    for col in ("point", "what", "PSNR", "average", "oracle", "baseline", "LPIPS"):
        t.add_column(col, justify="left" if col in ("point", "what") else "right")
    for pid, rows in table.groupby("point", sort=False):
        by = {m: r for m, r in zip(rows["model"], rows.to_dict("records"))}
        main = next((r for r in rows.to_dict("records") if r["model"] == "mixture" or r["kind"] == "distilled"), None)
        if main is None:
            continue
        base = next((r for m, r in by.items() if m.endswith("(baseline)")), None)
        t.add_row(pid, labels.get(pid, ""), _fmt(main["psnr"]), _fmt(by.get("average", {}).get("psnr")),
                  _fmt(by.get("oracle", {}).get("psnr")), _fmt(base["psnr"] if base else None), _fmt(main["lpips"]))
    console.print(t)


def _fmt(value: Any) -> str:
    """A figure as printed: n/a when missing (None or NaN), 4 digits below 1, else 2 decimals."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)
