"""N3V loader: tiny scenes written by the format's own rules from known cameras.

poses_bounds.npy is written here with an independent OpenCV -> LLFF conversion (LLFF's camera
axes are the columns (down, right, back) of a camera-to-world matrix); the videos are lossless
(libx264rgb, -qp 0), so decoded pixels must equal the written ones exactly.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from data_cases import POINTS, close, project

from moegs_bench.cameras import Camera
from moegs_bench.data import DatasetError, load_scene
from moegs_bench.data import n3v

W, H, T = 32, 24, 6  # video size and frame count
N_CAMS = 4


def known_cameras() -> list[Camera]:
    """Four cameras around the origin, at different heights and distances (fov 60 -> f = 27.71)."""
    eyes = [(0.0, -0.5, -4.0), (3.0, -1.0, -3.0), (-2.5, 0.5, -3.5), (1.0, -2.0, -4.5)]
    return [
        Camera.look_at(eye, (0.1, 0.2, 0.0), width=W, height=H, fov_x_deg=60.0, camera_id=i)
        for i, eye in enumerate(eyes)
    ]


def llff_row(cam: Camera, near: float = 1.0, far: float = 9.0, hwf_scale: float = 1.0) -> np.ndarray:
    """The 17 numbers of poses_bounds.npy for an OpenCV camera (independent of the loader)."""
    c2w = np.linalg.inv(cam.viewmat.double().numpy())
    right, down, forward, centre = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
    mat = np.zeros((3, 5))
    mat[:, 0] = down
    mat[:, 1] = right
    mat[:, 2] = -forward  # back
    mat[:, 3] = centre
    fx = float(cam.K[0, 0])
    mat[:, 4] = (cam.height * hwf_scale, cam.width * hwf_scale, fx * hwf_scale)
    return np.concatenate([mat.reshape(-1), [near, far]])


def frame_pixels(cam: int, t: int, n_frames: int = T) -> np.ndarray:
    rng = np.random.default_rng(1000 * cam + t)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def write_video(path: Path, frames: list[np.ndarray], *, faststart: bool = False) -> None:
    params = ["-qp", "0"] + (["-movflags", "+faststart"] if faststart else [])
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=30, codec="libx264rgb", pix_fmt_out="rgb24", quality=None,
        macro_block_size=1, output_params=params, ffmpeg_log_level="error",
    )  # fmt: skip
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()


def write_scene(root: Path, cams: list[Camera], *, n_frames: int = T, hwf_scale: float = 1.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = np.stack([llff_row(c, near=1.0 + 0.1 * i, far=9.0 + i, hwf_scale=hwf_scale) for i, c in enumerate(cams)])
    np.save(root / "poses_bounds.npy", rows)
    for i in range(len(cams)):
        write_video(root / f"cam{i:02d}.mp4", [frame_pixels(i, t) for t in range(n_frames)])
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("n3v") / "toy_scene", known_cameras())


@pytest.fixture
def scene_dir(base, tmp_path) -> Path:
    """A private copy of the base scene, to break."""
    return Path(shutil.copytree(base, tmp_path / "scene"))


# ------------------------------------------------------------------------------- good data
def test_cameras_times_split(base):
    scene = load_scene("n3v:" + str(base), downscale=1)
    known = known_cameras()
    assert scene.format == "n3v" and scene.num_frames == T and scene.name == "toy_scene"
    assert scene.camera_ids == [0, 1, 2, 3]
    assert {f.camera.camera_id for f in scene.test} == {0} and len(scene.test) == T
    assert {f.camera.camera_id for f in scene.train} == {1, 2, 3} and len(scene.train) == 3 * T
    for f in scene.train + scene.test:
        ref = known[f.camera.camera_id]
        assert (f.camera.width, f.camera.height) == (W, H)
        close(f.camera.K, ref.K, 1e-4)
        close(project(f.camera, POINTS), project(ref, POINTS), 1e-3)
        close(f.camera.campos, ref.campos, 1e-5)
        assert f.camera.time == pytest.approx(f.frame / T)
        assert f.key == f"cam{f.camera.camera_id:02d}/{f.frame:06d}"
    # principal point at the image centre
    assert float(scene.test[0].camera.K[0, 2]) == W / 2 and float(scene.test[0].camera.K[1, 2]) == H / 2
    meta = scene.data.meta
    assert meta["video_frames"] == T and meta["video_resolution"] == f"{W}x{H}"
    assert meta["near_far"] == pytest.approx([1.0, 12.0]) and meta["fps"] == pytest.approx(30.0)
    assert scene.data.points is None  # no point file: Scene's fallback
    assert "training rays" in scene.points.source


def test_detect_and_default_downscale(base):
    scene = load_scene(base)  # format detected
    full = load_scene("n3v:" + str(base), downscale=1)
    assert scene.format == "n3v" and scene.downscale == 2 == scene.data.default_downscale
    assert scene.resolution == (W // 2, H // 2)
    for a, b in zip(scene.train, full.train):
        close(a.camera.K[:2], b.camera.K[:2] / 2, 1e-6)
        close(a.camera.viewmat, b.camera.viewmat, 0)


def test_images_exact_and_downscaled(base):
    scene = load_scene("n3v:" + str(base), downscale=1)
    for f in scene.train + scene.test:
        img = scene.image(f)
        assert img.shape == (H, W, 3) and img.dtype == torch.float32
        expected = torch.from_numpy(frame_pixels(f.camera.camera_id, f.frame)).float() / 255
        assert torch.equal(img, expected), f.key
    half = load_scene("n3v:" + str(base), downscale=2)
    f = half.train[4]
    raw = frame_pixels(f.camera.camera_id, f.frame).astype(np.float32)
    box = np.round(raw.reshape(H // 2, 2, W // 2, 2, 3).mean(axis=(1, 3))) / 255
    close(half.image(f), torch.from_numpy(box), 1e-6)


def test_each_video_decoded_once_in_order(base, monkeypatch):
    calls = []
    real = imageio_ffmpeg.read_frames

    def counting(path, *a, **kw):
        calls.append(Path(path).name)
        return real(path, *a, **kw)

    monkeypatch.setattr(imageio_ffmpeg, "read_frames", counting)
    scene = load_scene("n3v:" + str(base), downscale=1)
    for f in scene.train + scene.test:
        scene.image(f)
    assert sorted(calls) == ["cam00.mp4", "cam01.mp4", "cam02.mp4", "cam03.mp4"]


def test_small_memory_budget_decodes_windows(base):
    scene = load_scene("n3v:" + str(base), downscale=1)
    reader = scene.data.read_image
    reader.max_bytes = 2 * W * H * 3  # two frames at a time
    order = [f for f in scene.train if f.camera.camera_id == 2]
    for f in order[::-1] + order:
        expected = frame_pixels(2, f.frame)
        assert np.array_equal(reader(f), expected)
    assert reader.decodes > 1
    clone = pickle.loads(pickle.dumps(reader))  # picklable for DataLoader workers, cache dropped
    assert np.array_equal(clone(order[3]), frame_pixels(2, 3))


def test_frame_range(base):
    scene = load_scene("n3v:" + str(base), downscale=1, frame_range=(2, 5))
    assert scene.num_frames == 3 and len(scene.train) == 9 and len(scene.test) == 3
    assert scene.data.meta["selected_frames"] == [2, 5]
    for f in scene.train + scene.test:
        vidx = 2 + f.frame
        assert f.key == f"cam{f.camera.camera_id:02d}/{vidx:06d}"
        assert f.camera.time == pytest.approx(f.frame / 3)
        img = (scene.image(f).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(img, frame_pixels(f.camera.camera_id, vidx))


def test_frame_stride_decodes_the_right_frames(base):
    """Every 2nd frame of 1:6 (video frames 1, 3, 5): the decoder seeks each from the video."""
    scene = load_scene("n3v:" + str(base), downscale=1, frame_range=(1, 6), frame_stride=2)
    assert scene.num_frames == 3 and scene.data.meta["frame_stride"] == 2
    for f in scene.train + scene.test:
        vidx = 1 + 2 * f.frame
        assert f.key == f"cam{f.camera.camera_id:02d}/{vidx:06d}"
        assert f.camera.time == pytest.approx(f.frame / 3)
        img = (scene.image(f).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(img, frame_pixels(f.camera.camera_id, vidx))


def test_protocol_takes_first_300_frames(tmp_path, monkeypatch):
    cams = known_cameras()[:2]
    root = write_scene(tmp_path / "long", cams, n_frames=1)
    monkeypatch.setattr(n3v, "PROTOCOL_FRAMES", 3)  # stands for 300 without a 300-frame video
    for i in range(2):
        write_video(root / f"cam{i:02d}.mp4", [frame_pixels(i, t) for t in range(5)])
    scene = load_scene("n3v:" + str(root), downscale=1)
    assert scene.num_frames == 3 and "first 3 of 5" in scene.data.meta["frame_selection"]
    assert load_scene("n3v:" + str(root), frame_range=(1, 5)).num_frames == 4


def test_focal_scaled_when_hwf_resolution_differs(tmp_path):
    root = write_scene(tmp_path / "scaled", known_cameras(), n_frames=2, hwf_scale=2.0)
    scene = load_scene("n3v:" + str(root), downscale=1)
    known = known_cameras()
    for f in scene.train + scene.test:
        close(f.camera.K, known[f.camera.camera_id].K, 1e-4)
        close(project(f.camera, POINTS), project(known[f.camera.camera_id], POINTS), 1e-3)
    assert "focal scaled" in scene.data.meta["focal_scaled"]
    assert scene.data.meta["hwf_resolution"] == f"{2 * W}x{2 * H}"


@pytest.mark.parametrize("where", ["sparse/0/points3D.txt", "points3D.ply", "sparse/0/points3D.bin"])
def test_points(scene_dir, where):
    xyz = np.array([[0.1, 0.2, 0.3], [-1.0, 2.0, 0.5], [3.0, -0.25, 1.0]])
    rgb = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    path = scene_dir / where
    path.parent.mkdir(parents=True, exist_ok=True)
    if where.endswith(".txt"):
        lines = ["# 3D point list with one line of data per point:", "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]"]
        for i, ((x, y, z), (r, g, b)) in enumerate(zip(xyz, rgb)):
            lines.append(f"{i + 1} {x} {y} {z} {r} {g} {b} 0.5 1 2 3 4")
        path.write_text("\n".join(lines) + "\n")
    elif where.endswith(".bin"):
        import struct

        data = struct.pack("<Q", len(xyz))
        for i, (p, c) in enumerate(zip(xyz, rgb)):
            data += struct.pack("<QdddBBBdQ", i + 1, *p, *c, 0.5, 2) + struct.pack("<iiii", 1, 2, 3, 4)
        path.write_bytes(data)
    else:
        from plyfile import PlyData, PlyElement

        v = np.array(
            [(*p, *c) for p, c in zip(xyz, rgb)],
            dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
        )
        PlyData([PlyElement.describe(v, "vertex")]).write(str(path))
    scene = load_scene("n3v:" + str(scene_dir))
    close(scene.points.xyz, xyz, 1e-6)
    close(scene.points.rgb, rgb / 255.0, 1e-6)
    assert path.name in scene.points.source and str(path) in scene.data.meta["points"]


# ------------------------------------------------------------------------------- bad input
def raises(root: Path, match: str, **kw):
    with pytest.raises(DatasetError, match=match) as info:
        load_scene("n3v:" + str(root), **kw)
    return str(info.value)


def test_missing_poses_bounds(scene_dir):
    (scene_dir / "poses_bounds.npy").unlink()
    assert not n3v.detect(scene_dir)
    msg = raises(scene_dir, "poses_bounds.npy: missing")
    assert str(scene_dir / "poses_bounds.npy") in msg


def test_wrong_shape(scene_dir):
    np.save(scene_dir / "poses_bounds.npy", np.zeros((4, 15)))
    raises(scene_dir, r"poses_bounds.npy: expected an \[N, 17\] array .*got shape \(4, 15\)")
    (scene_dir / "poses_bounds.npy").write_bytes(b"not numpy")
    raises(scene_dir, "poses_bounds.npy: not a readable .npy")


def test_rows_and_videos_disagree(scene_dir):
    arr = np.load(scene_dir / "poses_bounds.npy")
    np.save(scene_dir / "poses_bounds.npy", arr[:3])
    raises(scene_dir, "poses_bounds.npy: 3 camera rows but 4 videos")


def test_not_a_rotation(scene_dir):
    arr = np.load(scene_dir / "poses_bounds.npy")
    arr[2, 0] *= 1.5
    np.save(scene_dir / "poses_bounds.npy", arr)
    raises(scene_dir, "poses_bounds.npy: row 2: the 3x3 rotation is not orthonormal")


def test_missing_test_camera(scene_dir):
    (scene_dir / "cam00.mp4").rename(scene_dir / "cam04.mp4")
    raises(scene_dir, "no cam00.mp4")


def test_truncated_mp4(scene_dir):
    path = scene_dir / "cam02.mp4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: unreadable
    raises(scene_dir, r"cam02\.mp4: unreadable, truncated or corrupt mp4")


def test_corrupt_mp4(scene_dir):
    (scene_dir / "cam01.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    raises(scene_dir, r"cam01\.mp4: unreadable, truncated or corrupt mp4")


def test_truncated_faststart_mp4(scene_dir):
    """Index at the front, data cut short: caught when loading or, at the latest, when decoding."""
    path = scene_dir / "cam03.mp4"
    write_video(path, [frame_pixels(3, t) for t in range(T)], faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(DatasetError, match=r"cam03\.mp4"):
        scene = load_scene("n3v:" + str(scene_dir), downscale=1)
        for f in scene.train:
            scene.image(f)


def test_different_frame_counts(scene_dir):
    write_video(scene_dir / "cam01.mp4", [frame_pixels(1, t) for t in range(T - 1)])
    msg = raises(scene_dir, "different frame counts")
    assert "cam01: 5" in msg and "cam00: 6" in msg and str(scene_dir) in msg


@pytest.mark.parametrize("frame_range", [(0, 7), (3, 3), (-1, 2)])
def test_frame_range_out_of_range(base, frame_range):
    msg = raises(base, "frame range", frame_range=frame_range)
    assert str(base) in msg


def test_missing_video(scene_dir):
    (scene_dir / "cam02.mp4").unlink()
    msg = raises(scene_dir, "poses_bounds.npy: 4 camera rows but 3 videos")
    assert "cam00.mp4, cam01.mp4, cam03.mp4" in msg


def test_video_shorter_than_promised_when_decoding(base):
    """A container that promises more frames than decode is caught at read time."""
    scene = load_scene("n3v:" + str(base), downscale=1)
    videos = {i: base / f"cam{i:02d}.mp4" for i in range(N_CAMS)}
    reader = n3v.VideoFrameReader(videos, range(0, T + 2), {i: T + 2 for i in range(N_CAMS)})
    with pytest.raises(DatasetError, match=r"cam01\.mp4: decoded 6 frames, expected at least 8 .*truncated or corrupt"):
        reader(scene.train[0])
