"""The one training loop: the photometric loss, the view policies, resume, and a third kind of
training (a student fitted to a teacher's renders) configured without a third loop."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from moegs_bench.data import load_scene
from moegs_bench.data.synthetic import generate
from moegs_bench.metrics import dssim, photometric_loss
from moegs_bench.training.checkpoint import CheckpointError, load_checkpoint
from moegs_bench.training.engine import CheckpointPaths, LoopSpec, StepLoss, TrainingHooks, run_training
from moegs_bench.training.schedule import ParamGroup
from moegs_bench.training.views import EpochPermutations, OneViewPerStep, view_at, view_order


# ------------------------------------------------------------------------------ loss, schedules, views

def test_photometric_loss_is_both_former_expressions_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(12, 16, 3, generator=g, requires_grad=True)
    gt = torch.rand(12, 16, 3, generator=g)
    for lam in (0.2, 0.5, 0.0):
        ours = photometric_loss(img, gt, lam)
        (ours_grad,) = torch.autograd.grad(ours, img)
        l1 = (img - gt).abs().mean()  # the expert trainer's expression
        expert = (1 - lam) * l1 + (lam * dssim(img, gt) if lam else 0.0)
        (expert_grad,) = torch.autograd.grad(expert, img)
        assert torch.equal(ours, expert) and torch.equal(ours_grad, expert_grad)
        if lam:  # the router trainer's expression (it always computed D-SSIM)
            router = (1 - lam) * (img - gt).abs().mean() + lam * dssim(img, gt)
            (router_grad,) = torch.autograd.grad(router, img)
            assert torch.equal(ours, router) and torch.equal(ours_grad, router_grad)
    # by hand: black vs white, L1 = 1; identical images: 0
    assert float(photometric_loss(torch.zeros(12, 16, 3), torch.ones(12, 16, 3), 0.0)) == 1.0
    assert float(photometric_loss(gt, gt, 0.2)) == pytest.approx(0.0, abs=1e-6)


def test_param_group_schedule_by_hand():
    p = [nn.Parameter(torch.zeros(1))]
    g = ParamGroup("x", p, 1e-2, lr_final=1e-4, max_steps=100)
    assert g.lr_at(0) == pytest.approx(1e-2) and g.lr_at(100) == pytest.approx(1e-4)
    assert g.lr_at(50) == pytest.approx(1e-3)  # log-linear: the geometric mean half way
    assert g.lr_at(1000) == pytest.approx(1e-4)
    assert ParamGroup("c", p, 0.05).lr_at(7) == 0.05
    d = ParamGroup("d", p, 1e-2, lr_final=1e-4, max_steps=100, delay_mult=0.01, delay_steps=10)
    assert d.lr_at(0) == pytest.approx(0.01 * 1e-2) and d.lr_at(10) == pytest.approx(1e-2 * 10 ** (-0.2))


def test_epoch_permutations_walk_each_epoch_once_across_batches():
    n, batch = 5, 2
    policy = EpochPermutations(seed=3, batch_size=batch)
    drawn = [i for step in range(1, 9) for i in policy(step, n)]  # 16 views: 3 epochs and a bit
    expected = torch.cat([view_order(3, e, n) for e in range(4)]).tolist()[:16]
    assert drawn == expected
    for e in range(3):
        assert sorted(drawn[e * n:(e + 1) * n]) == list(range(n))
    assert EpochPermutations(seed=3, batch_size=batch)(6, n) == policy(6, n)  # no memory of earlier steps


def test_one_view_per_step_is_view_at():
    policy = OneViewPerStep(seed=2)
    views = [policy(s, 7) for s in range(1, 50)]
    assert all(len(v) == 1 and 0 <= v[0] < 7 for v in views)
    assert [v[0] for v in views] == [view_at(2, s, 7) for s in range(1, 50)]
    assert len({v[0] for v in views}) > 1
    assert OneViewPerStep(seed=2, draw=lambda seed, step, n: step % n)(9, 7) == [2]


# ------------------------------------------------------------------------------ the loop

@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene") / "kitchen"
    generate(root, "kitchen", frames=4, width=16, height=12, train_cameras=2)
    return load_scene(root)


class Killed(Exception):
    pass


class ImageFit(TrainingHooks):
    """A model that is one learnable image: the loop's mechanics, nothing of an expert's."""

    def __init__(self, h: int, w: int, kill_at: int = 0) -> None:
        self.x = nn.Parameter(torch.full((h, w, 3), 0.5))
        self.kill_at, self.seen, self.lrs, self.begun = kill_at, [], {}, 0

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("x", [self.x], 0.05, lr_final=0.005, max_steps=6)]

    def begin(self) -> None:
        self.begun += 1

    def before_step(self, step: int) -> None:
        if step == self.kill_at:
            raise Killed

    def loss(self, step, frame, target) -> StepLoss:
        self.seen.append((step, frame.key))
        return StepLoss(photometric_loss(self.x, target, 0.2), self.x)

    def after_step(self, step, optimizer) -> None:
        self.lrs[step] = optimizer.param_groups[0]["lr"]

    def state_dict(self):
        return {"model": {"x": self.x.detach().clone()}}

    def load_state_dict(self, states) -> None:
        with torch.no_grad():
            self.x.copy_(states["model"]["x"])


def _spec(kind="distill", targets=None, **kw) -> LoopSpec:
    return LoopSpec(kind=kind, label="image", iterations=6, checkpoint_every=2, views=EpochPermutations(0, 2),
                    optimizer=torch.optim.Adam, identity={"model": "image"}, config={"lr": 0.05},
                    targets=targets, **kw)


def _paths(folder: Path) -> CheckpointPaths:
    return CheckpointPaths(latest=folder / "checkpoints" / "latest.pt", final=folder / "final.pt")


def test_loop_views_schedules_and_killed_run_resuming_bit_for_bit(scene, tmp_path):
    h, w = scene.resolution[1], scene.resolution[0]
    whole = ImageFit(h, w)
    out = run_training(_spec(), whole, scene, _paths(tmp_path / "whole"), progress=False, log=lambda s: None)
    assert not out.already_finished and out.resumed_from == 0 and out.elapsed > 0
    keys = [f.key for f in scene.train]
    policy = EpochPermutations(0, 2)
    assert whole.seen == [(s, keys[i]) for s in range(1, 7) for i in policy(s, len(keys))]
    group = whole.param_groups()[0]
    assert whole.lrs == {s: group.lr_at(s) for s in range(1, 7)}
    assert not (tmp_path / "whole" / "checkpoints").exists()  # the periodic file and its folder are gone
    final = load_checkpoint(tmp_path / "whole" / "final.pt", kind="distill")
    assert final.finished and final.step == 6 and final.optimizer is not None

    killed = ImageFit(h, w, kill_at=5)
    with pytest.raises(Killed):
        run_training(_spec(), killed, scene, _paths(tmp_path / "killed"), progress=False, log=lambda s: None)
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "latest.pt").step == 4
    resumed, messages = ImageFit(h, w), []
    out = run_training(_spec(), resumed, scene, _paths(tmp_path / "killed"), progress=False, log=messages.append)
    assert out.resumed_from == 4 and messages == [
        f"resuming image training from step 4 ({tmp_path / 'killed' / 'checkpoints' / 'latest.pt'})"]
    assert [s for s, _ in resumed.seen] == [5, 5, 6, 6]
    assert torch.equal(resumed.x, whole.x)

    again = ImageFit(h, w)  # a finished training is loaded, not run
    out = run_training(_spec(), again, scene, _paths(tmp_path / "killed"), progress=False, log=lambda s: None)
    assert out.already_finished and again.seen == [] and again.begun == 0 and torch.equal(again.x, whole.x)
    with pytest.raises(CheckpointError, match="another configuration"):
        run_training(replace(_spec(), config={"lr": 0.1}), ImageFit(h, w), scene, _paths(tmp_path / "killed"),
                     progress=False, log=lambda s: None)


class TeacherRenders:
    """Targets rendered by a teacher (here a fixed image per view) instead of the training images."""

    def __init__(self, h: int, w: int) -> None:
        self.image = torch.linspace(0, 1, h * w * 3).reshape(h, w, 3)

    def get(self, frame):
        return self.image


def test_a_student_fits_a_teachers_renders_with_the_same_loop(scene, tmp_path):
    h, w = scene.resolution[1], scene.resolution[0]
    teacher = TeacherRenders(h, w)
    student = ImageFit(h, w)
    before = float((student.x.detach() - teacher.image).abs().mean())
    spec = LoopSpec(kind="distill", label="student", iterations=30, checkpoint_every=0, views=OneViewPerStep(0),
                    optimizer=torch.optim.Adam, identity={"teacher": "fixed"}, config={}, targets=teacher)
    run_training(spec, student, scene, CheckpointPaths(tmp_path / "latest.pt", tmp_path / "student.pt"),
                 progress=False, log=lambda s: None)
    after = float((student.x.detach() - teacher.image).abs().mean())
    assert after < 0.5 * before
    assert math.isfinite(after)
    with pytest.raises(CheckpointError, match="a distill checkpoint, expected an expert checkpoint"):
        load_checkpoint(tmp_path / "student.pt", kind="expert")


def test_a_checkpoint_whose_state_does_not_fit_is_one_line(scene, tmp_path):
    h, w = scene.resolution[1], scene.resolution[0]
    killed = ImageFit(h, w, kill_at=3)
    with pytest.raises(Killed):
        run_training(_spec(), killed, scene, _paths(tmp_path), progress=False, log=lambda s: None)
    with pytest.raises(CheckpointError, match="state does not fit this image \\(RuntimeError: ") as info:
        run_training(_spec(), ImageFit(h + 1, w), scene, _paths(tmp_path), progress=False, log=lambda s: None)
    assert "\n" not in str(info.value)  # (a model of another size than the checkpoint's)
