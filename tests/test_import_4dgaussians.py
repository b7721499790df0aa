"""``moegs-bench import 4dgaussians``: a hustvl/4DGaussians output folder becomes a ``4dgs`` expert
whose Gaussians are upstream's at every time.

The fixture (``scripts/upstream_fixtures/4dgaussians.py``) holds a coarse (``coarse_iteration_3000``)
and a fine (``iteration_14000``) stage saved by upstream's ``Scene.save`` with random Gaussians and
deformation weights, and what upstream's ``render`` hands its rasterizer at frames of a 20-frame
Panoptic-Sports scene (upstream time i / T, as ours): ``expected.npz`` (fine stage),
``expected_coarse.npz`` (coarse stage) and ``expected_no_do_dshs.npz`` (fine stage with
``no_do=True, no_dshs=True``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from moegs_bench.adapters.base import SceneInit
from moegs_bench.data import open_scene
from moegs_bench.experts.fourdgs import FourDGaussians, FourDGSConfig
from moegs_bench.interop import get_importer
from moegs_bench.interop.base import UpstreamError
from moegs_bench.interop.fourdgaussians import _time_scale
from test_cli import assert_one_line_error
from upstream_cases import FIXTURES, copy_fixture, edit_cfg_args, import_and_load, max_errors, run_import, write_scene

FIXTURE = FIXTURES / "4dgaussians"
META = json.loads((FIXTURE / "meta.json").read_text())
FINE = Path("point_cloud") / "iteration_14000"
COARSE = Path("point_cloud") / "coarse_iteration_3000"
TOL = 1e-5


@pytest.fixture(scope="module")
def scene_spec(tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("scene4dgs")
    s = META["scene"]
    return write_scene(root / "scene", s["num_frames"], tuple(s["train_ids"]), tuple(s["test_ids"])), root / "cache"


def _scene(scene_spec):
    spec, cache = scene_spec
    return open_scene(spec, cache_dir=cache)[0]


def _errors(expert, expected: dict[str, np.ndarray], i: int) -> dict[str, float]:
    t = int(expected["frames"][i]) / META["scene"]["num_frames"]
    assert abs(t - float(expected["times"][i])) < 1e-7  # upstream's time of that frame is ours
    with torch.no_grad():
        return max_errors(expert.gaussians_at(t), expected, i)


def _assert_matches(expert, name: str) -> None:
    expected = dict(np.load(FIXTURE / name))
    assert expert.colors().shape[1:] == expected["colors"].shape[2:]
    for i in range(len(expected["frames"])):
        errors = _errors(expert, expected, i)
        assert max(errors.values()) <= TOL, (name, int(expected["frames"][i]), errors)


def test_imported_model_matches_upstream(tmp_path, scene_spec):
    spec, cache = scene_spec
    out = tmp_path / "out"
    expert, _ = import_and_load("4dgaussians", FourDGaussians, FIXTURE / "model", spec, out, cache)
    assert expert.num_gaussians == META["gaussians"]["fine"] and expert.max_sh_degree == 3
    _assert_matches(expert, "expected.npz")
    e = np.load(FIXTURE / "expected.npz")
    assert np.abs(e["means"][-1] - e["means"][0]).max() > 0.05  # the fixture does move
    upstream = json.loads((out / "upstream.json").read_text())
    assert upstream["iteration"] == 14000 and upstream["settings"]["stage"] == "fine"
    assert {"cfg_args", f"{FINE.as_posix()}/point_cloud.ply", f"{FINE.as_posix()}/deformation.pth",
            f"{FINE.as_posix()}/deformation_table.pth"} <= set(upstream["files"])


@pytest.mark.parametrize("how", ["folder", "iteration"])
def test_coarse_stage_is_not_deformed(scene_spec, how):
    importer = get_importer("4dgaussians")
    if how == "folder":
        imported = importer.load(FIXTURE / "model" / COARSE, _scene(scene_spec))
    else:
        imported = importer.load(FIXTURE / "model", _scene(scene_spec), iteration=3000)
    assert imported.iteration == 3000 and imported.settings["stage"] == "coarse"
    assert any("coarse-stage" in note for note in imported.notes)
    _assert_matches(_rebuilt(imported.expert, scene_spec), "expected_coarse.npz")


def _rebuilt(expert, scene_spec):
    """The expert rebuilt from its config's dict and state dict (what a saved run holds)."""
    config = FourDGSConfig.from_dict(expert.config.to_dict())
    again = FourDGaussians(config, SceneInit.from_scene(_scene(scene_spec)))
    again.load_state_dict(expert.state_dict())
    return again.eval()




def test_upstream_default_heads_off(tmp_path, scene_spec):
    model = copy_fixture("4dgaussians", tmp_path)
    edit_cfg_args(model / "cfg_args", no_do=True, no_dshs=True)  # upstream's ModelHiddenParams defaults
    imported = get_importer("4dgaussians").load(model, _scene(scene_spec))
    assert not imported.expert.config.deform_opacity and not imported.expert.config.deform_sh
    _assert_matches(_rebuilt(imported.expert, scene_spec), "expected_no_do_dshs.npz")


def _edit_state(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize("case", ["no_deformation", "missing_key", "setting"])
def test_bad_folders_are_refused_by_the_cli(tmp_path, scene_spec, case):
    spec, cache = scene_spec
    model, out = copy_fixture("4dgaussians", tmp_path), tmp_path / "out"
    if case == "no_deformation":
        (model / FINE / "deformation.pth").unlink()
        needles = ("deformation.pth", "missing")
    elif case == "missing_key":
        _edit_state(model / FINE / "deformation.pth", lambda s: s.pop("deformation_net.shs_deform.3.bias"))
        needles = ("deformation.pth", "missing deformation_net.shs_deform.3.bias")
    else:
        edit_cfg_args(model / "cfg_args", apply_rotation=True)
        needles = ("apply_rotation=True", "not supported")
    assert_one_line_error(run_import("4dgaussians", model, spec, out, cache), *needles)
    assert not out.exists()


@pytest.mark.parametrize("case", [
    "no_cfg", "extra_key", "table", "sh_degree", "static_mlp", "empty_voxel", "no_grid", "kplanes", "iteration",
    "mismatched_iteration", "plane_shape", "sh_head"])
def test_bad_folders_are_refused(tmp_path, scene_spec, case):
    model = copy_fixture("4dgaussians", tmp_path)
    iteration, folder = None, model
    if case == "no_cfg":
        (model / "cfg_args").unlink()
        needles = ("cfg_args", "missing")
    elif case == "extra_key":
        _edit_state(model / FINE / "deformation.pth", lambda s: s.__setitem__("deformation_net.static_mlp.1.weight",
                                                                             torch.zeros(16, 16)))
        needles = ("unexpected deformation_net.static_mlp.1.weight",)
    elif case == "table":
        torch.save(torch.ones(7, dtype=torch.bool), model / FINE / "deformation_table.pth")
        needles = ("deformation_table.pth", "[200]", "[7]")
    elif case == "sh_degree":
        edit_cfg_args(model / "cfg_args", sh_degree=2)
        needles = ("SH degree 3", "sh_degree=2")
    elif case in ("static_mlp", "empty_voxel", "no_grid"):
        edit_cfg_args(model / "cfg_args", **{case: True})
        needles = (f"{case}=True", "not supported")
    elif case == "kplanes":
        text = (model / "cfg_args").read_text().replace("'grid_dimensions': 2", "'grid_dimensions': 3")
        (model / "cfg_args").write_text(text)
        needles = ("kplanes_config", "not supported")
    elif case == "iteration":
        iteration = 7000
        needles = ("--iteration 7000", "iteration_14000, coarse_iteration_3000")
    elif case == "mismatched_iteration":
        iteration, folder = 14000, model / COARSE
        needles = ("--iteration 14000", "is iteration 3000")
    elif case == "plane_shape":  # a time plane of another time resolution than cfg_args'
        _edit_state(model / FINE / "deformation.pth",
                    lambda s: s.__setitem__("deformation_net.grid.grids.1.2", torch.zeros(1, 4, 12, 16)))
        needles = ("deformation_net.grid.grids.1.2", "[1, 4, 12, 16]", "[1, 4, 10, 16]")
    else:  # an SH head sized for another degree
        _edit_state(model / FINE / "deformation.pth",
                    lambda s: s.__setitem__("deformation_net.shs_deform.3.weight", torch.zeros(27, 16)))
        needles = ("shs_deform.3.weight", "[27, 16]", "[48, 16]")
    with pytest.raises(UpstreamError) as err:
        get_importer("4dgaussians").load(folder, _scene(scene_spec), iteration=iteration)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_time_follows_upstream_readers():
    frames = lambda times: [SimpleNamespace(camera=SimpleNamespace(time=t)) for t in times]  # noqa: E731
    n3v = SimpleNamespace(format="n3v", num_frames=150, train=[], test=[])
    assert _time_scale(n3v)[0] == 0.5  # dynerf: i / 300
    assert _time_scale(SimpleNamespace(format="n3v", num_frames=300, train=[], test=[]))[0] == 1.0
    dnerf = SimpleNamespace(format="dnerf", num_frames=3, train=frames([0.0, 0.4]), test=frames([0.8]))
    assert _time_scale(dnerf)[0] == 1.25  # json time / largest json time
    assert _time_scale(SimpleNamespace(format="panoptic", num_frames=20, train=[], test=[]))[0] == 1.0


def test_defaults_keep_the_expert_as_it_was():
    c = FourDGaussians.profile("paper")
    assert (c.deform_means, c.deform_scales, c.deform_quats, c.deform_opacity, c.deform_sh) == (True,) * 5
    assert c.sh_head_coeffs == 0 and c.time_scale == 1.0
