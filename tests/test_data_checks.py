"""What `data info --check` finds, and how the loaders word what is wrong with a dataset's files:
non-finite matrices, symbolic link loops, folders without permission, a downscale that leaves no
pixels, unreadable checkpoints. Datasets are written by each format's own rules (the loader tests'
writers); permission cases run the real CLI as a user the kernel refuses (``setpriv`` for root)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test_data_dnerf as dn
import test_data_n3v as nv
import test_data_panoptic as pa
import test_data_technicolor as tc
from test_cli import ENTRY, assert_one_line_error, cli

from moegs_bench.app.config import SceneConfig, open_configured_scene
from moegs_bench.cameras import Camera
from moegs_bench.config import ConfigError
from moegs_bench.data import DatasetError, load_scene
from moegs_bench.errors import InputError
from moegs_bench.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

NOT_DECODED = "not decoded (pass --check to decode every image)"


# ------------------------------------------------------------------------------ datasets
def write_panoptic(root: Path) -> Path:
    """The panoptic loader test's scene (20x12, cameras 0, 2, 5 train and 7 test, 3 timesteps), PNG."""
    for c in pa.TRAIN_IDS + pa.TEST_IDS:
        (root / "ims" / str(c)).mkdir(parents=True)
        for t in range(pa.T):
            Image.fromarray(pa.flat_image(c, t)).save(root / "ims" / str(c) / f"{t:06d}.png")
    pa.write_meta(root / "train_meta.json", pa.TRAIN_IDS, ext=".png")
    pa.write_meta(root / "test_meta.json", pa.TEST_IDS, ext=".png")
    return root


def write_dnerf(root: Path) -> Path:
    dn.write_split(root, "train", dn.TRAIN_TIMES, dn.known_cameras(dn.TRAIN_TIMES, 0.0), seed=0)
    dn.write_split(root, "test", dn.TEST_TIMES, dn.known_cameras(dn.TEST_TIMES, 0.35), seed=100)
    return root


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("checks")
    return {
        "panoptic": write_panoptic(top / "basketball"),
        "dnerf": write_dnerf(top / "lego"),
        "technicolor": tc.write_scene(top / "Toy"),
        "n3v": nv.write_scene(top / "toy_scene", nv.known_cameras()),
    }


@pytest.fixture
def copy(bases, tmp_path):
    def make(fmt: str) -> Path:
        return Path(shutil.copytree(bases[fmt], tmp_path / bases[fmt].name, symlinks=True))

    return make


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives: the loader's size check passes


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (to see nothing was written)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def info(*args: str, env_cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "MOEGS_BENCH_CACHE": str(env_cache)}
    return subprocess.run([sys.executable, "-c", ENTRY, "data", "info", *args], capture_output=True, text=True,
                          env=env, timeout=300)


# ------------------------------------------------------------------------------ data info --check
BAD_IMAGES = {
    # name: (format, file relative to the root, how to break it, what the line says)
    "truncated png (panoptic)": ("panoptic", "ims/2/000001.png", truncate, "not a readable image"),
    "empty file (panoptic)": ("panoptic", "ims/7/000002.png", lambda p: p.write_bytes(b""), "not an image file"),
    "wrong size (panoptic)": ("panoptic", "ims/0/000000.png",
                              lambda p: Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(p),
                              "40x24 pixels, but the metadata says w=20, h=12"),
    "truncated png (dnerf)": ("dnerf", "train/r_002.png", truncate, "not a readable image"),
    "truncated png (technicolor)": ("technicolor", "Toy_undist_00003_10.png", truncate, "unreadable PNG"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_check_decodes_every_image_and_names_the_bad_one(copy, tmp_path, case):
    fmt, rel, breaker, needle = BAD_IMAGES[case]
    root = copy(fmt)
    breaker(root / rel)
    before = tree(root)
    plain = info(str(root), env_cache=tmp_path / "cache")  # headers only: passes, and says so
    assert plain.returncode == 0, plain.stderr
    assert NOT_DECODED in plain.stdout
    checked = info(str(root), "--check", "--json", env_cache=tmp_path / "cache")
    line = assert_one_line_error(checked, str(root / rel), needle, "1 of")
    report = json.loads(checked.stdout)["images"]  # the facts and the list still come out
    assert report["decoded"] is True and len(report["bad"]) == 1 and str(root / rel) in report["bad"][0]["error"]
    assert report["count"] == sum(1 for p in root.rglob("*.png"))
    assert "Traceback" not in line and tree(root) == before and not (tmp_path / "cache").exists()  # nothing written


def test_check_lists_every_bad_image_in_the_table(copy, tmp_path):
    root = copy("panoptic")
    for rel in ("ims/0/000000.png", "ims/5/000002.png"):
        (root / rel).write_bytes(b"")
    proc = info(str(root), "--check", env_cache=tmp_path / "cache")
    assert_one_line_error(proc, "2 of 12 images failed --check", "ims/0/000000.png")
    assert "2 of 12 cannot be used" in proc.stdout
    for key in ("cam00/000000", "cam05/000002"):
        assert f"bad image {key}: " in proc.stdout


@pytest.mark.parametrize("fmt", ["panoptic", "dnerf", "technicolor", "n3v"])
def test_check_passes_a_good_dataset(bases, tmp_path, fmt):
    before = tree(bases[fmt])
    proc = info(str(bases[fmt]), "--check", "--json", "--no-progress", env_cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    images = json.loads(proc.stdout)["images"]
    n = len(load_scene(bases[fmt]).data.frames)
    assert images == {"decoded": True, "count": n, "bad": [], "note": f"all {n} decoded, each the size of its camera"}
    assert tree(bases[fmt]) == before and not (tmp_path / "cache").exists()


def test_plain_info_says_images_were_not_decoded(bases, tmp_path):
    proc = info(str(bases["panoptic"]), "--json", env_cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"] == {"decoded": False, "count": 12, "bad": [], "note": NOT_DECODED}


# ------------------------------------------------------------------------------ non-finite matrices
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_dnerf_non_finite_matrix_says_nan_or_inf(copy, value):
    root = copy("dnerf")
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"][0][3] = value
    path.write_text(json.dumps(meta))  # (Python's json writes NaN / Infinity, and reads them back)
    needle = r"transforms_train\.json: frames\[1\]: transform_matrix contains NaN or Inf"
    with pytest.raises(DatasetError, match=needle):
        load_scene(root)


def test_technicolor_value_beyond_float32_names_the_calibration(copy):
    root = copy("technicolor")
    calib = root / "cameras_parameters.txt"
    lines = calib.read_text().splitlines()
    cols = lines[4].split()
    cols[9] = "1e39"  # tx of camera 03: finite as float64, Inf as float32
    lines[4] = " ".join(cols)
    calib.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"cameras_parameters\.txt: camera 03: Camera\.viewmat: contains .*NaN/Inf"):
        load_scene(f"technicolor:{root}")


def test_n3v_focal_beyond_float32_names_poses_bounds(copy):
    root = copy("n3v")
    arr = np.load(root / "poses_bounds.npy")
    arr[2, 14] = 1e39  # focal of camera 2
    np.save(root / "poses_bounds.npy", arr)
    with pytest.raises(DatasetError, match=r"poses_bounds\.npy: row 2 \(cam02\): Camera\.K: contains .*NaN/Inf"):
        load_scene(f"n3v:{root}")


def test_camera_nan_far_and_radius_say_nan():
    base = Camera.look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0), width=8, height=6)
    with pytest.raises(InputError, match="Camera.far: got NaN"):
        replace(base, far=math.nan)
    with pytest.raises(InputError, match="radius=nan"):
        Camera.orbit(3, radius=math.nan, width=8, height=6)


# ------------------------------------------------------------------------------ downscale
def test_downscale_that_leaves_no_pixels_names_the_option(bases, tmp_path):
    line = assert_one_line_error(info(str(bases["dnerf"]), "--downscale", "64", env_cache=tmp_path / "c"),
                                 "--downscale 64", "16x12 pixels", "the largest usable value is 12")
    assert "Camera.width" not in line
    assert info(str(bases["dnerf"]), "--downscale", "12", env_cache=tmp_path / "c").returncode == 0  # the largest


def test_train_expert_downscale_refused_before_anything_is_written(bases, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train-expert", "--expert", "4dgs", "--out", str(out), "--scene", str(bases["panoptic"]), "--cache",
            str(cache)]
    assert_one_line_error(cli(*args, "--downscale", "13"), "--downscale (scene.downscale): 13",
                          "the largest usable value is 12")
    assert not out.exists() and not cache.exists()


def test_scene_downscale_key_is_checked_with_the_cameras(bases, tmp_path):
    with pytest.raises(ConfigError, match=r"scene\.downscale: 20 leaves camera 0 \(20x12 pixels\) with 1x0 pixels; "
                                          r"the largest usable value is 12"):
        open_configured_scene(SceneConfig(spec=str(bases["panoptic"]), downscale=20), tmp_path / "cache")
    opened = open_configured_scene(SceneConfig(spec=str(bases["panoptic"]), downscale=12), tmp_path / "cache")
    direct = load_scene(bases["panoptic"], downscale=12)  # the same cameras as loading at that downscale
    assert opened.scene.resolution == direct.resolution == (1, 1)
    for a, b in zip(opened.scene.train + opened.scene.test, direct.train + direct.test):
        assert a.key == b.key and torch.equal(a.camera.K, b.camera.K) and a.camera.time == b.camera.time


# ------------------------------------------------------------------------------ symbolic link loops
def _loop(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    os.symlink(path.name, path)  # a link to itself


LOOPS = {
    "dnerf image": ("dnerf", "train/r_001.png"),
    "dnerf transforms": ("dnerf", "transforms_test.json"),
    "panoptic image": ("panoptic", "ims/0/000001.png"),
    "panoptic image folder": ("panoptic", "ims/5"),
    "panoptic meta": ("panoptic", "test_meta.json"),
    "panoptic optional scene.json": ("panoptic", "scene.json"),
    "technicolor image": ("technicolor", "Toy_undist_00002_03.png"),
    "technicolor calibration": ("technicolor", "cameras_parameters.txt"),
    "n3v video": ("n3v", "cam01.mp4"),
    "n3v poses": ("n3v", "poses_bounds.npy"),
    "n3v optional points": ("n3v", "points3D.ply"),
}


@pytest.mark.parametrize("case", list(LOOPS))
def test_symlink_loop_is_called_a_loop(copy, case):
    fmt, rel = LOOPS[case]
    root = copy(fmt)
    _loop(root / rel)
    with pytest.raises(DatasetError) as info_:
        load_scene(root)  # the format is detected: a loop in its key file is no "unknown layout"
    msg = str(info_.value)
    assert "symbolic link loop" in msg and str(root / rel) in msg and "missing" not in msg, msg


def test_dataset_root_loop_is_called_a_loop(tmp_path):
    root = tmp_path / "scene"
    os.symlink("scene", root)
    for spec in (str(root), f"dnerf:{root}"):
        assert_one_line_error(info(spec, env_cache=tmp_path / "c"), str(root), "symbolic link loop")


# ------------------------------------------------------------------------------ permissions
SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def _as_user(args: list[str]) -> list[str]:
    """``args`` run so that file permission bits apply (root without the capability to ignore them)."""
    return SETPRIV + args if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def denying(tmp_path_factory) -> None:
    """Skip unless chmod 000 really denies a read for the processes these tests start."""
    probe = tmp_path_factory.mktemp("perm") / "secret"
    probe.write_text("x")
    probe.chmod(0)
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: chmod 000 does not deny")
    proc = subprocess.run(_as_user(["cat", str(probe)]), capture_output=True)
    if proc.returncode == 0:
        pytest.skip("chmod 000 does not deny a read here (a capability or file system ignores permission bits)")


PERMISSIONS = {
    # name: (spec prefix, format, path to chmod, mode, extra args, what the line must say)
    "panoptic image folder": ("", "panoptic", "ims/0", 0o000, [], ["ims/0 may not be searched"]),
    "dnerf image folder": ("", "dnerf", "train", 0o000, [], ["train may not be searched"]),
    "technicolor root not listable": ("technicolor:", "technicolor", ".", 0o300, [], ["cannot list the folder",
                                                                                    "permission denied"]),
    "n3v root not listable": ("n3v:", "n3v", ".", 0o300, [], ["cannot list the folder", "permission denied"]),
    "panoptic meta": ("", "panoptic", "test_meta.json", 0o000, [], ["test_meta.json"]),
    "panoptic image (--check)": ("", "panoptic", "ims/2/000001.png", 0o000, ["--check"], ["ims/2/000001.png",
                                                                                          "permission denied"]),
    "technicolor image": ("", "technicolor", "Toy_undist_00002_03.png", 0o000, [], ["permission denied"]),
    "n3v video": ("", "n3v", "cam02.mp4", 0o000, [], ["cam02.mp4", "permission denied"]),
}


@pytest.mark.parametrize("case", list(PERMISSIONS))
def test_unreadable_folder_or_file_is_one_line_naming_it(denying, copy, tmp_path, case):
    prefix, fmt, rel, mode, extra, needles = PERMISSIONS[case]
    root = copy(fmt)
    target = root / rel
    target.chmod(mode)
    try:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "MOEGS_BENCH_CACHE": str(tmp_path / "cache")}
        proc = subprocess.run(_as_user([sys.executable, "-c", ENTRY, "data", "info", prefix + str(root), *extra]),
                              capture_output=True, text=True, env=env, timeout=300)
    finally:
        target.chmod(0o755)
    line = assert_one_line_error(proc, *needles)
    assert "Errno" not in line and "PermissionError" not in line and "no known layout" not in line, line


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    path = tmp_path / "good.pt"
    save_checkpoint(path, Checkpoint("expert", {"expert": "x", "state_version": 1}, {}, 3, False, 1.0,
                                     {"model": {"w": torch.ones(2)}}))
    return path


def _whole(err: CheckpointError, path: Path) -> str:
    msg = str(err)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and "weights_only" not in msg, msg
    assert msg.endswith(")") and msg.count("(") == msg.count(")") and "Errno" not in msg, msg
    return msg


def test_checkpoint_that_is_no_file_says_what_it_is(tmp_path):
    loop, folder, dangling = tmp_path / "loop.pt", tmp_path / "folder.pt", tmp_path / "dangling.pt"
    os.symlink("loop.pt", loop)
    folder.mkdir()
    os.symlink("gone.pt", dangling)
    for path, needle in ((loop, "symbolic link loop"), (folder, "a folder"), (dangling, "broken symbolic link")):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        msg = _whole(err.value, path)
        assert needle in msg and "no such" not in msg, msg


def test_checkpoint_text_file_and_foreign_dict_are_whole_sentences(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello world\n")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(text)
    assert _whole(err.value, text).endswith("(not a file written by torch.save)")
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    with pytest.raises(CheckpointError, match="no 'format' entry, expected 'moegs-bench/checkpoint'"):
        load_checkpoint(foreign)


def test_unreadable_checkpoint_says_permission_denied(denying, good_checkpoint):
    good_checkpoint.chmod(0)
    code = ("import sys\nfrom moegs_bench.training.checkpoint import load_checkpoint, CheckpointError\n"
            f"try:\n    load_checkpoint({str(good_checkpoint)!r})\nexcept CheckpointError as e:\n    print(e)\n"
            "else:\n    sys.exit('loaded')\n")
    proc = subprocess.run(_as_user([sys.executable, "-c", code]), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{good_checkpoint}: not a readable checkpoint (permission denied)"
