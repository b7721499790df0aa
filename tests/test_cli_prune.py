"""``moegs-bench prune`` end to end on a tiny finished run, its one-line errors, and the
pruning benchmark's smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moegs_bench.training.checkpoint import load_checkpoint
from test_cli import assert_one_line_error, cli, folder_files

ROOT = Path(__file__).resolve().parents[1]


def test_prune_writes_a_derived_run_and_leaves_the_source_alone(finished, tmp_path):
    _, run, cache = finished
    before = folder_files(run)
    args = ("prune", str(run), "--ratio", "0.5", "--views", "3", "--out", str(tmp_path), "--cache", str(cache),
            "--no-progress")
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "mix_prune-gate-0.5"
    record = json.loads((out / "results" / "mixture.json").read_text())
    source = json.loads((run / "results" / "mixture.json").read_text())
    extra = record["extra"]
    assert extra["derived_from"]["folder"] == str(run.resolve()) and extra["prune"]["ratio"] == 0.5
    for eid, n in extra["gaussians_before"].items():
        assert extra["gaussians_after"][eid] == n - int(0.5 * n)  # floor(ratio * N) removed per expert
    assert record["num_gaussians"] == sum(extra["gaussians_after"].values()) < source["num_gaussians"]
    assert record["storage_bytes"] < source["storage_bytes"]
    assert len(list((out / "renders" / "test").glob("*.png"))) == len(source["metrics"]["per_view"])
    for eid, n in extra["gaussians_after"].items():  # the saved experts and router columns have the kept rows
        model = load_checkpoint(out / "experts" / f"{eid}.pt").model
        assert model["table.means"].shape[0] == n
        columns = load_checkpoint(out / "router" / "mixture.pt").states["router"]["columns"][eid]
        assert all(c.shape == (n,) for c in columns.values())
    assert folder_files(run) == before  # the source run is only read
    avg = record["extra"]["baselines"]["uniform_average"]["psnr"]  # the summary says what the router buys
    assert f"uniform average of the experts (no router): {avg:.2f} dB" in " ".join(proc.stdout.split())
    again = cli(*args)
    assert again.returncode == 0 and "finished prune found" in again.stdout


def test_each_criterion_removes_the_same_number(finished, tmp_path):
    _, run, cache = finished
    kept = {}
    for criterion in ("opacity", "random"):
        proc = cli("prune", str(run), "--ratio", "0.25", "--criterion", criterion, "--out", str(tmp_path), "--cache",
                   str(cache), "--no-progress", *(("--finetune-steps", "3") if criterion == "random" else ()))
        assert proc.returncode == 0, proc.stderr
        record = json.loads((tmp_path / f"mix_prune-{criterion}-0.25" / "results" / "mixture.json").read_text())
        kept[criterion] = record["extra"]["gaussians_after"]
    assert kept["opacity"] == kept["random"]
    # the fine-tuned router continued for 3 steps at the rate the run's schedule ended with
    source = json.loads((run / "run.json").read_text())["router"]
    router = load_checkpoint(tmp_path / "mix_prune-random-0.25" / "router" / "mixture.pt")
    assert router.finished and router.step == 3 and router.config["iterations"] == 3
    end = source["lr_w"] * (source["lr_w_final"] / source["lr_w"]) ** (source["iterations"] / source["lr_decay_steps"])
    assert router.config["lr_w"] == pytest.approx(end, rel=1e-12) and router.config["lr_decay_steps"] == 0
    assert not (tmp_path / "mix_prune-random-0.25" / "router" / "latest.pt").exists()


@pytest.mark.parametrize("args,needles", [
    (["--ratio", "1.5"], ["--ratio (ratio)", "< 1"]),
    (["--ratio", "0"], ["--ratio (ratio)", "> 0"]),
    ([], ["ratio", "exactly one of a ratio and a threshold"]),
    (["--ratio", "0.5", "--threshold", "0.1"], ["exactly one of a ratio and a threshold"]),
    (["--threshold", "1e9", "--criterion", "opacity"], ["--threshold (threshold)", "removes every Gaussian of"]),
    (["--threshold", "0", "--criterion", "opacity"], ["--threshold (threshold)", "removes no Gaussian"]),
    (["--ratio", "0.5", "--name", "../x"], ["--name", "expected a folder name"]),
])
def test_bad_settings_are_one_line_and_write_nothing(finished, tmp_path, args, needles):
    _, run, cache = finished
    assert_one_line_error(cli("prune", str(run), *args, "--out", str(tmp_path / "o"), "--cache", str(cache),
                              "--no-progress"), *needles)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_folder_that_is_not_a_finished_mixture_run_is_refused(finished, tmp_path):
    scene, run, cache = finished
    expert = json.loads((run / "experts.json").read_text())["stg"]["folder"]
    cases = {tmp_path / "missing": "no such folder", Path(expert): "holds a moegs-bench/expert-run, not a mixture run",
             tmp_path: "not a run folder (no run.json)"}
    for folder, needle in cases.items():
        assert_one_line_error(cli("prune", str(folder), "--ratio", "0.5", "--out", str(tmp_path / "o"), "--cache",
                                  str(cache)), "RUN_DIR", needle)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text((run / "run.json").read_text())
    assert_one_line_error(cli("prune", str(unfinished), "--ratio", "0.5", "--out", str(tmp_path / "o"), "--cache",
                              str(cache)), "the run is not finished")
    assert not (tmp_path / "o").exists()


def test_pruning_benchmark_quick(finished):
    _, run, cache = finished
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pruning.py"), str(run), "--quick", "--cache",
                          str(cache)], capture_output=True, text=True, timeout=600, check=True).stdout
    rows = {r[0] + (" " + r[1] if r[0] != "unpruned" else ""): r for r in (line.split() for line in out.splitlines())
            if r and r[0] in ("unpruned", "gate", "opacity", "random")}
    assert set(rows) == {"unpruned", "gate 0.5", "opacity 0.5", "random 0.5"}, out
    assert float(rows["unpruned"][-1]) == 1.0 and all(float(r[-1]) > 0 for r in rows.values())
    assert all(float(rows[k][4]) < 1.0 for k in rows if k != "unpruned")  # storage ratio below the source's
