"""``moegs-bench data synth`` / ``data info``: they work end to end and fail with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli import assert_one_line_error, cli

SMALL = ["--frames", "3", "--width", "32", "--height", "24", "--train-cameras", "3"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "windy"
    proc = cli("data", "synth", str(out), "--scene", "windy", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote synthetic scene windy" in proc.stdout and "panoptic" in proc.stdout
    return out


def test_synth_writes_a_loadable_panoptic_scene(synth):
    assert (synth / "train_meta.json").is_file() and (synth / "test_meta.json").is_file()
    proc = cli("data", "info", str(synth), "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["format"] == "panoptic" and facts["name"] == "windy"
    assert facts["cameras"] == 4 and facts["frames"] == 3
    assert facts["train images"] == 9 and facts["test images"] == 3
    assert facts["resolution"] == "32x24"


def test_info_with_format_prefix_frames_and_downscale(synth):
    proc = cli("data", "info", f"panoptic:{synth}", "--frames", "1:3", "--downscale", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["frames"] == 2 and facts["resolution used"] == "16x12" and facts["downscale"] == 2


@pytest.mark.parametrize(
    "args,needles",
    [
        (["data", "synth", "{tmp}/x", "--scene", "nope"], ["--scene", "kitchen"]),
        (["data", "synth", "{synth}"], ["not an empty folder"]),
        (["data", "info", "{tmp}/missing"], ["no such file"]),
        (["data", "info", "{tmp}"], ["no known layout"]),
        (["data", "info", "colmapx:{tmp}"], ["unknown format"]),
        (["data", "info", "{synth}", "--frames", "2"], ["--frames", "START:END"]),
        (["data", "info", "{synth}", "--frames", "2:9"], ["frame range 2:9"]),
        (["data", "info", "{synth}", "--test-cameras", "9"], ["--test-cameras", "no camera 9", "its cameras: 0, 1, 2, 3"]),
        (["data", "info", "{synth}", "--test-cameras", "0,1,2,3"], ["--test-cameras", "every camera"]),
        (["data", "info", "{synth}", "--test-cameras", "x"], ["--test-cameras", "camera ids"]),
        (["data", "info", "{synth}", "--frame-stride", "0"], ["--frame-stride"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(synth, tmp_path, args, needles):
    args = [a.format(tmp=tmp_path, synth=synth) for a in args]
    assert_one_line_error(cli(*args), *needles)
    assert not (tmp_path / "x").exists()


def test_info_with_stride_and_held_out_cameras(synth):
    proc = cli("data", "info", str(synth), "--frame-stride", "2", "--test-cameras", "1,2", "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["frames"] == 2 and facts["test cameras"] == [1, 2]  # frames 0 and 2 of 3
    assert facts["test images"] == 4 and facts["train images"] == 4


def test_a_capture_without_a_test_split_asks_for_test_cameras(synth, tmp_path):
    """No test_meta.json: data info says so; train-expert refuses in one line naming the option,
    before writing anything."""
    import shutil

    capture = tmp_path / "capture"
    shutil.copytree(synth, capture)
    meta = json.loads((capture / "train_meta.json").read_text())
    test = json.loads((capture / "test_meta.json").read_text())
    for key in ("k", "w2c", "fn", "cam_id"):  # every camera in train_meta.json, as a home-made capture has it
        meta[key] = [a + b for a, b in zip(meta[key], test[key])]
    (capture / "train_meta.json").write_text(json.dumps(meta))
    (capture / "test_meta.json").unlink()
    proc = cli("data", "info", str(capture), "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["test images"] == 0 and "--test-cameras" in facts["test cameras"]
    out = tmp_path / "run"
    proc = cli("train-expert", "-e", "static", "--scene", str(capture), "--out", str(out),
               "--cache", str(tmp_path / "cache"))
    assert_one_line_error(proc, "scene.test_cameras", "no test split", "--test-cameras", "its cameras: 0, 1, 2, 3")
    assert not out.exists()
