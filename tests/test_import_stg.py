"""``moegs-bench import stg``: Spacetime Gaussians lite segments (oppo-us-research/SpacetimeGaussians)
become one ``stg`` expert whose Gaussians are upstream's at every frame.

The fixture (``scripts/upstream_fixtures/stg.py``) holds two 10-frame segments of a 20-frame scene
saved by upstream's ``save_ply`` and what upstream's ``train_ours_lite`` renders at frames of both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moegs_bench.data import open_scene
from moegs_bench.experts.stg import SpacetimeGaussians
from moegs_bench.interop import get_importer
from moegs_bench.interop.base import UpstreamError
from moegs_bench.interop.ply import read_ply, write_ply
from moegs_bench.render.sh import sh_to_rgb
from test_cli import assert_one_line_error
from upstream_cases import FIXTURES, copy_fixture, edit_cfg_args, import_and_load, run_import, fixture_quantities, write_scene

FIXTURE = FIXTURES / "stg"
META = json.loads((FIXTURE / "meta.json").read_text())
EXPECTED = dict(np.load(FIXTURE / "expected.npz"))
TOL = 1e-5


def _scene(root: Path, *, num_frames: int | None = None, train_ids: tuple[int, ...] | None = None) -> str:
    s = META["scene"]
    return write_scene(root, num_frames or s["num_frames"], train_ids or tuple(s["train_ids"]), tuple(s["test_ids"]))


def _errors(expert, frame_index: int, rows: np.ndarray | None = None) -> dict[str, float]:
    """Max abs error of every quantity on the rows of the segment visible at the fixture's frame."""
    i, frame = frame_index, int(EXPECTED["frames"][frame_index])
    vis = EXPECTED["segment"] == EXPECTED["visible"][i]
    rows = np.arange(len(vis)) if rows is None else rows
    with torch.no_grad():
        g = expert.gaussians_at(frame / META["scene"]["num_frames"])
        rgb = sh_to_rgb(g.sh_degree, g.colors, torch.tensor([[0.0, 0.0, 1.0]]))  # degree 0: any direction
        got = fixture_quantities(g, colors=rgb)
    want_rows = vis[rows]
    errors = {k: float(np.abs(v.numpy()[want_rows] - EXPECTED[k][i][rows][want_rows]).max(initial=0.0))
              for k, v in got.items()}
    errors["hidden_opacity"] = float(g.opacities.numpy()[~want_rows].max(initial=0.0))
    return errors


def test_imported_segments_match_upstream(tmp_path):
    spec, out = _scene(tmp_path / "scene"), tmp_path / "out"
    expert, _ = import_and_load("stg", SpacetimeGaussians, FIXTURE / "model", spec, out, tmp_path / "cache")
    assert expert.config.time_windows and expert.max_sh_degree == 0
    assert expert.num_gaussians == sum(s["num_gaussians"] for s in META["segments"])
    assert set(EXPECTED["visible"]) == {0, 1}  # frames of both segments are compared
    for i in range(len(EXPECTED["frames"])):
        errors = _errors(expert, i)
        assert max(errors.values()) <= TOL, (int(EXPECTED["frames"][i]), errors)
    upstream = json.loads((out / "upstream.json").read_text())
    assert {"colmap_0/cfg_args", "colmap_10/point_cloud/iteration_25000/point_cloud.ply",
            "colmap_10/cameras.json"} <= set(upstream["files"])
    assert [s["start"] for s in upstream["settings"]["segments"]] == [0, 10]


def test_one_segment_shows_only_its_frames(tmp_path):
    spec = _scene(tmp_path / "scene")
    scene, _ = open_scene(spec, cache_dir=tmp_path / "cache")
    imported = get_importer("stg").load(FIXTURE / "model" / "colmap_10", scene)
    assert any("frames 0..9" in note for note in imported.notes)
    rows = np.flatnonzero(EXPECTED["segment"] == 1)
    for i, frame in enumerate(EXPECTED["frames"]):
        errors = _errors(imported.expert, i, rows)
        if frame >= 10:
            assert max(errors.values()) <= TOL, (int(frame), errors)
        else:  # before its segment nothing is shown
            assert errors["hidden_opacity"] == 0.0


def test_default_expert_has_no_windows(tmp_path):
    scene, _ = open_scene(_scene(tmp_path / "scene"), cache_dir=tmp_path / "cache")
    expert = SpacetimeGaussians.from_scene(scene, "tiny")
    assert not expert.config.time_windows and "time_window" not in expert.table
    assert not any("time_window" in k for k in expert.state_dict())




def _break(model: Path, case: str) -> tuple[str, ...]:
    """Spoil the copied fixture ``model`` as ``case`` says; the words its error must hold."""
    seg = model / "colmap_10"
    ply = seg / "point_cloud" / "iteration_25000" / "point_cloud.ply"
    if case == "no_ply":
        ply.unlink()
        return "point_cloud.ply", "missing"
    if case == "no_cfg":
        (seg / "cfg_args").unlink()
        return "cfg_args", "missing"
    if case == "ply_property":
        props = read_ply(ply)
        del props["omega_3"]
        write_ply(ply, props)
        return ("omega_0..omega_3",)
    if case == "full_model":
        edit_cfg_args(seg / "cfg_args", model="ours_full")
        return "model='ours_full'", "not supported", "full model"
    if case == "litess":
        edit_cfg_args(seg / "cfg_args", rdpip="train_ours_litess")
        return "rdpip='train_ours_litess'", "fisheye"
    assert case == "overlap"  # a segment starting at frame 5 overlaps colmap_0's frames 0..9
    shutil.copytree(seg, model / "colmap_5")
    shutil.rmtree(seg)
    edit_cfg_args(model / "colmap_5" / "cfg_args", source_path="data/fixture_scene/colmap_5")
    return "colmap_5", "overlap"


# Through the CLI (a one-line error, exit code 2, nothing written) for one case of each kind; the
# other cases through the importer (the CLI's handling of its error is the same).
@pytest.mark.parametrize("case", ["no_ply", "full_model"])
def test_the_cli_refuses_bad_upstream_folders(tmp_path, case):
    spec, out, model = _scene(tmp_path / "scene"), tmp_path / "out", copy_fixture("stg", tmp_path)
    needles = _break(model, case)
    assert_one_line_error(run_import("stg", model, spec, out, tmp_path / "cache"), *needles)
    assert not out.exists()


def test_the_cli_refuses_a_scene_that_disagrees(tmp_path):
    spec, out = _scene(tmp_path / "scene", num_frames=15), tmp_path / "out"  # colmap_10 holds frames 10..19
    assert_one_line_error(run_import("stg", FIXTURE / "model", spec, out, tmp_path / "cache"), "frames 10..19",
                          "15 frames")
    assert not out.exists()


def _refusal(model: Path, spec: str, tmp_path: Path) -> str:
    scene, _ = open_scene(spec, cache_dir=tmp_path / "cache")
    with pytest.raises(UpstreamError) as e:
        get_importer("stg").load(model, scene)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("case", ["no_cfg", "ply_property", "litess", "overlap"])
def test_bad_upstream_folders_are_refused(tmp_path, case):
    model = copy_fixture("stg", tmp_path)
    needles = _break(model, case)
    message = _refusal(model, _scene(tmp_path / "scene"), tmp_path)
    assert all(n in message for n in needles), message


def test_a_scene_with_other_cameras_is_refused(tmp_path):
    message = _refusal(FIXTURE / "model", _scene(tmp_path / "scene", train_ids=(1, 2)), tmp_path)
    assert "cameras.json" in message and "4 cameras" in message and "has 3" in message, message
