"""Distillation (MoE-GS Eq. 11): the loss on hand-made tensors, ``moegs-bench distill`` end to end
on a tiny finished run (derived folders, the fair baseline, ``--expert-run``), resume after a
kill, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.distill import open_distillation
from moegs_bench.metrics import photometric_loss
from moegs_bench.router.config import DistillConfig
from moegs_bench.training.checkpoint import load_checkpoint
from moegs_bench.training.distill import DistillHooks, distillation_loss
from test_cli import assert_one_line_error, cli, folder_files

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- Eq. 11

def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(12, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gt, teacher = torch.rand(12, 16, 3, generator=g, dtype=torch.float64), torch.rand(12, 16, 3, generator=g,
                                                                                      dtype=torch.float64)
    gate = torch.rand(12, 16, 1, generator=g, dtype=torch.float64)
    return img, gt, teacher, gate


@pytest.mark.parametrize("lambda_dssim", [0.0, 0.2])
def test_lam_one_and_zero_are_the_pure_ground_truth_and_teacher_terms(lambda_dssim):
    img, gt, teacher, gate = _tensors()
    own = photometric_loss(gate * img, gate * gt, lambda_dssim)
    rest = photometric_loss((1 - gate) * img, (1 - gate) * teacher, lambda_dssim)
    assert torch.equal(distillation_loss(img, gt, teacher, gate, 1.0, lambda_dssim), own)
    assert torch.equal(distillation_loss(img, gt, teacher, gate, 0.0, lambda_dssim), rest)
    mixed = distillation_loss(img, gt, teacher, gate, 0.3, lambda_dssim)
    assert float(mixed.detach()) == pytest.approx(0.3 * float(own.detach()) + 0.7 * float(rest.detach()), rel=1e-12)
    # a student the gate trusts everywhere learns from the ground truth alone: its training loss
    ones = torch.ones_like(gate)
    assert torch.equal(distillation_loss(img, gt, teacher, ones, 1.0, lambda_dssim),
                       photometric_loss(img, gt, lambda_dssim))


def test_the_loss_by_hand():
    """L1 only: image 0.5, ground truth 1, teacher 0, gate 0.25 everywhere:
    own = |0.25 * 0.5 - 0.25 * 1| = 0.125, rest = |0.75 * 0.5 - 0.75 * 0| = 0.375, so lam 0.5 gives
    0.25 and the gradient per pixel value is (0.5 * 0.25 * -1 + 0.5 * 0.75 * +1) / (H W 3)."""
    img = torch.full((4, 5, 3), 0.5, dtype=torch.float64, requires_grad=True)
    gt, teacher = torch.ones(4, 5, 3, dtype=torch.float64), torch.zeros(4, 5, 3, dtype=torch.float64)
    gate = torch.full((4, 5, 1), 0.25, dtype=torch.float64)
    loss = distillation_loss(img, gt, teacher, gate, 0.5, 0.0)
    assert float(loss.detach()) == pytest.approx(0.25, abs=1e-15)
    (grad,) = torch.autograd.grad(loss, img)
    assert torch.allclose(grad, torch.full_like(img, (-0.125 + 0.375) / 60), atol=1e-15)


def test_lam_is_checked():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(Exception, match="lam"):
            DistillConfig(student="stg", lam=bad)
    assert DistillConfig(student="stg", lam=None).is_baseline


# ------------------------------------------------------------------------------------- end to end


def test_distill_writes_a_student_and_its_baseline_and_leaves_the_run_alone(finished, tmp_path):
    scene, run, cache = finished
    before = folder_files(run)
    args = ("distill", str(run), "--student", "stg", "--lam", "0.25,0.75", "--steps", "6", "--out", str(tmp_path),
            "--cache", str(cache), "--no-progress")
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert folder_files(run) == before  # the source run is only read
    source = json.loads((Path(json.loads((run / "experts.json").read_text())["stg"]["folder"]) / "results.json")
                        .read_text())
    base = tmp_path / "mix_distill-stg-gt-6"
    baseline = json.loads((base / "results.json").read_text())
    assert baseline["extra"]["variant"] == "baseline" and "teacher" not in baseline["extra"]
    finals = {}
    for lam in ("0.25", "0.75"):
        folder = tmp_path / f"mix_distill-stg-lam{lam}-6"
        record = json.loads((folder / "results.json").read_text())
        extra = record["extra"]
        assert record["name"] == "stg" and extra["variant"] == "distilled"
        assert extra["distill"] == {"student": "stg", "lam": float(lam), "steps": 6, "from_scratch": False,
                                    "start_step": 10}
        assert extra["baseline"]["folder"] == str(base) and extra["baseline"]["psnr"] == baseline["metrics"]["psnr"]
        assert extra["derived_from"]["psnr"] == source["metrics"]["psnr"]
        assert extra["teacher"]["renders"] > 0 and extra["teacher"]["cached_views"] == extra["teacher"]["renders"]
        assert record["timing"]["train_seconds"] > source["timing"]["train_seconds"]  # its extra steps included
        ckpt = load_checkpoint(folder / "expert.pt", kind="expert", identity={"expert": "stg", "state_version": 1})
        assert ckpt.finished and ckpt.step == 16 and not (folder / "checkpoints").exists()
        assert len(list((folder / "renders" / "test").glob("*.png"))) == len(record["metrics"]["per_view"])
        finals[lam] = ckpt.model
    base_model = load_checkpoint(base / "expert.pt").model
    changed = [k for k in base_model if torch.is_tensor(base_model[k]) and base_model[k].is_floating_point()
               and base_model[k].shape == finals["0.25"][k].shape and not torch.equal(base_model[k], finals["0.25"][k])]
    assert changed  # the teacher changed what the student learned
    assert any(not torch.equal(finals["0.25"][k], finals["0.75"][k]) for k in changed)

    again = cli(*args)  # a rerun reports the finished ones, the baseline included
    assert again.returncode == 0 and again.stdout.count("finished distillation found") == 3, again.stdout

    # a distilled student is a finished train-expert folder for run --expert-run
    mixed = cli("run", "--experts", "static,stg", "--expert-iterations", "10", "--router-iterations", "3",
                "--scene", str(scene), "--out", str(tmp_path / "runs"), "--name", "with-student", "--cache",
                str(cache), "--expert-run", f"stg={tmp_path / 'mix_distill-stg-lam0.25-6'}", "--no-progress")
    assert mixed.returncode == 0, mixed.stderr
    copied = json.loads((tmp_path / "runs" / "with-student" / "results" / "stg.json").read_text())
    assert copied["metrics"]["psnr"] == json.loads((tmp_path / "mix_distill-stg-lam0.25-6" / "results.json")
                                                   .read_text())["metrics"]["psnr"]


class Killed(Exception):
    pass


def test_a_killed_distillation_resumes_to_the_same_student(finished, tmp_path, monkeypatch):
    _, run, cache = finished
    job = open_distillation(run, "stg", registry=Registry.discover(), cache_dir=cache)
    config = DistillConfig(student="stg", lam=0.5, steps=6)
    whole = job.train(config, tmp_path / "whole", progress=False, log=lambda _: None)
    assert not whole.reused

    original = DistillHooks.after_step

    def killed_at_14(self, step, optimizer):
        original(self, step, optimizer)
        if step == 14:
            raise Killed

    monkeypatch.setattr(DistillHooks, "after_step", killed_at_14)
    with pytest.raises(Killed):
        job.train(config, tmp_path / "killed", progress=False, log=lambda _: None)
    latest = load_checkpoint(tmp_path / "killed" / "checkpoints" / "latest.pt")
    assert latest.step == 12 and not latest.finished  # (checkpoint_every of the stretched stg schedule: 3)
    monkeypatch.setattr(DistillHooks, "after_step", original)
    messages: list[str] = []
    resumed = job.train(config, tmp_path / "killed", progress=False, log=messages.append)
    assert any("resuming stg (lam 0.5) training from step 12" in m for m in messages), messages
    a = load_checkpoint(tmp_path / "whole" / "expert.pt").model
    b = load_checkpoint(tmp_path / "killed" / "expert.pt").model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    assert resumed.record.metrics.psnr == whole.record.metrics.psnr


def test_from_scratch_stretches_the_schedule(finished, tmp_path):
    _, run, cache = finished
    job = open_distillation(run, "stg", registry=Registry.discover(), cache_dir=cache)
    result = job.train(DistillConfig(student="stg", lam=None, steps=4, from_scratch=True), tmp_path / "s",
                       progress=False, log=lambda _: None)
    ident = json.loads((tmp_path / "s" / "run.json").read_text())
    assert ident["config"]["train"]["iterations"] == 4 and ident["distill"]["start_step"] == 0
    assert load_checkpoint(tmp_path / "s" / "expert.pt").step == 4
    assert result.record.timing.train_seconds == result.record.extra["distill_seconds"]
    # from scratch for the student's own number of steps, the baseline is the student's training again
    again = job.train(DistillConfig(student="stg", lam=None, steps=10, from_scratch=True), tmp_path / "again",
                      progress=False, log=lambda _: None)
    source = load_checkpoint(job.folder / "expert.pt").model
    repeated = load_checkpoint(again.out_dir / "expert.pt").model
    assert source.keys() == repeated.keys()
    assert all(torch.equal(source[k], repeated[k]) for k in source if torch.is_tensor(source[k]))
    assert again.record.metrics.psnr == job.record.metrics.psnr


@pytest.mark.parametrize("args,needles", [
    (["--student", "stg", "--lam", "1.5"], ["--lam (lam)", "<= 1"]),
    (["--student", "stg", "--lam", "-0.5"], ["--lam (lam)", ">= 0"]),
    (["--student", "stg", "--lam", "half"], ["--lam", "comma-separated list of numbers"]),
    (["--student", "nope"], ["unknown expert 'nope'; valid ids: "]),
    (["--student", "4dgs"], ["--student (student)", "4dgs is not one of the run's experts (static, stg)"]),
    (["--student", "stg", "--lam", "0.2,0.4", "--name", "x"], ["--name", "several --lam values"]),
    (["--student", "stg", "--name", "../x"], ["--name", "expected a folder name"]),
])
def test_bad_settings_are_one_line_and_write_nothing(finished, tmp_path, args, needles):
    _, run, cache = finished
    assert_one_line_error(cli("distill", str(run), *args, "--steps", "2", "--out", str(tmp_path / "o"), "--cache",
                              str(cache), "--no-progress"), *needles)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_folders_that_cannot_be_used_are_refused(finished, tmp_path):
    _, run, cache = finished
    expert = json.loads((run / "experts.json").read_text())["stg"]["folder"]
    assert_one_line_error(cli("distill", expert, "--student", "stg", "--out", str(tmp_path / "o"), "--cache",
                              str(cache)), "RUN_DIR", "not a mixture run")
    assert not (tmp_path / "o").exists()
    # an output folder holding another run (here: the fair baseline of another step count)
    ok = cli("distill", str(run), "--student", "stg", "--lam", "0.5", "--steps", "2", "--no-baseline", "--out",
             str(tmp_path), "--name", "taken", "--cache", str(cache), "--no-progress")
    assert ok.returncode == 0, ok.stderr
    before = folder_files(tmp_path / "taken")
    assert_one_line_error(cli("distill", str(run), "--student", "stg", "--lam", "0.25", "--steps", "2",
                              "--no-baseline", "--out", str(tmp_path), "--name", "taken", "--cache", str(cache)),
                          "holds a different run")
    assert folder_files(tmp_path / "taken") == before
    assert_one_line_error(cli("distill", str(run), "--student", "stg", "--steps", "2", "--no-baseline", "--out",
                              str(run), "--cache", str(cache)), "source run folder")


def test_distillation_benchmark_quick(finished, tmp_path):
    _, run, cache = finished
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distillation.py"), str(run), "--student", "stg",
                          "--quick", "--out", str(tmp_path), "--cache", str(cache)],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("mix stg ")]
    assert len(rows) == 1, out
    base, lam = float(rows[0][4]), float(rows[0][5])
    gain = json.loads((tmp_path / "mix_distill-stg-lam0.5-2" / "results.json").read_text())["extra"]
    assert gain["baseline"]["psnr"] == pytest.approx(base, abs=0.006) and lam > 0
