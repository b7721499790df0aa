"""Sweeps on a real SLURM (a single-node cluster: ``bash scripts/slurm_local.sh start``): job
arrays per stage with dependencies, completion from the points' files, and a requeue through
submitit's checkpoint mechanism (the job signalled as SLURM does before a time limit or a
preemption) that resumes the point and finishes it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from moegs_bench.sweep.folder import SweepFolder
from test_cli import cli



def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no SLURM client commands (sbatch, sinfo); start one with: bash scripts/slurm_local.sh start"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed ({e})"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no SLURM node up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


PROBLEM = _cluster_problem()
if PROBLEM is not None and os.environ.get("CI") == "true":  # CI starts the cluster: it must be there
    pytest.fail(f"CI=true but SLURM is not usable: {PROBLEM}", pytrace=False)
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def wait_for(folder: Path, condition, timeout: float = 420.0, what: str = "the sweep") -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        proc = cli("sweep", "status", str(folder), "--json")
        assert proc.returncode == 0, proc.stderr
        states = json.loads(proc.stdout)
        if condition(states):
            return states
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
            raise AssertionError(f"timed out waiting for {what}: {states}\n{queue}")
        time.sleep(2)


@pytest.fixture(scope="module")
def scene(sweep_scene: Path) -> Path:
    return sweep_scene


def test_slurm_sweep_arrays_dependencies_and_requeue(tmp_path, scene):
    """Two stages (the experts' array, then the run's, held by a dependency), submitted at once;
    `sweep run` returns and the jobs finish without it. One expert's job is signalled as SLURM
    does before a time limit or a preemption (USR2): submitit asks the task to checkpoint, the
    point is stopped and the job requeued, and the point runs again, resumes and finishes."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"command: run\nscenes: ['{scene}']\nsettings: {{experts: [static, stg], expert_iterations: 150, "
                    "router.iterations: 5, lpips: none}\nresources: {launcher: slurm, time_min: 10, "
                    "array_parallelism: 2, cpus_per_task: 1, mem_gb: 1, sbatch: [--comment=moegs-test]}\n")
    out = tmp_path / "sweep"
    proc = cli("sweep", "run", str(spec), "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # (returns once submitted)
    assert "squeue -j" in proc.stdout and "[experts] 2 point(s): job array" in proc.stdout
    folder = SweepFolder.open(out)
    first, second = (folder.status(p)["job_id"].split("_")[0] for p in folder.plan()[1:])
    script = (out / "slurm" / first / f"{first}_submission.sh").read_text()
    for line in ("--array=0-1%2", "--cpus-per-task=1", "--mem=1024M", "--time=10", "--signal=USR2@120",
                 "--comment=moegs-test"):
        assert f"#SBATCH {line}\n" in script, (line, script)
    assert f"#SBATCH --dependency=afterany:{first}\n" in (out / "slurm" / second / f"{second}_submission.sh").read_text()
    # submitted, not started: a second `sweep run` leaves the queued points to their jobs
    again = cli("sweep", "run", str(spec), "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stdout + again.stderr
    target = folder.plan()[0]
    wait_for(out, lambda s: s[0]["state"] == "running" and "training into" in folder.log_path(target).read_text(),
             timeout=120, what="the first expert to train")
    time.sleep(2)
    job = folder.status(target)["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

    states = wait_for(out, lambda s: all(p["state"] in ("done", "failed") for p in s))
    assert [p["state"] for p in states] == ["done"] * 3, states
    experts, run = folder.plan()[:2], folder.plan()[2]
    array = folder.status(experts[0])["job_id"].split("_")[0]
    assert {folder.status(p)["job_id"] for p in experts} == {f"{array}_0", f"{array}_1"}
    run_status = folder.status(run)
    assert run_status["job_id"] != array and run_status["attempts"] == 1
    # the run's array waited for the experts' (afterany dependency)
    assert max(folder.status(p)["finished"] for p in experts) <= run_status["started"]
    assert (folder.result_dir(run) / "results" / "mixture.json").is_file()
    assert list((out / "slurm").iterdir())  # submitit's job files and logs
    # the signalled point: two attempts in one log, the second resumed
    status = folder.status(target)
    assert status["attempts"] == 2 and status["requeued"], status
    log = folder.log_path(target).read_text()
    assert log.count(f", job {job}: ") == 2
    assert "SLURM signalled the job (time limit or preemption): stopped, requeued" in log
