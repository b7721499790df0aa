"""Launchers: how the points of a sweep are run (README, "Sweeps").

* ``debug``: one after the other in this process (a debugger stops where a point fails); the
  output is shown and appended to each point's log.
* ``local``: a bounded pool of worker processes on this machine (``max_parallel`` at once, each
  with ``cpus_per_task`` threads); stage after stage; a live table of what runs. submitit's own
  LocalExecutor is not used: it starts every job at once and ignores array parallelism.
* ``slurm``: through submitit, one job array per stage (``%N`` = ``array_parallelism``), each stage's
  array held by a dependency (``afterany``) on the one before, so the whole sweep is queued at
  once and runs without the submitting process. A job is signalled before its time limit or when
  preempted; submitit then requeues it (:class:`PointTask`'s ``checkpoint``), and the point, started
  again, resumes from the checkpoints its command writes.

Every launcher runs a point through :mod:`moegs_bench.sweep.execute`, so the point's files are
the same whichever ran it; finished points are skipped, failed ones too unless ``retry_failed``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moegs_bench.sweep.execute import spawn_point, work_here_logged
from moegs_bench.sweep.folder import SweepFolder, now
from moegs_bench.sweep.plan import Point, stage_points
from moegs_bench.sweep.spec import Resources

__all__ = ["LaunchSummary", "PointTask", "live_jobs", "run_debug", "run_local", "run_slurm", "slurm_available",
           "to_launch"]


@dataclass
class LaunchSummary:
    launched: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)  # point ids
    skipped: int = 0  # finished before, or failed before without --retry-failed
    job_ids: dict[str, str] = field(default_factory=dict)  # stage -> SLURM array job id
    interrupted: bool = False


def to_launch(folder: SweepFolder, plan: Sequence[Point], *, retry_failed: bool) -> tuple[list[Point], int]:
    """The points to run (not finished, not running; failed ones only with ``retry_failed``), and
    how many were skipped."""
    todo, skipped = [], 0
    for st in folder.states(plan):
        if st.state in ("done", "running") or (st.state == "failed" and not retry_failed):
            skipped += 1
        else:
            todo.append(st.point)
    return todo, skipped


# --------------------------------------------------------------------------- debug


def run_debug(folder: SweepFolder, points: Sequence[Point], *, log: Callable[[str], None] = print,
              progress: bool = True) -> LaunchSummary:
    summary = LaunchSummary()
    for p in points:
        log(f"[{p.stage}] {p.id} {p.label}")
        code = work_here_logged(folder, p, progress=progress)
        summary.launched += 1
        if code == 0:
            summary.done += 1
        else:
            summary.failed.append(p.id)
            log(f"[{p.stage}] {p.id} failed (exit code {code}): {folder.status(p).get('error')}")
    return summary


# --------------------------------------------------------------------------- local


@dataclass
class _Running:
    point: Point
    process: subprocess.Popen
    started: float


def run_local(folder: SweepFolder, points: Sequence[Point], *, max_parallel: int, threads: int,
              console: Any = None, live: bool | None = None) -> LaunchSummary:
    """Run ``points`` in worker processes, at most ``max_parallel`` at once, stage after stage
    (a stage starts when the one before has ended). ``live``: a live table (default: when the
    console is a terminal); otherwise one line per start and end."""
    from rich.console import Console
    from rich.live import Live

    console = console if console is not None else Console()
    live = console.is_terminal if live is None else live
    summary = LaunchSummary()
    stages = stage_points(points)
    totals = {s: len(ps) for s, ps in stages.items()}
    ended: dict[str, list[str]] = {s: [] for s in stages}
    running: dict[str, _Running] = {}
    view = Live(console=console, refresh_per_second=2, transient=False) if live else None

    def say(text: str) -> None:
        (console if view is None else view.console).print(text, markup=False, highlight=False)

    try:
        if view is not None:
            view.start()
        for stage, queue in stages.items():
            queue = list(queue)
            while queue or running:
                while queue and len(running) < max_parallel:
                    p = queue.pop(0)
                    running[p.id] = _Running(p, spawn_point(folder, p, threads=threads), time.monotonic())
                    summary.launched += 1
                    say(f"started  [{p.stage}] {p.id} {p.label}")
                for pid, r in list(running.items()):
                    code = r.process.poll()
                    if code is None:
                        continue
                    del running[pid]
                    ended[stage].append(pid)
                    status = folder.status(r.point)
                    if code == 0 and folder.finished(r.point):
                        summary.done += 1
                        say(f"finished [{r.point.stage}] {pid} in {time.monotonic() - r.started:.0f} s")
                    else:
                        if status.get("state") == "running":  # (the worker died before recording its end)
                            folder.write_status(r.point, state="failed", exit_code=code, finished=now(),
                                                error=f"the worker process ended with code {code}")
                            status = folder.status(r.point)
                        summary.failed.append(pid)
                        say(f"FAILED   [{r.point.stage}] {pid} (exit code {code}): {status.get('error')}; "
                            f"log: {folder.log_path(r.point)}")
                if view is not None:
                    view.update(_table(stages, totals, ended, running, summary))
                time.sleep(0.2)
    except KeyboardInterrupt:
        summary.interrupted = True
        for r in running.values():
            r.process.send_signal(signal.SIGINT)
        for r in running.values():
            try:
                r.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                r.process.kill()
    finally:
        if view is not None:
            view.update(_table(stages, totals, ended, running, summary))
            view.stop()
    return summary


def _table(stages, totals, ended, running: dict[str, _Running], summary: LaunchSummary):
    from rich.table import Table

    table = Table(title="sweep", title_justify="left")
    for col in ("stage", "ended", "of", "running"):
        table.add_column(col, justify="left" if col in ("stage", "running") else "right")
    for stage in stages:
        now_running = [r for r in running.values() if r.point.stage == stage]
        table.add_row(stage, str(len(ended[stage])), str(totals[stage]),
                      "\n".join(f"{r.point.id} {r.point.label} ({time.monotonic() - r.started:.0f} s)"
                                for r in now_running))
    table.caption = f"done {summary.done}, failed {len(summary.failed)}"
    return table


# --------------------------------------------------------------------------- slurm


class PointTask:
    """The function a SLURM array task runs (submitit pickles it): the worker of one point in a
    child process, output to the point's log. submitit calls :meth:`checkpoint` when the job is
    signalled before its time limit or preempted: the child is stopped and the same task is
    requeued; started again, the point resumes from its command's own checkpoints."""

    def __init__(self, sweep_dir: str, threads: int) -> None:
        self.sweep_dir, self.threads = sweep_dir, threads
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_dir": self.sweep_dir, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep_dir"], state["threads"])

    def __call__(self, point_id: str) -> str:
        folder = SweepFolder.open(Path(self.sweep_dir))
        point = folder.point(point_id)
        job = _slurm_job_id()
        self._process = spawn_point(folder, point, threads=self.threads, job_id=job)
        code = self._process.wait()
        self._process = None
        if code != 0:
            status = folder.status(point)
            raise RuntimeError(f"point {point_id} failed (exit code {code}): {status.get('error')}; "
                               f"log: {folder.log_path(point)}")
        return point_id

    def checkpoint(self, point_id: str) -> Any:
        import submitit

        if self._process is not None:
            _stop(self._process)  # (the point resumes from its last checkpoint when requeued)
        folder = SweepFolder.open(Path(self.sweep_dir))
        with open(folder.log_path(point_id), "a", encoding="utf-8") as f:
            f.write(f"=== {now()}: SLURM signalled the job (time limit or preemption): stopped, requeued\n")
        folder.write_status(point_id, state="queued", requeued=now())
        return submitit.helpers.DelayedSubmission(PointTask(self.sweep_dir, self.threads), point_id)


def _stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM ``process``, SIGKILL it after ``grace`` seconds. Called from a signal handler that
    interrupted ``process.wait()``: Popen's own wait and poll cannot take its lock there, so the
    child is reaped with ``os.waitpid`` (the interrupted wait never resumes: the job exits)."""
    try:
        process.terminate()
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(process.pid, os.WNOHANG)
        except ChildProcessError:  # (already reaped)
            return
        if pid:
            return
        time.sleep(0.1)
    process.kill()


def _slurm_job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_available() -> str | None:
    """None when ``sbatch`` and ``squeue`` are on the PATH, else why not."""
    import shutil

    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    return f"no {', '.join(missing)} on the PATH (is this a SLURM login node?)" if missing else None


def live_jobs(job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` SLURM's controller still lists (pending or running; ``squeue``, not
    accounting). Array task ids (``123_4``) are listed per task."""
    if not job_ids:
        return set()
    bases = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(bases)], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    listed = set(out.stdout.split())
    return {j for j in job_ids if j in listed}


def run_slurm(folder: SweepFolder, points: Sequence[Point], resources: Resources, *, name: str,
              log: Callable[[str], None] = print) -> LaunchSummary:
    """Submit one job array per stage, each depending on the one before; return at once."""
    import submitit

    problem = slurm_available()
    if problem is not None:
        from moegs_bench.errors import UserInputError

        raise UserInputError(f"--launcher slurm: {problem}")
    summary = LaunchSummary()
    previous: str | None = None
    for stage, stage_list in stage_points(points).items():
        executor = submitit.SlurmExecutor(folder=folder.root / "slurm" / "%j", max_num_timeout=resources.max_requeues)
        params: dict[str, Any] = {
            "job_name": f"moegs-{name}-{stage}", "time": resources.time_min, "cpus_per_task": resources.cpus_per_task,
            "array_parallelism": resources.array_parallelism, "signal_delay_s": resources.signal_delay_s,
            "additional_parameters": resources.sbatch_parameters(), "stderr_to_stdout": True,
        }
        if resources.partition:
            params["partition"] = resources.partition
        if resources.gpus_per_node:
            params["gpus_per_node"] = resources.gpus_per_node
        if resources.mem_gb is not None:
            params["mem"] = f"{int(resources.mem_gb * 1024)}M"
        if previous is not None:
            params["dependency"] = f"afterany:{previous}"
        executor.update_parameters(**params)
        task = PointTask(str(folder.root.resolve()), resources.cpus_per_task)
        jobs = executor.map_array(task, [p.id for p in stage_list])
        base = str(jobs[0].job_id).split("_")[0]
        for p, job in zip(stage_list, jobs):
            folder.write_status(p, state="queued", job_id=str(job.job_id), queued=now(), launcher="slurm")
        summary.job_ids[stage] = base
        summary.launched += len(jobs)
        previous = base
        log(f"[{stage}] {len(jobs)} point(s): job array {base}"
            + (f" (starts after {params['dependency'].split(':')[1]})" if "dependency" in params else ""))
    return summary
