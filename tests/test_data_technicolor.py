"""Technicolor loader: tiny 4x4-rig scenes written by the format's own rules from known cameras.

cameras_parameters.txt is written here from OpenCV world-to-camera matrices with an independent
rotation -> quaternion conversion: a header line, then per camera ``f cu cv ar sk qw qx qy qz tx
ty tz`` (fx = f, fy = ar * f). Images are PNG, so decoded pixels must equal the written ones.
"""

from __future__ import annotations

import math
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from data_cases import POINTS, close, project
from PIL import Image

from moegs_bench.cameras import Camera
from moegs_bench.data import DatasetError, load_scene
from moegs_bench.data import technicolor

W, H = 24, 16
FRAMES = range(1, 6)  # frame numbers in the file names (Technicolor numbers most scenes from 1)
N_CAMS = 16


def known_cameras(width: int = W, height: int = H) -> list[Camera]:
    """A 4x4 rig at z = -3 looking at the origin; non-square pixels, off-centre principal point."""
    cams = []
    for i in range(N_CAMS):
        row, col = divmod(i, 4)
        eye = (-0.45 + 0.3 * col, -0.45 + 0.3 * row, -3.0)
        c = Camera.look_at(eye, (0.0, 0.0, 0.0), width=width, height=height, camera_id=i)
        f = 20.0 + 0.5 * i
        K = torch.tensor([[f, 0.0, width / 2 + 0.7], [0.0, 1.05 * f, height / 2 - 0.4], [0.0, 0.0, 1.0]])
        cams.append(replace(c, K=K))
    return cams


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd's method)."""
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    return np.array(q)


def calibration_text(cams: list[Camera], *, extra_columns: str = "") -> str:
    lines = ["f cu cv ar sk qw qx qy qz tx ty tz"]
    for i, c in enumerate(cams):
        K, V = c.K.double().numpy(), c.viewmat.double().numpy()
        q = rotmat_to_quat(V[:3, :3]) * (-1 if i % 3 == 0 else 1)  # q and -q are the same rotation
        f, ar = K[0, 0], K[1, 1] / K[0, 0]
        vals = [f, K[0, 2], K[1, 2], ar, 0.0, *q, *V[:3, 3]]
        text = " ".join(f"{v:.12g}" for v in vals[:5]) + extra_columns + " " + " ".join(f"{v:.12g}" for v in vals[5:])
        lines.append(text)
    return "\n".join(lines) + "\n"


def pixels(cam: int, frame: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(100 * cam + frame).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_scene(root: Path, *, prefix: str = "Toy", frames=FRAMES, width: int = W, height: int = H) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cameras_parameters.txt").write_text(calibration_text(known_cameras(width, height)))
    for cam in range(N_CAMS):
        for n in frames:
            Image.fromarray(pixels(cam, n, width, height)).save(root / f"{prefix}_undist_{n:05d}_{cam:02d}.png")
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("techni") / "Toy")


@pytest.fixture
def scene_dir(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "Toy"))


# ------------------------------------------------------------------------------- good data
def test_cameras_times_split(base):
    scene = load_scene("technicolor:" + str(base))
    known = known_cameras()
    n = len(FRAMES)
    assert scene.format == "technicolor" and scene.downscale == 1 and scene.name == "Toy"
    assert scene.num_frames == n and scene.camera_ids == list(range(N_CAMS))
    assert {f.camera.camera_id for f in scene.test} == {10} and len(scene.test) == n
    assert len(scene.train) == 15 * n and 10 not in {f.camera.camera_id for f in scene.train}
    for f in scene.train + scene.test:
        ref = known[f.camera.camera_id]
        assert (f.camera.width, f.camera.height) == (W, H)
        close(f.camera.K, ref.K, 1e-5)
        close(project(f.camera, POINTS), project(ref, POINTS), 1e-3)
        close(f.camera.viewmat, ref.viewmat, 1e-5)
        assert f.camera.time == pytest.approx(f.frame / n)
        assert f.key == f"cam{f.camera.camera_id:02d}/{FRAMES[f.frame]:06d}"
    meta = scene.data.meta
    assert meta["frame_numbers"] == [1, 5] and meta["cameras"] == 16 and meta["resolution"] == f"{W}x{H}"
    assert scene.data.points is None and "training rays" in scene.points.source


def test_detect(base, tmp_path):
    assert technicolor.detect(base)
    assert load_scene(base).format == "technicolor"
    assert not technicolor.detect(tmp_path)


def test_images_exact_and_downscale(base):
    scene = load_scene("technicolor:" + str(base))
    for f in scene.test + scene.train[::7]:
        expected = torch.from_numpy(pixels(f.camera.camera_id, FRAMES[f.frame])).float() / 255
        assert torch.equal(scene.image(f), expected), f.key
    half = load_scene("technicolor:" + str(base), downscale=2)
    assert half.resolution == (W // 2, H // 2)
    for a, b in zip(half.train, scene.train):
        close(a.camera.K[:2], b.camera.K[:2] / 2, 1e-6)
    f = half.test[2]
    raw = pixels(10, FRAMES[2]).astype(np.float32)
    box = np.round(raw.reshape(H // 2, 2, W // 2, 2, 3).mean(axis=(1, 3))) / 255
    close(half.image(f), torch.from_numpy(box), 1e-6)
    assert pickle.loads(pickle.dumps(scene.data.read_image))(scene.test[0]).shape == (H, W, 3)


def test_frame_range_indexes_found_frames(base):
    scene = load_scene("technicolor:" + str(base), frame_range=(1, 4))
    assert scene.num_frames == 3 and scene.data.meta["frame_numbers"] == [2, 4]
    for f in scene.train + scene.test:
        number = 2 + f.frame
        assert f.key == f"cam{f.camera.camera_id:02d}/{number:06d}"
        assert f.camera.time == pytest.approx(f.frame / 3)
    f = scene.test[1]
    assert np.array_equal((scene.image(f).numpy() * 255).round().astype(np.uint8), pixels(10, 3))


def test_known_scene_protocol_frames(tmp_path):
    """Painter: frames 100..149 inclusive (50) by default; other frames of the folder are ignored."""
    root = write_scene(tmp_path / "Painter", prefix="Painter", frames=range(98, 152), width=4, height=2)
    scene = load_scene("technicolor:" + str(root))
    assert scene.num_frames == 50 and len(scene.test) == 50
    keys = [f.key for f in scene.test]
    assert keys[0] == "cam10/000100" and keys[-1] == "cam10/000149"
    assert scene.data.meta["frame_numbers"] == [100, 149] and "100..149" in scene.data.meta["frame_selection"]
    assert scene.data.meta["near_far"] == [1.75, 10.0]
    assert scene.test[1].camera.time == pytest.approx(1 / 50)
    # an explicit frame_range indexes the frames found (98, 99, ...)
    assert [f.key for f in load_scene(root, frame_range=(0, 2)).test] == ["cam10/000098", "cam10/000099"]


def test_known_scene_lacking_protocol_frames(tmp_path):
    root = write_scene(tmp_path / "Birthday", prefix="Birthday", frames=range(1, 4), width=4, height=2)
    with pytest.raises(DatasetError, match=r"Birthday_undist_00151_00\.png: missing; camera 00 lacks frames 151"):
        load_scene("technicolor:" + str(root))
    assert load_scene("technicolor:" + str(root), frame_range=(0, 3)).num_frames == 3


def test_points(scene_dir):
    xyz = np.array([[0.1, 0.2, 0.3], [-1.0, 2.0, 0.5]])
    path = scene_dir / "sparse" / "0" / "points3D.txt"
    path.parent.mkdir(parents=True)
    path.write_text("# comment\n1 0.1 0.2 0.3 255 0 0 0.1 1 1\n2 -1.0 2.0 0.5 0 255 51 0.2 2 3 4 5\n")
    scene = load_scene("technicolor:" + str(scene_dir))
    close(scene.points.xyz, xyz, 1e-6)
    close(scene.points.rgb, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.2]], 1e-6)


def test_zero_distortion_columns_accepted(scene_dir):
    (scene_dir / "cameras_parameters.txt").write_text(calibration_text(known_cameras(), extra_columns=" 0 0"))
    scene = load_scene("technicolor:" + str(scene_dir))
    close(project(scene.test[0].camera, POINTS), project(known_cameras()[10], POINTS), 1e-3)


# ------------------------------------------------------------------------------- bad input
def raises(root: Path, match: str, **kw) -> str:
    with pytest.raises(DatasetError, match=match) as info:
        load_scene("technicolor:" + str(root), **kw)
    return str(info.value)


def test_missing_calibration(scene_dir):
    (scene_dir / "cameras_parameters.txt").unlink()
    assert not technicolor.detect(scene_dir)
    msg = raises(scene_dir, r"cameras_parameters\.txt: missing")
    assert str(scene_dir / "cameras_parameters.txt") in msg


def test_camera_with_images_but_no_calibration(scene_dir):
    path = scene_dir / "cameras_parameters.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # 15 cameras
    msg = raises(scene_dir, r"cameras_parameters\.txt: lists 15 cameras \(00\.\.14\) but .* has images of camera 15")
    assert "(e.g. Toy_undist_" in msg


def test_calibrated_camera_without_images(scene_dir):
    for p in scene_dir.glob("Toy_undist_*_04.png"):
        p.unlink()
    raises(scene_dir, "camera 04 is listed in cameras_parameters.txt but has no images")


def test_missing_frame_of_one_camera(scene_dir):
    (scene_dir / "Toy_undist_00003_07.png").unlink()
    msg = raises(scene_dir, r"Toy_undist_00003_07\.png: missing; camera 07 lacks frames 3")
    assert str(scene_dir) in msg


def test_frame_missing_for_every_camera(scene_dir):
    for p in scene_dir.glob("Toy_undist_00003_*.png"):
        p.unlink()
    raises(scene_dir, "frames 3 are missing for every camera")


def test_unreadable_png(scene_dir):
    (scene_dir / "Toy_undist_00002_05.png").write_bytes(b"this is not a png")
    raises(scene_dir, r"Toy_undist_00002_05\.png: unreadable PNG")


def test_truncated_png(scene_dir):
    path = scene_dir / "Toy_undist_00004_10.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact: found when the image is read
    scene = load_scene("technicolor:" + str(scene_dir))
    bad = next(f for f in scene.test if f.key == "cam10/000004")
    with pytest.raises(DatasetError, match=r"Toy_undist_00004_10\.png: unreadable PNG"):
        scene.image(bad)


@pytest.mark.parametrize(
    "text, match",
    [
        ("header\n1 2 3\n", r"cameras_parameters\.txt:2: expected 12 numbers .* got 3 numbers"),
        ("header\n", r"cameras_parameters\.txt: no camera rows"),
        ("f cu cv\n" + "1 " * 14 + "\n", r"cameras_parameters\.txt:2: radial distortion"),
        ("h\n" + "20 12 8 1 0 2 0 0 0 0 0 3\n" * 16, r"camera 00: quaternion .* has norm 2"),
    ],
)
def test_bad_calibration(scene_dir, text, match):
    (scene_dir / "cameras_parameters.txt").write_text(text)
    raises(scene_dir, match)


def test_frame_stride_keeps_every_nth_found_frame(base):
    scene = load_scene("technicolor:" + str(base), frame_stride=2)  # found frames 1..5: 1, 3, 5
    assert scene.num_frames == 3 and scene.data.meta["frame_numbers"] == [1, 5]
    assert sorted({f.key.split("/")[1] for f in scene.test}) == ["000001", "000003", "000005"]
    f = next(f for f in scene.test if f.key.endswith("000003"))
    assert f.camera.time == pytest.approx(1 / 3)
    assert np.array_equal((scene.image(f).numpy() * 255).round().astype(np.uint8), pixels(10, 3))


def test_frame_range_out_of_range(base):
    msg = raises(base, "frame range 0:9 is outside the 5 frames", frame_range=(0, 9))
    assert str(base) in msg
