"""The shared trainer: determinism, resume, run-folder safety, checkpoints, results record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moegs_bench.data import PointCloud, load_scene
from moegs_bench.data.synthetic import generate
from moegs_bench.experts.ex4dgs import Ex4DGS
from moegs_bench.experts.static3dgs import Static3DGS
from moegs_bench.experts.stg import SpacetimeGaussians
from moegs_bench.results import read_record
from moegs_bench.training.checkpoint import CheckpointError, load_checkpoint
from moegs_bench.training.trainer import RunFolderError, train_expert

SMALL = {"frames": 10, "width": 32, "height": 24, "train_cameras": 3}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene") / "kitchen"
    generate(root, "kitchen", **SMALL)
    scene = load_scene(root)
    pts = scene.points  # a tenth of the points: the mechanics, not the quality, are under test
    scene.points = PointCloud(pts.xyz[::10].clone(), pts.rgb[::10].clone(), pts.source)
    return scene


def _config(cls, iterations=8):
    cfg = cls.profile("tiny").with_iterations(iterations)
    # densify early and often so that the row edits are part of what must be reproduced
    cfg.train.densify_from, cfg.train.densify_every, cfg.train.checkpoint_every = 2, 3, 4
    return cfg


def _train(cls, scene, out, **kw):
    cfg = kw.pop("config", None) or _config(cls)
    return train_expert(cls, scene, out, scene_spec="synthetic:test", config=cfg, profile="tiny",
                        progress=False, log=lambda s: None, **kw)


def _same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k


def test_training_is_deterministic_for_a_seed(scene, tmp_path):
    a = _train(SpacetimeGaussians, scene, tmp_path / "a")
    b = _train(SpacetimeGaussians, scene, tmp_path / "b")
    _same_model(a.expert, b.expert)
    c = _train(SpacetimeGaussians, scene, tmp_path / "c", seed=1)
    assert not torch.equal(a.expert.table["means"], c.expert.table["means"])


def test_killed_run_resumes_to_the_same_model(scene, tmp_path, monkeypatch):
    full = _train(Ex4DGS, scene, tmp_path / "full")

    class Killed(Exception):
        pass

    def on_step(self, step):  # dies during step 6, after the checkpoint of step 4
        if step == 6:
            raise Killed
    monkeypatch.setattr(Ex4DGS, "on_step", on_step)
    with pytest.raises(Killed):
        _train(Ex4DGS, scene, tmp_path / "killed")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "latest.pt").step == 4
    with pytest.raises(RunFolderError, match="--resume"):
        _train(Ex4DGS, scene, tmp_path / "killed")
    resumed = _train(Ex4DGS, scene, tmp_path / "killed", resume=True)
    _same_model(full.expert, resumed.expert)
    assert not (tmp_path / "killed" / "checkpoints" / "latest.pt").exists()


def test_results_record_renders_and_rerun(scene, tmp_path):
    run = _train(Static3DGS, scene, tmp_path / "run")
    rec = read_record(tmp_path / "run" / "results.json")
    assert rec.kind == "expert" and rec.name == "static" and rec.seed == 0
    assert rec.num_gaussians == run.expert.num_gaussians
    assert rec.storage_bytes == run.expert.storage_bytes() > 0
    assert len(rec.metrics.per_view) == len(scene.test) and 0 < rec.metrics.psnr < 60
    assert (rec.metrics.lpips is None) != (rec.metrics.lpips_unavailable_reason is None)
    assert rec.timing.render_fps > 0 and rec.timing.train_seconds > 0
    pngs = sorted((tmp_path / "run" / "renders" / "test").glob("*.png"))
    assert len(pngs) == len(scene.test)
    ckpt = load_checkpoint(tmp_path / "run" / "expert.pt", expert="static")
    assert ckpt.finished and ckpt.step == 8

    mtime = (tmp_path / "run" / "results.json").stat().st_mtime_ns
    again = _train(Static3DGS, scene, tmp_path / "run")
    assert again.reused and (tmp_path / "run" / "results.json").stat().st_mtime_ns == mtime
    _same_model(run.expert, again.expert)


def test_folder_of_another_run_is_refused(scene, tmp_path):
    _train(Static3DGS, scene, tmp_path / "run")
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(RunFolderError, match="different run.*expert"):
        _train(SpacetimeGaussians, scene, tmp_path / "run")
    with pytest.raises(RunFolderError, match="different run.*seed"):
        _train(Static3DGS, scene, tmp_path / "run", seed=3)
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a moegs-bench expert run"):
        _train(Static3DGS, scene, tmp_path / "other")


def test_checkpoint_of_another_expert_or_version_is_refused(scene, tmp_path):
    _train(Static3DGS, scene, tmp_path / "run")
    path = tmp_path / "run" / "expert.pt"
    with pytest.raises(CheckpointError, match="expert 'static', expected 'stg'"):
        load_checkpoint(path, expert="stg")
    with pytest.raises(CheckpointError, match="state version 1, this code expects version 2"):
        load_checkpoint(path, expert="static", state_version=2)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_run_json_names_the_run(scene, tmp_path):
    _train(Static3DGS, scene, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["expert"] == "static" and run["profile"] == "tiny" and run["config"]["train"]["iterations"] == 8


def test_a_collapsing_training_is_stopped_or_reported(scene, tmp_path):
    """A screen-size limit of half a pixel from the first refinement on (after an opacity reset at
    step 2) would prune every Gaussian at step 3 (densification keeps them rather than leave none):
    ``on_failure=stop`` ends the training there with a one-line error naming the step and the
    cause; ``warn`` finishes, prints the warning and keeps it in the results record."""
    from dataclasses import replace

    from moegs_bench.training.guard import TrainingFailed

    cfg = _config(Static3DGS)
    n0 = scene.points.xyz.shape[0]
    collapsing = replace(cfg.train, opacity_reset_every=2, max_screen_size=0.5, densify_grad_threshold=1e9)
    with pytest.raises(TrainingFailed) as e:
        _train(Static3DGS, scene, tmp_path / "stop", config=replace(cfg, train=replace(collapsing, on_failure="stop")))
    msg = str(e.value)
    assert f"static collapsed at step 3: densification would have pruned all {n0:,} Gaussians" in msg
    assert "too wide on screen" in msg and "\n" not in msg
    lines: list[str] = []
    done = train_expert(Static3DGS, scene, tmp_path / "warn", scene_spec="synthetic:test", profile="tiny",
                        config=replace(cfg, train=replace(collapsing, on_failure="warn")), progress=False,
                        log=lines.append)
    health = done.record.extra["health"]
    assert len(health) == 1 and "static collapsed at step 3" in health[0]
    assert f"warning: {health[0]}" in lines
    assert read_record(tmp_path / "warn" / "results.json").extra["health"] == health
    healthy = _train(Static3DGS, scene, tmp_path / "ok")
    assert "health" not in healthy.record.extra
