"""Run one sweep point: the worker every launcher uses.

``python -m moegs_bench.sweep.execute SWEEP_DIR POINT_ID [--job-id ID]`` (what the local pool and
the SLURM jobs start, with the output going to the point's ``log.txt``) holds the point's lock,
records the attempt in its ``status.json``, runs the point in this process and records how it
ended. A point runs what a user would type: ``moegs-bench run`` / ``prune`` / ``distill`` into the
point's folder (so a killed point resumes from that command's own checkpoints), or, for an
expert point, the training of one expert into the shared expert cache, exactly the entry
``moegs-bench run`` would train and lock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from moegs_bench.sweep.folder import SweepFolder, now, point_lock, tail
from moegs_bench.sweep.plan import Point
from moegs_bench.sweep.spec import setting_text

__all__ = ["point_argv", "spawn_point", "work_here_logged", "work_on_point"]


def work_on_point(folder: SweepFolder, point: Point, *, job_id: str | None = None, log: Path | None = None,
                  progress: bool = False) -> int:
    """Run ``point`` in this process (unless it is finished) and record the attempt; the exit code
    (0 finished; 2 a user error such as a bad setting; 1 a failure; 3 a dependency not finished).
    ``log``: the file this process's output goes to (for the status's last lines)."""
    with point_lock(folder, point):
        if folder.finished(point):
            folder.write_status(point, state="done")
            return 0
        missing = [d for d in point.depends if not folder.finished(folder.point(d))]
        status = folder.status(point)
        attempt = int(status.get("attempts", 0)) + 1
        folder.write_status(point, state="running", attempts=attempt, job_id=job_id, host=socket.gethostname(),
                            pid=os.getpid(), started=now(), finished=None, exit_code=None, error=None, tail=[],
                            log=str(log) if log is not None else None)
        start = time.monotonic()
        if missing:
            code, error = 3, (f"needs point(s) {', '.join(missing)}, not finished (see `moegs-bench sweep status "
                              f"{folder.root}`); run the sweep again, with --retry-failed, once they are")
            print(error, file=sys.stderr)
        else:
            code, error = _execute(folder, point, progress=progress)
        sys.stdout.flush()
        sys.stderr.flush()
        lines = tail(log) if log is not None else []
        done = code == 0 and folder.finished(point)
        if code == 0 and not done:  # (the command said it finished, but its record is not there: a bug)
            code, error = 1, "the command exited 0 but left no results record"
        if error is None and not done:
            error = next((line for line in reversed(lines) if line.strip()), f"exit code {code}")
        folder.write_status(point, state="done" if done else "failed", exit_code=code, finished=now(),
                            seconds=round(time.monotonic() - start, 1), error=None if done else error,
                            tail=[] if done else lines)
        return code


def _execute(folder: SweepFolder, point: Point, *, progress: bool) -> tuple[int, str | None]:
    """Run the point's work here; (exit code, error or None)."""
    if point.command == "expert":
        try:
            _train_expert(folder, point, progress=progress)
        except Exception as e:  # noqa: BLE001 - recorded, and shown in the log with its traceback
            from moegs_bench.errors import UserInputError

            if isinstance(e, UserInputError):
                print(f"Error: {e}", file=sys.stderr)
                return 2, str(e)
            traceback.print_exc()
            return 1, f"{type(e).__name__}: {e}"
        return 0, None
    from moegs_bench.cli import app

    argv = point_argv(folder, point, progress=progress)
    print("moegs-bench " + " ".join(argv), flush=True)
    try:
        app(args=argv, prog_name="moegs-bench")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, None
    return 0, None


def _train_expert(folder: SweepFolder, point: Point, *, progress: bool) -> None:
    """An expert point: the training ``run`` would do for this expert, into the same cache entry."""
    from moegs_bench.adapters.registry import Registry
    from moegs_bench.app.config import SceneConfig, open_configured_scene
    from moegs_bench.app.run import train_cached_expert
    from moegs_bench.config import config_from_dict

    ident = point.identity
    registry = Registry.discover(point.plugins)
    cls = registry.get(ident["expert"])
    config = cls.config_class.from_dict(ident["config"], key=f"experts.{ident['expert']}")
    cache = folder.cache
    opened = open_configured_scene(config_from_dict(SceneConfig, ident["scene"], key="scene"), cache)
    print(f"training {ident['expert']} on {opened.scene_id} (seed {ident['seed']}, profile {ident['profile']}) "
          "into the expert cache", flush=True)

    def started(cache_folder: Path) -> None:  # (recorded before the training: status and `finished` find it)
        folder.write_status(point, cache_folder=str(cache_folder))

    train_cached_expert(cls, config, opened.scene, opened.scene_id, profile=ident["profile"], seed=ident["seed"],
                        cache_root=cache / "experts", progress=progress, log=print, on_folder=started)


class _Tee:
    """A text stream that writes to two (the console and the point's log)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def write(self, text: str) -> int:
        self.second.write(text)
        return self.first.write(text)

    def flush(self) -> None:
        self.first.flush()
        self.second.flush()

    def isatty(self) -> bool:
        return self.first.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.first, name)


def work_here_logged(folder: SweepFolder, point: Point, *, progress: bool = True) -> int:
    """:func:`work_on_point` in this process (the debug launcher), its output shown and also
    appended to the point's ``log.txt``, as a worker process's is."""
    log = folder.log_path(point)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"=== {now()} on {socket.gethostname()}, in process: {point.label}\n")
        f.flush()
        with contextlib.redirect_stdout(_Tee(sys.stdout, f)), contextlib.redirect_stderr(_Tee(sys.stderr, f)):
            return work_on_point(folder, point, log=log, progress=progress)


def point_argv(folder: SweepFolder, point: Point, *, progress: bool = False, cache: Path | None = None) -> list[str]:
    """The ``moegs-bench`` command line of a run, prune or distill point (``cache``: the sweep's
    expert cache; default: the one its folder records)."""
    s, ident = point.settings, point.identity
    common = ["--cache", str(cache or folder.cache), "--progress" if progress else "--no-progress"]
    for plugin in point.plugins:
        common += ["--plugin", plugin]
    if ident.get("lpips") is not None:
        common += ["--lpips", ident["lpips"]]
    out = ["--out", str(folder.point_dir(point))]
    if point.command == "run":
        argv = ["run", "--experts", ",".join(s["experts"]), "--scene", point.scene, "--seed", str(point.seed),
                *out, "--name", "run", *common]
        for key, value in s.items():
            if key not in ("experts", "lpips"):
                argv += ["--set", f"{key}={setting_text(value)}"]
        return argv
    source = str(folder.result_dir(folder.point(point.source)))
    c = ident["config"]
    if point.command == "prune":
        argv = ["prune", source, *out, "--name", "prune", "--criterion", c["criterion"], "--seed", str(c["seed"]),
                "--finetune-steps", str(c["finetune_steps"]), *common]
        argv += ["--ratio", repr(c["ratio"])] if c["ratio"] is not None else ["--threshold", repr(c["threshold"])]
        if c["views"] is not None:
            argv += ["--views", str(c["views"])]
        return argv
    argv = ["distill", source, *out, "--name", "distill", "--student", c["student"], "--lam", repr(c["lam"]), *common]
    if c["steps"] is not None:
        argv += ["--steps", str(c["steps"])]
    if c["from_scratch"]:
        argv.append("--from-scratch")
    if ident.get("baseline", True):
        argv += ["--baseline", "--baseline-out", str(folder.root / "baselines" / point.source)]
    else:
        argv.append("--no-baseline")
    return argv



def spawn_point(folder: SweepFolder, point: Point, *, threads: int, job_id: str | None = None) -> subprocess.Popen:
    """Start the worker of ``point`` in a new process (output appended to its ``log.txt``), with
    ``threads`` CPU threads (``OMP_NUM_THREADS``: results are bit for bit at a fixed thread count)."""
    log = folder.log_path(point)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "moegs_bench.sweep.execute", str(folder.root), point.id]
    if job_id is not None:
        cmd += ["--job-id", job_id]
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"=== {now()} on {socket.gethostname()}{f', job {job_id}' if job_id else ''}: {point.label}\n")
        f.flush()
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moegs_bench.sweep.execute",
                                     description="Run one point of a sweep (what the launchers start).")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("point_id")
    parser.add_argument("--job-id", default=None)
    args = parser.parse_args(argv)
    # SLURM's warning signal (time limit, preemption) is for the job's submitit process, which
    # stops this worker (SIGTERM) and requeues the job; the worker itself must not die of it first.
    # submitit ignores SIGTERM and SIGINT, and a child inherits ignored signals: restore them.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = SweepFolder.open(args.sweep_dir)
    point = folder.point(args.point_id)
    return work_on_point(folder, point, job_id=args.job_id, log=folder.log_path(point))


if __name__ == "__main__":
    sys.exit(main())
