"""``moegs-bench import e-d3dgs``: a model saved by E-D3DGS's own code (JeongminB/E-D3DGS) becomes an
``e-d3dgs`` expert whose Gaussians are upstream's, seen from every camera.

The fixture (``scripts/upstream_fixtures/e-d3dgs.py``) holds a model saved by upstream's
``Scene.save`` and what upstream's ``gaussian_renderer.render`` hands its rasterizer at
(frame, camera) pairs: train cameras at their learned time offset, the test camera at the mean
one; ``switches/`` holds a second model with upstream's other switches flipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moegs_bench.data import open_scene
from moegs_bench.experts.ed3dgs import ED3DGS
from moegs_bench.interop import get_importer
from moegs_bench.interop.base import UpstreamError
from moegs_bench.interop.ply import read_ply, write_ply
from test_cli import assert_one_line_error
from upstream_cases import FIXTURES, copy_fixture, edit_cfg_args, import_and_load, run_import, max_errors, write_scene

FIXTURE = FIXTURES / "e-d3dgs"
META = json.loads((FIXTURE / "meta.json").read_text())
TOL = 1e-5
ITER = "point_cloud/iteration_700"


def _write(root: Path, *, num_frames: int | None = None, train_ids: tuple[int, ...] | None = None) -> str:
    s = META["scene"]
    return write_scene(root, num_frames or s["num_frames"], train_ids or tuple(s["train_ids"]), tuple(s["test_ids"]))


@pytest.fixture(scope="module")
def scene_spec(tmp_path_factory) -> str:
    return _write(tmp_path_factory.mktemp("ed3dgs") / "scene")


def _max_errors(expert: ED3DGS, scene, expected: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per fixture row: the max abs error of every quantity, the row's frame seen from its camera
    (for the test camera, also at the bare time: upstream's cam_no=None)."""
    views = {(f.frame, f.camera.camera_id): f.camera for f in scene.train + scene.test}
    test_ids = set(META["scene"]["test_ids"])
    out = []
    for i, (frame, cam) in enumerate(zip(expected["frames"].tolist(), expected["cameras"].tolist())):
        whens = [views[(frame, cam)]] + ([frame / scene.num_frames] if cam in test_ids else [])
        for when in whens:
            with torch.no_grad():
                out.append(max_errors(expert.gaussians_at(when), expected, i))
    return out


def test_imported_model_matches_upstream(tmp_path, scene_spec):
    out = tmp_path / "out"
    expert, scene = import_and_load("e-d3dgs", ED3DGS, FIXTURE / "model", scene_spec, out, tmp_path / "cache")
    c = expert.config
    assert (c.eval_step, c.temporal_padding, c.bare_time_offset, expert.max_sh_degree) == (700, "reflection", True, 3)
    expected = dict(np.load(FIXTURE / "expected.npz"))
    errors = _max_errors(expert, scene, expected)
    assert len(errors) == len(expected["frames"]) + 3  # + the test camera's rows at a bare time
    for row in errors:
        assert max(row.values()) <= TOL, row
    upstream = json.loads((out / "upstream.json").read_text())
    assert set(upstream["files"]) == {"cfg_args", f"{ITER}/point_cloud.ply", f"{ITER}/deformation.pth"}
    assert upstream["iteration"] == 700 and upstream["settings"]["loader"] == "technicolor"


def test_flipped_switches_match_upstream(tmp_path, scene_spec):
    scene, _ = open_scene(scene_spec, cache_dir=tmp_path / "cache")
    imported = get_importer("e-d3dgs").load(FIXTURE / "switches" / "model", scene)
    c = imported.expert.config
    assert not (c.anneal or c.c2f or c.coarse_fixed_rows or c.deform_rotations or c.deform_opacity or c.deform_colors)
    assert any("no time offsets" in note for note in imported.notes)
    for row in _max_errors(imported.expert, scene, dict(np.load(FIXTURE / "switches" / "expected.npz"))):
        assert max(row.values()) <= TOL, row


def test_default_config_keeps_our_behaviour():
    c = ED3DGS.profiles["paper"]
    assert (c.temporal_padding, c.eval_step, c.bare_time_offset, c.anneal, c.coarse_fixed_rows, c.c2f) == \
        ("clamp", None, False, True, True, True)
    assert c.deform_scales and c.deform_rotations and c.deform_opacity and c.deform_colors




def _edit_state(model: Path, edit) -> None:
    path = model / ITER / "deformation.pth"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize("case", ["no_deformation", "setting", "frames"])
def test_refused_imports_write_nothing(tmp_path, scene_spec, case):
    out, model = tmp_path / "out", copy_fixture("e-d3dgs", tmp_path)
    spec = scene_spec
    if case == "no_deformation":
        (model / ITER / "deformation.pth").unlink()
        needles = ("deformation.pth", "missing")
    elif case == "setting":
        edit_cfg_args(model / "cfg_args", no_fine_deform=True)
        needles = ("no_fine_deform=True", "not supported")
    else:  # technicolor's time is frame / 50
        spec, needles = _write(tmp_path / "scene", num_frames=40), ("40 frames", "technicolor", "frame / 50")
    assert_one_line_error(run_import("e-d3dgs", model, spec, out, tmp_path / "cache"), *needles)
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing_key", "extra_key", "shape", "loader", "sh_degree", "embedding",
                                  "cameras", "camera_number"])
def test_bad_upstream_folders_are_refused(tmp_path, scene_spec, case):
    model, spec = copy_fixture("e-d3dgs", tmp_path), scene_spec
    if case == "missing_key":
        _edit_state(model, lambda s: s.pop("rgb_deform_f.3.bias"))
        needles = ("deformation.pth", "missing rgb_deform_f.3.bias")
    elif case == "extra_key":
        _edit_state(model, lambda s: s.update({"timenet.0.weight": torch.zeros(2, 2)}))
        needles = ("unexpected timenet.0.weight",)
    elif case == "shape":
        edit_cfg_args(model / "cfg_args", max_embeddings=30)
        needles = ("weight has shape [25, 12]", "[30, 12]")
    elif case == "loader":
        edit_cfg_args(model / "cfg_args", loader="nerfies")
        needles = ("loader='nerfies'", "not supported")
    elif case == "sh_degree":
        edit_cfg_args(model / "cfg_args", sh_degree=2)
        needles = ("sh_degree=2", "degree 3")
    elif case == "embedding":
        ply = model / ITER / "point_cloud.ply"
        props = read_ply(ply)
        del props["embedding_5"]
        write_ply(ply, props)
        needles = ("embedding_0..embedding_5",)
    elif case == "cameras":  # upstream learned offsets for cameras 1, 4, 7, 12
        spec, needles = _write(tmp_path / "scene", train_ids=(1, 4, 7)), ("cameras 1, 4, 7, 12", "1, 4, 7;")
    else:
        spec, needles = _write(tmp_path / "scene", train_ids=(1, 4, 7, 31)), ("camera 31", "0..29")
    scene, _ = open_scene(spec, cache_dir=tmp_path / "cache")
    with pytest.raises(UpstreamError) as err:
        get_importer("e-d3dgs").load(model, scene)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message
