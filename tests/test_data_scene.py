"""The shared Scene abstraction: split, downscale, image cache, fallback points, format dispatch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moegs_bench.cameras import Camera
from moegs_bench.data import DatasetError, Frame, Scene, SceneData, detect_format, load_scene
from moegs_bench.data.scene import normalised_time, select_frames


def _scene_data(tmp_path: Path, n_cams=4, n_frames=3, w=8, h=6, calls=None) -> SceneData:
    frames = []
    for c in range(n_cams):
        ang = math.radians(-30 + 20 * c)
        eye = (3 * math.sin(ang), -0.5, -3 * math.cos(ang))
        for i in range(n_frames):
            cam = Camera.look_at(eye, (0.0, 0.0, 0.0), width=w, height=h, time=normalised_time(i, n_frames), camera_id=c)
            frames.append(Frame(cam, i, f"cam{c:02d}/{i:06d}"))

    def read(frame: Frame) -> np.ndarray:
        if calls is not None:
            calls.append(frame.key)
        c, i = frame.camera.camera_id, frame.frame
        v, u = np.mgrid[0:h, 0:w]
        return ((u * 7 + v * 13 + c * 31 + i * 3) % 256).astype(np.uint8)[..., None].repeat(3, 2)

    return SceneData("fake", tmp_path, frames, {0}, read, n_frames, name="fake")


def test_split_follows_the_test_cameras(tmp_path):
    scene = Scene(_scene_data(tmp_path))
    assert {f.camera.camera_id for f in scene.test} == {0}
    assert {f.camera.camera_id for f in scene.train} == {1, 2, 3}
    assert len(scene.train) == 9 and len(scene.test) == 3
    assert scene.camera_ids == [0, 1, 2, 3] and scene.num_frames == 3


def test_downscale_scales_intrinsics_and_box_filters_images(tmp_path):
    data = _scene_data(tmp_path)
    full, half = Scene(data), Scene(data, downscale=2)
    f1, f2 = full.train[0], half.train[0]
    assert (f2.camera.width, f2.camera.height) == (4, 3)
    assert torch.allclose(f2.camera.K[:2], f1.camera.K[:2] / 2)
    # a world point lands on the same place in units of the image size
    p = torch.tensor([[0.1, 0.2, 0.3]])
    uv1, _ = f1.camera.project(p)
    uv2, _ = f2.camera.project(p)
    assert torch.allclose(uv2, uv1 / 2, atol=1e-5)
    img = half.image(f2)
    src = data.read_image(data.frames[next(i for i, f in enumerate(data.frames) if f.key == f2.key)]).astype(float)
    expect = np.round(src.reshape(3, 2, 4, 2, 3).mean(axis=(1, 3))) / 255.0
    assert img.shape == (3, 4, 3) and np.allclose(img.numpy(), expect, atol=1e-6)


def test_images_are_decoded_once_and_cached_atomically(tmp_path):
    calls: list[str] = []
    data = _scene_data(tmp_path / "ds", calls=calls)
    cache = tmp_path / "cache"
    scene = Scene(data, cache_dir=cache)
    a = scene.image(scene.train[0])
    b = scene.image(scene.train[0])
    assert calls == [scene.train[0].key] and torch.equal(a, b)
    again = Scene(_scene_data(tmp_path / "ds", calls=calls), cache_dir=cache)  # a new process would see the file
    assert torch.equal(again.image(again.train[0]), a) and len(calls) == 1
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".npy" and not files[0].name.startswith(".")


def test_image_of_the_wrong_size_is_an_error(tmp_path):
    data = _scene_data(tmp_path)
    data.read_image = lambda frame: np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(DatasetError, match="5x5"):
        Scene(data).image(Scene(data).train[0])


def test_points_without_a_point_cloud_lie_in_front_of_a_training_camera(tmp_path):
    scene = Scene(_scene_data(tmp_path))
    assert "training rays" in scene.points.source
    seen = torch.zeros(scene.points.xyz.shape[0], dtype=torch.bool)
    for f in scene.train:
        _, depth = f.camera.project(scene.points.xyz)
        seen |= depth > 0
    assert bool(seen.all())
    lo, hi = scene.bounds
    assert torch.all(lo < hi)


def test_duplicate_keys_and_bad_downscale(tmp_path):
    data = _scene_data(tmp_path)
    with pytest.raises(ValueError, match="downscale"):
        Scene(data, downscale=0)
    data.frames.append(data.frames[0])
    with pytest.raises(DatasetError, match="key"):
        Scene(data)


def test_select_frames(tmp_path):
    assert select_frames(10, None, tmp_path) == range(10)
    assert select_frames(10, (2, 5), tmp_path) == range(2, 5)
    for bad in [(5, 5), (-1, 3), (0, 11), (7, 3)]:
        with pytest.raises(DatasetError, match="frame range"):
            select_frames(10, bad, tmp_path)


def test_format_dispatch_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such"):
        load_scene(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown format"):
        load_scene(f"colmapx:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no known layout"):
        detect_format(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="a file"):
        detect_format(tmp_path / "file.txt")
