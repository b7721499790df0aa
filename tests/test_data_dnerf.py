"""D-NeRF loader: a tiny dataset written by the format's rules from known cameras."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from data_cases import assert_same_projection
from PIL import Image

from moegs_bench.cameras import Camera
from moegs_bench.data import dnerf, load_scene
from moegs_bench.data.scene import DatasetError

W, H = 16, 12
FOV_X = 50.0
# (split, time) of every frame in file order; train and test times interleave like D-NeRF's
TRAIN_TIMES = [0.0, 0.25, 0.5, 0.75, 1.0]
TEST_TIMES = [0.125, 0.625]
# distinct times, sorted: 0, .125, .25, .5, .625, .75, 1 -> ranks
RANK = {t: i for i, t in enumerate(sorted(set(TRAIN_TIMES + TEST_TIMES)))}


def known_cameras(times: list[float], offset: float) -> list[Camera]:
    """Cameras around the origin in a z-up world (like D-NeRF's Blender scenes)."""
    cams = []
    for j, t in enumerate(times):
        a = 0.7 * j + offset
        eye = (4.0 * math.cos(a), 4.0 * math.sin(a), 1.0 + 0.3 * j)
        cams.append(Camera.look_at(eye, (0.1, -0.05, 0.2), up=(0.0, 0.0, 1.0), fov_x_deg=FOV_X, width=W, height=H, time=t))
    return cams


def blender_c2w(cam: Camera) -> list[list[float]]:
    """OpenCV world-to-camera -> Blender/OpenGL camera-to-world (camera y up, z backwards)."""
    V = cam.viewmat.double()
    R, t = V[:3, :3], V[:3, 3]
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    c2w[:3, 1] *= -1  # camera y: down -> up
    c2w[:3, 2] *= -1  # camera z: forward -> backwards
    return c2w.tolist()


def rgba_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(H, W, 4), dtype=np.uint8)
    img[0, :, 3] = 0  # fully transparent row
    img[1, :, 3] = 255  # opaque row
    return img


def write_split(root: Path, split: str, times: list[float], cams: list[Camera], seed: int) -> None:
    frames = []
    for j, (t, cam) in enumerate(zip(times, cams)):
        rel = f"./{split}/r_{j:03d}"
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba_image(seed + j), "RGBA").save(root / f"{rel}.png")
        frames.append({"file_path": rel, "rotation": 0.0314, "time": t, "transform_matrix": blender_c2w(cam)})
    (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": math.radians(FOV_X), "frames": frames}))


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    root = tmp_path / "lego"
    train, test = known_cameras(TRAIN_TIMES, 0.0), known_cameras(TEST_TIMES, 0.35)
    write_split(root, "train", TRAIN_TIMES, train, seed=0)
    write_split(root, "test", TEST_TIMES, test, seed=100)
    write_split(root, "val", TEST_TIMES, test, seed=200)
    return {"root": root, "train": train, "test": test}


def test_detect(dataset, tmp_path):
    assert dnerf.detect(dataset["root"])
    assert not dnerf.detect(tmp_path)


def test_cameras_times_and_split(dataset):
    data = dnerf.load(dataset["root"])
    assert data.format == "dnerf" and data.name == "lego"
    assert data.background == (1.0, 1.0, 1.0) and data.default_downscale == 2
    assert data.num_frames == len(RANK) and data.points is None
    assert data.meta["val_frames_ignored"] == len(TEST_TIMES)
    by_key = {f.key: f for f in data.frames}
    assert len(by_key) == len(TRAIN_TIMES) + len(TEST_TIMES)
    for split, times, cams in (("train", TRAIN_TIMES, dataset["train"]), ("test", TEST_TIMES, dataset["test"])):
        for j, (t, known) in enumerate(zip(times, cams)):
            f = by_key[f"{split}/r_{j:03d}"]
            assert_same_projection(f.camera, known)
            assert f.camera.time == t  # the json's own time
            assert f.frame == RANK[t]  # rank of the distinct times
            assert (f.camera.camera_id in data.test_camera_ids) == (split == "test")
    assert data.test_camera_ids == {dnerf.TEST_ID_OFFSET + j for j in range(len(TEST_TIMES))}
    assert {f.camera.camera_id for f in data.frames if f.key.startswith("train/")} == set(range(len(TRAIN_TIMES)))


def test_images_composited_over_white(dataset):
    data = dnerf.load(dataset["root"])
    frame = next(f for f in data.frames if f.key == "test/r_001")
    img = np.asarray(data.read_image(frame), dtype=np.float64)
    rgba = rgba_image(100 + 1).astype(np.float64) / 255.0
    expected = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    assert img.shape == (H, W, 3)
    np.testing.assert_allclose(img, expected, atol=1e-6)
    np.testing.assert_allclose(img[0], 1.0)  # transparent -> white


def test_frame_range_and_downscale(dataset):
    scene = load_scene(f"dnerf:{dataset['root']}", downscale=2, frame_range=(2, 5))
    # ranks 2, 3, 4 -> times .25, .5 (train) and .625 (test)
    assert scene.num_frames == 3
    assert sorted(f.camera.time for f in scene.train) == [0.25, 0.5]
    assert [f.camera.time for f in scene.test] == [0.625]
    assert sorted(f.frame for f in scene.train + scene.test) == [0, 1, 2]
    assert scene.resolution == (W // 2, H // 2)
    known = dataset["train"][TRAIN_TIMES.index(0.25)]
    f = next(f for f in scene.train if f.camera.time == 0.25)
    assert torch.allclose(f.camera.K, known.K * torch.tensor([[0.5], [0.5], [1.0]]), atol=1e-5)
    img = scene.image(scene.test[0])
    rgba = rgba_image(100 + 1).astype(np.float64) / 255.0
    full = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    expected = full.reshape(H // 2, 2, W // 2, 2, 3).mean(axis=(1, 3))
    assert img.shape == (H // 2, W // 2, 3)
    np.testing.assert_allclose(img.numpy(), expected, atol=1.01 / 255)
    # default downscale is the protocol's (2)
    assert load_scene(f"dnerf:{dataset['root']}").downscale == 2
    with pytest.raises(DatasetError, match="frame range"):
        dnerf.load(dataset["root"], frame_range=(3, 99))


# ------------------------------------------------------------------------------ bad input
def edit_json(root: Path, split: str, change) -> Path:
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


def test_missing_json(dataset):
    (dataset["root"] / "transforms_test.json").unlink()
    with pytest.raises(DatasetError, match="transforms_test.json: missing"):
        dnerf.load(dataset["root"])


def test_syntax_error(dataset):
    path = dataset["root"] / "transforms_train.json"
    path.write_text(path.read_text()[:-5])
    with pytest.raises(DatasetError, match=r"transforms_train.json: not valid JSON"):
        dnerf.load(dataset["root"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("camera_angle_x"), "missing key 'camera_angle_x'"),
        (lambda m: m.pop("frames"), "missing key 'frames'"),
        (lambda m: m["frames"][1].pop("time"), r"frames\[1\]: missing key 'time'"),
        (lambda m: m["frames"][0].pop("transform_matrix"), r"frames\[0\]: missing key 'transform_matrix'"),
        (lambda m: m["frames"][2].update(transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), r"4x4.*\(3, 4\)"),
        (lambda m: m["frames"][2].update(transform_matrix=[[1, 0], [0, 1, 0, 0]]), "not a matrix"),
        (lambda m: m["frames"][0].update(time=1.5), r"time must be a number in \[0, 1\]"),
        (lambda m: m.update(camera_angle_x="wide"), "camera_angle_x"),
        (lambda m: m["frames"][0].update(transform_matrix=(2 * np.eye(4)).tolist()), "orthonormal"),
    ],
)
def test_malformed_json(dataset, change, message):
    path = edit_json(dataset["root"], "train", change)
    with pytest.raises(DatasetError, match=message) as info:
        dnerf.load(dataset["root"])
    assert str(path) in str(info.value)


def test_missing_image(dataset):
    path = dataset["root"] / "train" / "r_003.png"
    path.unlink()
    with pytest.raises(DatasetError, match="image missing") as info:
        dnerf.load(dataset["root"])
    assert str(path) in str(info.value)


def test_unreadable_image(dataset):
    path = dataset["root"] / "test" / "r_000.png"
    path.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match="not a readable image") as info:
        dnerf.load(dataset["root"])
    assert str(path) in str(info.value)


def test_unreadable_image_after_load(dataset):
    data = dnerf.load(dataset["root"])
    path = dataset["root"] / "train" / "r_000.png"
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixels cut off
    with pytest.raises(DatasetError) as info:
        data.read_image(next(f for f in data.frames if f.key == "train/r_000"))
    assert str(path) in str(info.value)
