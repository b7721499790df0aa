"""Sweeps run for real (local pool and in process) on a tiny scene: stages, shared experts,
skip-finished, failure records, lost points, collect."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from moegs_bench.results import read_record
from moegs_bench.sweep.folder import SweepFolder
from test_cli import assert_one_line_error, cli

QUICK = "expert_iterations: 10, router.iterations: 5, lpips: none"


@pytest.fixture(scope="module")
def scene(sweep_scene: Path) -> Path:
    return sweep_scene


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep-cache")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return cli("sweep", *args, timeout=timeout)


def run_local(spec: Path, out: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`sweep run` with the local pool, two points at once."""
    return sweep("run", str(spec), "--out", str(out), "--cache", str(cache), "--launcher", "local", "-j", "2",
                 "--no-progress")


@pytest.fixture(scope="module")
def run_sweep(tmp_path_factory, scene, cache) -> Path:
    """A run sweep of two router temperatures over static + stg, on the local pool, two at once."""
    base = tmp_path_factory.mktemp("run-sweep")
    spec = write(base / "temps.yaml", f"command: run\nscenes: ['{scene}']\nsettings: {{experts: [static, stg], "
                                      f"{QUICK}}}\naxes:\n  router.temperature: [0.5, 2.0]\n")
    proc = run_local(spec, base / "sweep", cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return base / "sweep"


def test_local_sweep_trains_each_expert_once_and_every_point_is_a_normal_run(run_sweep, cache):
    folder = SweepFolder.open(run_sweep)
    plan = folder.plan()
    assert [p.stage for p in plan] == ["experts", "experts", "runs", "runs"]
    assert all(s.state == "done" for s in folder.states())
    # one cache entry per expert, trained by the expert stage; both runs read them
    entries = sorted(p.name for p in (cache / "experts").rglob("*") if (p / "results.json").is_file())
    assert len(entries) == 2
    for p in plan[2:]:
        run = folder.result_dir(p)
        experts = json.loads((run / "experts.json").read_text())
        assert all(e["reused"] for e in experts.values())
        assert {e["folder"] for e in experts.values()} == {folder.status(d)["cache_folder"] for d in p.depends}
        record = read_record(run / "results" / "mixture.json")
        assert record.config["router"]["temperature"] == p.values["router.temperature"]
        status = folder.status(p)
        assert status["state"] == "done" and status["attempts"] == 1 and status["exit_code"] == 0
        assert "reusing the finished run" in folder.log_path(p).read_text()
    # frozen spec, plan (one line per point), provenance
    assert (run_sweep / "spec.yaml").read_text().startswith("command: run")
    assert len((run_sweep / "plan.jsonl").read_text().splitlines()) == 4
    prov = json.loads((run_sweep / "provenance.json").read_text())
    assert prov[0]["launcher"] == "local" and prov[0]["moegs_bench_version"]


def test_rerun_skips_finished_points_and_plan_shows_them(run_sweep, cache):
    spec = run_sweep / "spec.yaml"
    before = {p: p.stat().st_mtime_ns for p in run_sweep.rglob("results/mixture.json")}
    proc = sweep("run", str(spec), "--out", str(run_sweep), "--cache", str(cache), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stdout
    assert before == {p: p.stat().st_mtime_ns for p in run_sweep.rglob("results/mixture.json")}
    proc = sweep("plan", str(spec), "--out", str(run_sweep))
    assert proc.stdout.count(" done ") == 4, proc.stdout
    # another cache, or another spec, into the same folder: refused
    assert_one_line_error(sweep("run", str(spec), "--out", str(run_sweep), "--cache", str(run_sweep.parent / "c2")),
                          "was run with the expert cache")
    other = write(run_sweep.parent / "other.yaml", spec.read_text().replace("2.0", "3.0"))
    assert_one_line_error(sweep("run", str(other), "--out", str(run_sweep), "--cache", str(cache)),
                          "holds the sweep of another spec (it differs in axes)")


def test_collect_writes_a_tidy_table(run_sweep):
    proc = sweep("collect", str(run_sweep))
    assert proc.returncode == 0, proc.stderr
    csv = pd.read_csv(run_sweep / "results" / "results.csv")
    parquet = pd.read_parquet(run_sweep / "results" / "results.parquet")
    assert len(csv) == len(parquet) == 2 * 5  # per run point: static, stg, mixture, average, oracle
    assert list(csv["model"][:5]) == ["static", "stg", "mixture", "average", "oracle"]
    assert set(csv["router.temperature"]) == {0.5, 2.0}
    assert csv["lpips"].isna().all()  # (lpips: none) missing, not 0
    folder = SweepFolder.open(run_sweep)
    for p in folder.plan()[2:]:
        record = read_record(folder.result_dir(p) / "results" / "mixture.json")
        row = parquet[(parquet["point"] == p.id) & (parquet["model"] == "mixture")].iloc[0]
        assert row["psnr"] == record.metrics.psnr and row["num_gaussians"] == record.num_gaussians
        avg = parquet[(parquet["point"] == p.id) & (parquet["model"] == "average")].iloc[0]
        assert avg["psnr"] == record.extra["baselines"]["uniform_average"]["psnr"]


def test_failed_points_are_recorded_skipped_and_retried(tmp_path, run_sweep, cache, scene):
    # a prune sweep from the same runs: one point removes every Gaussian (refused by prune: a user error)
    spec = write(tmp_path / "prune.yaml",
                 f"command: prune\nscenes: ['{scene}']\nsource: {{experts: [static, stg], "
                 f"{QUICK}, router.temperature: 0.5}}\ncombine: zip\n"
                 "axes:\n  ratio: [0.5, null]\n  threshold: [null, 1.0e+30]\n")
    out = tmp_path / "sweep"
    proc = run_local(spec, out, cache)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    folder = SweepFolder.open(out)
    states = {s.point.values.get("threshold"): s for s in folder.states() if s.point.stage == "prune"}
    assert states[None].state == "done"
    bad = states[1e30]
    assert bad.state == "failed" and bad.status["exit_code"] == 2 and bad.status["attempts"] == 1
    proc = sweep("status", str(out))
    assert bad.point.id in proc.stdout and "failed" in proc.stdout
    table = proc
    status = json.loads(sweep("status", str(out), "--json").stdout)
    failed = next(s for s in status if s["point"] == bad.point.id)
    assert failed["state"] == "failed" and failed["error"]
    assert failed["log"] == str(folder.log_path(bad.point)) and f"  log: {failed['log']}" in table.stdout
    log = folder.log_path(bad.point).read_text()
    assert "Error:" in log and failed["error"] in log and bad.status["tail"]
    # a rerun leaves the failed point alone; --retry-failed runs it again
    proc = sweep("run", str(spec), "--out", str(out), "--cache", str(cache), "--launcher", "debug", "--no-progress")
    assert proc.returncode == 0 and "nothing to run" in proc.stdout
    proc = sweep("run", str(spec), "--out", str(out), "--cache", str(cache), "--launcher", "debug",
                 "--retry-failed", "--no-progress")
    assert proc.returncode == 1
    status = folder.status(bad.point)
    assert status["attempts"] == 2 and status["state"] == "failed"
    assert "Error:" in proc.stdout + proc.stderr and status["error"] in proc.stdout + proc.stderr


def test_distill_points_share_one_baseline(tmp_path, cache, scene):
    spec = write(tmp_path / "distill.yaml",
                 f"command: distill\nscenes: ['{scene}']\nsource: {{experts: [static, stg], {QUICK}}}\n"
                 "settings: {student: stg, steps: 3}\naxes:\n  lam: [0.0, 1.0]\n")
    out = tmp_path / "sweep"
    proc = run_local(spec, out, cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = SweepFolder.open(out)
    points = [p for p in folder.plan() if p.stage == "distill"]
    baselines = {read_record(folder.result_dir(p) / "results.json").extra["baseline"]["folder"] for p in points}
    assert len(baselines) == 1
    assert Path(next(iter(baselines))).parent == out / "baselines" / points[0].source
    assert sweep("collect", str(out)).returncode == 0
    table = pd.read_csv(folder.root / "results" / "results.csv")
    assert list(table["command"]) == ["run"] * 5 + ["distill"] * 4  # (the source run: the teacher's figures)
    distilled = table[table["command"] == "distill"].reset_index()
    assert list(distilled["model"]) == ["stg", "stg (baseline)"] * 2
    assert distilled["psnr"][1] == distilled["psnr"][3]  # (the one baseline, in both rows)


def test_a_killed_point_is_lost_and_a_held_one_running(tmp_path, run_sweep):
    folder = SweepFolder.open(run_sweep)
    point = folder.plan()[2]
    copy = SweepFolder(tmp_path / "copy")
    (copy.root / "points").mkdir(parents=True)
    for name in ("sweep.json", "plan.jsonl", "spec.json"):
        (copy.root / name).write_bytes((run_sweep / name).read_bytes())
    copy.write_status(point, state="running", attempts=1, pid=999999)
    assert copy.state(point).state == "lost"  # status says running, nobody holds the lock
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT);"
                               " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(copy.point_dir(point) / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert copy.state(point).state == "running"
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while copy.state(point).state != "lost" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert copy.state(point).state == "lost"


def test_dry_run_writes_nothing_and_prints_the_commands(tmp_path, scene, cache):
    spec = write(tmp_path / "s.yaml", f"command: prune\nscenes: ['{scene}']\nsource: {{experts: [static, stg]}}\n"
                                      "axes:\n  ratio: [0.5]\n")
    proc = sweep("run", str(spec), "--out", str(tmp_path / "sweep"), "--cache", str(cache), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "moegs-bench prune " in proc.stdout and "--ratio 0.5" in proc.stdout
    assert not (tmp_path / "sweep").exists()
