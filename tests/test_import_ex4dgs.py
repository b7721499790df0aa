"""``moegs-bench import ex4dgs``: a model saved by Ex4DGS's own code (juno181/Ex4DGS) becomes an
``ex4dgs`` expert whose Gaussians are upstream's at every frame.

The fixture (``scripts/upstream_fixtures/ex4dgs.py``) holds a model grown by upstream's progressive
training functions and saved by its ``save_ply``, checkpoint and ``cfg_args`` code, and what
upstream's ``gaussian_renderer.render`` hands its rasterizer at a few frames after ``render.py``'s
checkpoint restore (static rows, then dynamic rows)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from moegs_bench.data import open_scene
from moegs_bench.experts.ex4dgs import Ex4DGS, temporal_window, temporal_window_upstream
from moegs_bench.interop import get_importer
from moegs_bench.interop.base import UpstreamError
from moegs_bench.interop.ply import read_ply, write_ply
from test_cli import assert_one_line_error
from upstream_cases import FIXTURES, copy_fixture, edit_cfg_args, import_and_load, run_import, max_errors, write_scene

FIXTURE = FIXTURES / "ex4dgs"
META = json.loads((FIXTURE / "meta.json").read_text())
TOL = 1e-5
ITER = "point_cloud/iteration_3000"
CKPT = "chkpnt3000.pth"


def _write(root: Path, *, num_frames: int | None = None) -> str:
    s = META["scene"]
    return write_scene(root, num_frames or s["num_frames"], tuple(s["train_ids"]), tuple(s["test_ids"]))


@pytest.fixture(scope="module")
def scene_spec(tmp_path_factory) -> str:
    return _write(tmp_path_factory.mktemp("ex4dgs") / "scene")


@pytest.fixture(scope="module")
def scene(scene_spec, tmp_path_factory):
    return open_scene(scene_spec, cache_dir=tmp_path_factory.mktemp("cache"))[0]


def _max_errors(expert: Ex4DGS, num_frames: int) -> list[dict[str, float]]:
    expected = np.load(FIXTURE / "expected.npz")
    out = []
    for i, frame in enumerate(expected["frames"].tolist()):
        with torch.no_grad():
            out.append(max_errors(expert.gaussians_at(frame / num_frames), expected, i))
    return out


def test_imported_model_matches_upstream(tmp_path, scene_spec):
    out = tmp_path / "out"
    expert, scene = import_and_load("ex4dgs", Ex4DGS, FIXTURE / "model", scene_spec, out, tmp_path / "cache")
    c, model = expert.config, META["model"]
    assert (c.num_keyframes, c.drift_frames, c.window, c.interval, c.time_pad, expert.max_sh_degree) == \
        (model["keyframes"], model["duration"], "upstream", 5, 3, 3)
    assert expert.num_dynamic == model["dynamic"] and expert.num_gaussians == model["static"] + model["dynamic"]
    errors = _max_errors(expert, scene.num_frames)
    assert len(errors) == 4  # frames 0, 7, 13, 19
    for row in errors:
        assert max(row.values()) <= TOL, row
    upstream = json.loads((out / "upstream.json").read_text())
    assert set(upstream["files"]) == {"cfg_args", f"{ITER}/point_cloud.ply", f"{ITER}/dynamic_point_cloud.ply", CKPT}
    assert upstream["iteration"] == 3000 and upstream["settings"]["checkpoint"]["duration"] == model["duration"]


def test_our_defaults_differ_where_upstream_does(scene):
    """The fixture exercises every switch: our own window, drift and keyframe count do not match."""
    expert = get_importer("ex4dgs").load(FIXTURE / "model", scene).expert
    state = {k[6:]: v for k, v in expert.state_dict().items() if k.startswith("table.")}
    from moegs_bench.interop.base import build_expert

    for change, what in ((dict(window="flat_top"), "opacities"), (dict(drift_frames=0), "means")):
        other = build_expert(Ex4DGS, type(expert.config)(**{**vars(expert.config), **change}), scene, state)
        assert max(row[what] for row in _max_errors(other, scene.num_frames)) > 1e-2, change
    assert Ex4DGS.profiles["paper"].num_keyframes == 0 and Ex4DGS.profiles["paper"].window == "flat_top"
    default = Ex4DGS.from_scene(scene, "paper")
    assert default.num_keyframes != expert.num_keyframes and default.drift_frames == scene.num_frames


def test_upstream_window_formula():
    """``time_bigaussian``: flat strictly between the centres (either order), tails from the later one."""
    center = torch.tensor([[2.0, 4.0], [4.0, 2.0], [3.0, 3.0]])
    log_var = torch.log(torch.tensor([[1.0, 2.0]] * 3))
    w0, w1 = 1.0 + 0.1 / 2.36, 2.0 + 0.1 / 2.36
    got = torch.stack([temporal_window_upstream(t, center, log_var, 0.1) for t in (1.0, 3.0, 5.0)])  # [3 t, 3 rows]
    want = torch.tensor([[np.exp(-(9 / w0 ** 2)), np.exp(-(9 / w0 ** 2)), np.exp(-(4 / w0 ** 2))],
                         [1.0, 1.0, 1.0],
                         [np.exp(-(1 / w1 ** 2)), np.exp(-(1 / w1 ** 2)), np.exp(-(4 / w1 ** 2))]])
    assert torch.allclose(got, want.float(), atol=1e-6)
    ours = temporal_window(1.0, center[:1], log_var[:1], 0.1)  # ours: the tail before c0 from c0
    assert torch.allclose(ours, torch.tensor([np.exp(-(1 / w0 ** 2))]).float())




def _drop_property(model: Path, ply: str, name: str) -> None:
    path = model / ITER / ply
    props = read_ply(path)
    del props[name]
    write_ply(path, props)


def _edit_checkpoint(model: Path, index: int, value) -> None:
    path = model / CKPT
    args, it = torch.load(path, weights_only=False)
    args = list(args)
    args[index] = value(args[index])
    torch.save((tuple(args), it), path)


@pytest.mark.parametrize("case", ["no_dynamic_ply", "setting", "frames"])
def test_refused_imports_write_nothing(tmp_path, scene_spec, case):
    out, model = tmp_path / "out", copy_fixture("ex4dgs", tmp_path)
    spec = scene_spec
    if case == "no_dynamic_ply":
        (model / ITER / "dynamic_point_cloud.ply").unlink()
        needles = ("dynamic_point_cloud.ply", "missing")
    elif case == "setting":
        edit_cfg_args(model / "cfg_args", interp_type="pchip")
        needles = ("interp_type='pchip'", "not supported")
    else:
        spec, needles = _write(tmp_path / "scene", num_frames=24), ("24 frames", "20", "duration")
    assert_one_line_error(run_import("ex4dgs", model, spec, out, tmp_path / "cache"), *needles)
    assert not out.exists()


@pytest.mark.parametrize("case", ["keyframe_property", "window_property", "xyz_disp", "ckpt_shape", "ckpt_rows",
                                  "ckpt_entries", "ckpt_time_shift", "ckpt_interval", "ckpt_active_sh",
                                  "ckpt_duration", "rot_interp", "var_pad", "sh_degree", "no_cfg"])
def test_bad_upstream_folders_are_refused(tmp_path, scene, case):
    model = copy_fixture("ex4dgs", tmp_path)
    edits = {
        "keyframe_property": (lambda: _drop_property(model, "dynamic_point_cloud.ply", "motion_xyz_11_2"),
                              "motion_xyz_"),
        "window_property": (lambda: _drop_property(model, "dynamic_point_cloud.ply", "motion_opacity_v_1"),
                            "motion_opacity_v_"),
        "xyz_disp": (lambda: _drop_property(model, "point_cloud.ply", "xyz_disp_2"), "xyz_disp_"),
        "ckpt_shape": (lambda: _edit_checkpoint(model, 23, lambda t: t[:, :-1]), "_xyz_motion has shape"),
        "ckpt_rows": (lambda: _edit_checkpoint(model, 1, lambda t: t[:-1]), "_xyz has shape"),
        "ckpt_entries": (lambda: torch.save(((1, 2), 3000), model / CKPT), "40"),
        "ckpt_time_shift": (lambda: _edit_checkpoint(model, 21, lambda v: v + 1), "time_shift=9"),
        "ckpt_interval": (lambda: _edit_checkpoint(model, 20, lambda v: v * 2), "interval 10"),
        "ckpt_active_sh": (lambda: _edit_checkpoint(model, 0, lambda v: 1), "active_sh_degree=1"),
        "ckpt_duration": (lambda: _edit_checkpoint(model, 19, lambda v: v + 5), "duration 34"),
        "rot_interp": (lambda: edit_cfg_args(model / "cfg_args", rot_interp_type="lerp"), "rot_interp_type='lerp'"),
        "var_pad": (lambda: edit_cfg_args(model / "cfg_args", var_pad=5), "var_pad=5"),
        "sh_degree": (lambda: edit_cfg_args(model / "cfg_args", sh_degree=2), "sh_degree=2"),
        "no_cfg": (lambda: (model / "cfg_args").unlink(), "cfg_args"),
    }
    edit, needle = edits[case]
    edit()
    with pytest.raises(UpstreamError, match=re.escape(needle)) as err:
        get_importer("ex4dgs").load(model, scene)
    assert "\n" not in str(err.value)


def test_without_checkpoint_the_drift_uses_cfg_duration(tmp_path, scene):
    """render.py without chkpnt<N>.pth loads the PLYs with cfg_args' duration (the frame count)."""
    model = copy_fixture("ex4dgs", tmp_path)
    (model / CKPT).unlink()
    imported = get_importer("ex4dgs").load(model, scene)
    assert imported.expert.config.drift_frames == scene.num_frames
    assert any(CKPT in note for note in imported.notes) and len(imported.files) == 3
