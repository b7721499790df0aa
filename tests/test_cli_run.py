"""``moegs-bench run`` end to end on a tiny generated scene: run folder, reuse, resume, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.data import open_scene
from moegs_bench.data.synthetic import generate
from moegs_bench.app.config import RunConfig
from moegs_bench.app.run import RunRequest, run_mixture
from moegs_bench.results import read_record
from moegs_bench.router.mixture import ROUTER_PROFILES
from test_cli import assert_one_line_error, cli

SMALL = {"width": 32, "height": 24, "train_cameras": 3}
QUICK = ("--expert-iterations", "4", "--router-iterations", "3", "--no-progress")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene") / "kitchen"
    generate(root, "kitchen", frames=8, **SMALL)
    return root


@pytest.fixture(scope="module")
def finished(scene, tmp_path_factory) -> tuple[Path, Path, object]:
    """One finished run of static + stg (shared by the tests that only read it)."""
    base = tmp_path_factory.mktemp("runs")
    cache = base / "cache"
    proc = cli("run", "--experts", "static,stg", "--scene", str(scene), "--out", str(base), "--name", "first",
               "--cache", str(cache), *QUICK)
    return base / "first", cache, proc


def test_run_writes_the_whole_run_folder(finished, scene):
    out, _, proc = finished
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mixture - best expert" in proc.stdout and "mixture" in proc.stdout
    identity = json.loads((out / "run.json").read_text())
    assert list(identity["experts"]) == ["static", "stg"] and identity["router"]["variant"] == "volume-aware"
    assert identity["router"]["iterations"] == 3 and identity["expert_iterations"] == 4
    mixture = read_record(out / "results" / "mixture.json")
    experts = [read_record(out / "results" / f"{e}.json") for e in ("static", "stg")]
    assert mixture.kind == "mixture" and [r.kind for r in experts] == ["expert", "expert"]
    assert mixture.num_gaussians == sum(r.num_gaussians for r in experts)
    assert mixture.storage_bytes > sum(r.storage_bytes for r in experts)  # plus the router
    assert len(mixture.metrics.per_view) == 8 and mixture.timing.render_fps > 0
    assert mixture.metrics.lpips is not None or mixture.metrics.lpips_unavailable_reason
    assert mixture.extra["router_train_seconds"] > 0
    assert set(mixture.extra["expert_train_seconds"]) == {"static", "stg"}
    assert len(list((out / "renders" / "test").glob("*.png"))) == 8
    gates = sorted((out / "gates").glob("*.png"))
    assert len(gates) == 4 and iio.imread(gates[0]).ndim == 3
    frames = iio.imread(out / "video" / "mixture_gates.mp4", plugin="FFMPEG")  # [F, H, W, 3]
    assert frames.shape[0] == 8 and frames.shape[2] > frames.shape[1]  # mixture | gate map, side by side
    sources = json.loads((out / "experts.json").read_text())
    assert set(sources) == {"static", "stg"} and not any(s["reused"] for s in sources.values())
    assert not (out / "router" / "latest.pt").exists() and (out / "router" / "mixture.pt").is_file()


def test_rerun_reports_and_other_runs_reuse_the_expert_cache(finished, scene):
    out, cache, _ = finished
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = cli("run", "--experts", "static,stg", "--scene", str(scene), "--out", str(out.parent), "--name", "first",
                "--cache", str(cache), *QUICK)
    assert again.returncode == 0, again.stderr
    assert "finished run found" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing recomputed
    other = cli("run", "--experts", "stg,static", "--router", "pixel", "--scene", str(scene), "--out",
                str(out.parent), "--name", "pixel", "--cache", str(cache), *QUICK)
    assert other.returncode == 0, other.stderr
    assert other.stdout.count("reusing the finished run") == 2
    sources = json.loads((out.parent / "pixel" / "experts.json").read_text())
    assert all(s["reused"] for s in sources.values())
    assert read_record(out.parent / "pixel" / "results" / "mixture.json").config["router"]["variant"] == "pixel"


def test_a_folder_of_another_run_is_refused_and_kept(finished, scene):
    out, cache, _ = finished
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = cli("run", "--experts", "static,stg", "--scene", str(scene), "--out", str(out.parent), "--name", "first",
               "--seed", "1", "--cache", str(cache), *QUICK)
    assert_one_line_error(proc, "holds a different run", "seed")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("experts", "needle"),
    [("stg", "at least two experts"), ("stg,nope", "unknown expert 'nope'"), ("stg,stg", "stg")],
)
def test_bad_expert_lists_exit_2(experts, needle, scene, tmp_path):
    proc = cli("run", "--experts", experts, "--scene", str(scene), "--out", str(tmp_path), *QUICK)
    assert_one_line_error(proc, needle)
    assert not any(tmp_path.iterdir())


def test_experts_trained_on_another_scene_are_refused(scene, tmp_path):
    other = tmp_path / "windy"
    generate(other, "windy", frames=3, **SMALL)
    trained = tmp_path / "stg-windy"
    proc = cli("train-expert", "--expert", "stg", "--scene", str(other), "--out", str(trained), "--iterations", "2",
               "--no-progress", "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    proc = cli("run", "--experts", "static,stg", "--scene", str(scene), "--out", str(tmp_path / "runs"),
               "--expert-run", f"stg={trained}", "--cache", str(tmp_path / "cache"), *QUICK)
    assert_one_line_error(proc, "--expert-run stg=", "trained on scene")
    assert not (tmp_path / "runs").exists()
    proc = cli("run", "--experts", "static,stg", "--scene", str(scene), "--out", str(tmp_path / "runs"),
               "--expert-run", f"static={trained}", "--cache", str(tmp_path / "cache"), *QUICK)
    assert_one_line_error(proc, "holds expert 'stg'")


def test_killed_router_training_resumes_to_the_same_router(scene, tmp_path, monkeypatch):
    import moegs_bench.router.train as router_train

    loaded, spec = open_scene(str(scene), cache_dir=tmp_path / "cache")
    registry = Registry.discover()
    cfg = replace(ROUTER_PROFILES["tiny"], iterations=5, checkpoint_every=2)
    settings = RunConfig.defaults([registry.get("static"), registry.get("stg")], profile="tiny", expert_iterations=3)
    request = RunRequest(config=replace(settings, router=cfg), scene_spec=spec)

    def go(name: str):
        return run_mixture(request, loaded, tmp_path / name, registry=registry, cache_root=tmp_path / "experts",
                           progress=False, log=lambda s: None)

    uninterrupted = go("whole")
    real_view_at = router_train.view_at

    def killing_view_at(seed, step, n):
        if step == 4:
            raise KeyboardInterrupt("killed")
        return real_view_at(seed, step, n)

    monkeypatch.setattr(router_train, "view_at", killing_view_at)
    with pytest.raises(KeyboardInterrupt):
        go("killed")
    monkeypatch.undo()
    latest = torch.load(tmp_path / "killed" / "router" / "latest.pt", weights_only=False)
    assert latest["step"] == 2
    assert not (tmp_path / "killed" / "results" / "mixture.json").exists()
    messages: list[str] = []
    resumed = run_mixture(request, loaded, tmp_path / "killed", registry=registry, cache_root=tmp_path / "experts",
                          progress=False, log=messages.append)
    assert any("resuming router training from step 2" in m for m in messages)
    a = torch.load(tmp_path / "whole" / "router" / "mixture.pt", weights_only=False)["router"]
    b = torch.load(tmp_path / "killed" / "router" / "mixture.pt", weights_only=False)["router"]
    for eid in ("static", "stg"):
        for col, value in a["columns"][eid].items():
            assert torch.equal(value, b["columns"][eid][col]), (eid, col)
    for key, value in a["router"].items():
        assert torch.equal(value, b["router"][key]), key
    assert resumed.mixture.metrics.psnr == uninterrupted.mixture.metrics.psnr


@pytest.mark.parametrize("finetune", [False, True])
def test_router_training_moves_the_experts_only_when_fine_tuning(scene, tmp_path, finetune):
    from moegs_bench.adapters.base import SceneInit
    from moegs_bench.router.gate import ROUTER_COLUMNS
    from moegs_bench.router.mixture import Mixture
    from moegs_bench.router.train import train_router

    loaded, _ = open_scene(str(scene), cache_dir=tmp_path / "cache")
    registry = Registry.discover()
    torch.manual_seed(0)
    experts = [registry.get(e)(registry.get(e).profile("tiny"), SceneInit.from_scene(loaded)) for e in ("static", "stg")]
    cfg = replace(ROUTER_PROFILES["tiny"], iterations=2, checkpoint_every=0, finetune_experts=finetune)
    mixture = Mixture(experts, cfg)
    before = {(e.info.id, n): p.detach().clone() for e in experts for n, p in e.table.items()}
    seconds = train_router(mixture, loaded, tmp_path / "latest.pt", progress=False, log=lambda s: None)
    assert seconds > 0 and not (tmp_path / "latest.pt").exists()
    for (eid, name), old in before.items():
        new = dict(mixture.experts[[e.info.id for e in experts].index(eid)].table.items())[name]
        moved = not torch.equal(old, new.detach())
        if name in ("router_w", "router_w_dir"):
            assert moved, (eid, name)
        elif name in ("means", "sh_dc") and name not in ROUTER_COLUMNS:
            assert moved == finetune, (eid, name, finetune)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "router.temperature=inf"], ["router.temperature: expected a finite number > 0, got inf"]),
        (["--temperature", "inf"], ["--temperature (router.temperature): expected a finite number > 0, got inf"]),
        (["--set", "router.temprature=0.1"], ["router.temprature: unknown key", "closest valid keys",
                                              "router.temperature"]),
        (["--set", "experts.4dgs.train.iterations=5"], ["experts.4dgs.train.iterations: unknown key",
                                                        "experts.stg.train.iterations"]),
        (["--set", "experts.stg.train.lambda_dssim=-inf"], ["experts.stg.train.lambda_dssim: expected a finite"]),
        (["--set", "router.variant=softmax"], ["router.variant: expected one of volume-aware"]),
        (["--set", "router"], ["--set: expected KEY=VALUE"]),
        (["--set", "router=1"], ["router: is a group of settings"]),
        (["--frames", "0:0"], ["--frames (scene.frames)"]),
        (["--name", "../../escape"], ["--name: expected a folder name", "'../../escape'"]),
        (["--name", "/tmp/absolute"], ["--name: expected a folder name"]),
        (["--name", ".."], ["--name: expected a folder name"]),
    ],
)
def test_bad_settings_exit_2_before_any_work(scene, tmp_path, args, needles):
    """Every setting is validated before anything runs or is written (no run folder, no cache)."""
    proc = cli("run", "--experts", "static,stg", "--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"),
               *args, *QUICK)
    assert_one_line_error(proc, *needles)
    assert not any(tmp_path.iterdir())


def test_set_reaches_the_run_tree_and_run_json(finished, scene, tmp_path):
    """``--set`` keys and shortcut flags end up in run.json's settings tree; --set wins over a flag."""
    _, cache, _ = finished
    proc = cli("run", "--experts", "static,stg", "--scene", str(scene), "--out", str(tmp_path), "--name", "set",
               "--cache", str(cache), "--temperature", "0.5", "--set", "router.temperature=0.25",
               "--set", "router.lambda_dssim=0.3", "--set", "experts.stg.train.lambda_dssim=0.1", *QUICK)
    assert proc.returncode == 0, proc.stderr
    identity = json.loads((tmp_path / "set" / "run.json").read_text())
    assert identity["router"]["temperature"] == 0.25 and identity["router"]["lambda_dssim"] == 0.3
    assert identity["experts"]["stg"]["train"]["lambda_dssim"] == 0.1
    assert identity["experts"]["static"]["train"]["iterations"] == 4  # --expert-iterations
    assert identity["scene"]["id"] == identity["scene"]["spec"] and identity["scene"]["frames"] is None
    assert "stg: training into" in proc.stdout  # another stg configuration: another cache entry
    mixture = read_record(tmp_path / "set" / "results" / "mixture.json")
    assert mixture.config["router"]["temperature"] == 0.25
