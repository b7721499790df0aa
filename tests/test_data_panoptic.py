"""Dynamic 3D Gaussians / CMU Panoptic loader and writer: a hand-written fixture and a round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_cases import POINTS, assert_same_projection
from PIL import Image

from moegs_bench._checks import InputError
from moegs_bench.cameras import Camera
from moegs_bench.data import load_scene, panoptic
from moegs_bench.data.scene import DatasetError, Frame, PointCloud

W, H = 20, 12
T = 3
TRAIN_IDS = [0, 2, 5]
TEST_IDS = [7]


def known_camera(cam_id: int, t: int) -> Camera:
    """Cameras in an OpenCV-style world (y down), moving a little over time."""
    a = 0.9 * cam_id
    eye = (3.0 * np.sin(a), -1.0 + 0.1 * t, -3.0 * np.cos(a))
    return Camera.look_at(eye, (0.05 * t, 0.0, 0.1), fov_x_deg=55.0 + cam_id, width=W, height=H, camera_id=cam_id)


def flat_image(cam_id: int, t: int) -> np.ndarray:
    """A flat colour (survives JPEG) that differs per camera and time."""
    img = np.empty((H, W, 3), dtype=np.uint8)
    img[:] = (20 * cam_id + 10, 60 * t + 30, 200 - 10 * cam_id)
    return img


def write_meta(path: Path, ids: list[int], ext: str = ".jpg") -> None:
    md = {"w": W, "h": H, "k": [], "w2c": [], "fn": [], "cam_id": []}
    for t in range(T):
        cams = [known_camera(c, t) for c in ids]
        md["k"].append([cam.K.tolist() for cam in cams])
        md["w2c"].append([cam.viewmat.tolist() for cam in cams])
        md["fn"].append([f"{c}/{t:06d}{ext}" for c in ids])
        md["cam_id"].append(list(ids))
    path.write_text(json.dumps(md))


@pytest.fixture
def hand(tmp_path: Path) -> Path:
    """Upstream layout, written by hand: jpg images, rgb of the points in [0, 1]."""
    root = tmp_path / "basketball"
    for c in TRAIN_IDS + TEST_IDS:
        (root / "ims" / str(c)).mkdir(parents=True)
        for t in range(T):
            Image.fromarray(flat_image(c, t)).save(root / "ims" / str(c) / f"{t:06d}.jpg", quality=95)
    write_meta(root / "train_meta.json", TRAIN_IDS)
    write_meta(root / "test_meta.json", TEST_IDS)
    data = np.zeros((4, 7))
    data[:, :3] = POINTS[:4].numpy()
    data[:, 3:6] = [[0.1, 0.2, 0.3], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.25, 0.75, 1.0]]
    data[:, 6] = [1, 0, 1, 0]
    np.savez(root / "init_pt_cld.npz", data=data)
    return root


def test_detect(hand, tmp_path):
    assert panoptic.detect(hand)
    assert not panoptic.detect(tmp_path)


def test_hand_written_fixture(hand):
    data = panoptic.load(hand)
    assert data.format == "panoptic" and data.name == "basketball" and data.num_frames == T
    assert data.background == (0.0, 0.0, 0.0) and data.default_downscale == 1
    assert data.test_camera_ids == set(TEST_IDS)
    assert len(data.frames) == T * (len(TRAIN_IDS) + len(TEST_IDS))
    for f in data.frames:
        t = int(f.key.split("/")[1])
        assert f.key == f"cam{f.camera.camera_id:02d}/{t:06d}"
        assert f.frame == t and f.camera.time == pytest.approx(t / T)
        assert_same_projection(f.camera, known_camera(f.camera.camera_id, t))
    frame = next(f for f in data.frames if f.key == "cam05/000002")
    img = np.asarray(data.read_image(frame))
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img.flags.writeable
    assert np.abs(img.astype(int) - flat_image(5, 2)).max() <= 3  # jpg
    pts = data.points
    assert pts is not None and pts.xyz.shape == (4, 3)
    assert torch.allclose(pts.xyz.double(), POINTS[:4], atol=1e-6)
    assert torch.allclose(pts.rgb[1], torch.tensor([1.0, 0.5, 0.0]))  # kept as 0..1


def test_points_in_0_255_are_scaled(hand):
    data = np.load(hand / "init_pt_cld.npz")["data"]
    data[:, 3:6] *= 255.0
    np.savez(hand / "init_pt_cld.npz", data=data)
    pts = panoptic.load(hand).points
    assert torch.allclose(pts.rgb[3], torch.tensor([0.25, 0.75, 1.0]), atol=1e-6)
    assert "255" in pts.source


def test_no_points_and_scene_json(hand):
    (hand / "init_pt_cld.npz").unlink()
    (hand / "scene.json").write_text(json.dumps({"name": "orbit", "background": [1, 0.5, 0]}))
    data = panoptic.load(hand)
    assert data.points is None and data.name == "orbit" and data.background == (1.0, 0.5, 0.0)


def test_frame_range_and_split_through_load_scene(hand):
    scene = load_scene(f"panoptic:{hand}", frame_range=(1, 3), downscale=2)
    assert scene.num_frames == 2
    assert {f.camera.camera_id for f in scene.test} == set(TEST_IDS)
    assert {f.camera.camera_id for f in scene.train} == set(TRAIN_IDS)
    assert sorted({f.camera.time for f in scene.train}) == [0.0, 0.5]
    assert sorted({f.key for f in scene.test}) == ["cam07/000001", "cam07/000002"]
    f = next(f for f in scene.train if f.key == "cam02/000002")
    assert f.frame == 1 and scene.resolution == (W // 2, H // 2)
    known = known_camera(2, 2)
    assert torch.allclose(f.camera.K, known.K * torch.tensor([[0.5], [0.5], [1.0]]), atol=1e-5)
    img = scene.image(f)
    assert img.shape == (H // 2, W // 2, 3)
    assert float((img * 255 - torch.from_numpy(flat_image(2, 2)[: H // 2, : W // 2]).float()).abs().max()) <= 3.5


# ------------------------------------------------------------------------------ write -> load
def orbit_frames(T_: int = 3, ids=(0, 1, 2, 3)) -> list[Frame]:
    frames = []
    for t in range(T_):
        for cam in Camera.orbit(len(ids), radius=3.0, width=W, height=H, height_offset=0.5, time=t / T_):
            cam_id = ids[cam.camera_id]
            frames.append(Frame(camera=_with_id(cam, cam_id), frame=t, key=f"c{cam_id}/{t}"))
    return frames


def _with_id(cam: Camera, cam_id: int) -> Camera:
    return Camera(K=cam.K, viewmat=cam.viewmat, width=cam.width, height=cam.height, time=cam.time, camera_id=cam_id)


def random_images(frames: list[Frame], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8) for _ in frames]


def test_round_trip(tmp_path):
    frames = orbit_frames(ids=(0, 1, 4, 9))
    images = random_images(frames)
    points = PointCloud(xyz=torch.randn(50, 3), rgb=torch.rand(50, 3), source="test")
    root = tmp_path / "nested" / "suite"
    panoptic.write(root, frames, images, test_camera_ids={4}, points=points, name="synthetic-a", background=(1.0, 1.0, 1.0))
    assert sorted(p.name for p in root.parent.iterdir()) == ["suite"]  # no temporary folder left
    data = panoptic.load(root)
    assert data.name == "synthetic-a" and data.background == (1.0, 1.0, 1.0)
    assert data.test_camera_ids == {4} and data.num_frames == 3
    assert data.meta["train_cameras"] == [0, 1, 9]
    by_cam_time = {(f.camera.camera_id, f.frame): f for f in data.frames}
    assert len(by_cam_time) == len(frames)
    for src, img in zip(frames, images):
        f = by_cam_time[(src.camera.camera_id, src.frame)]
        assert torch.equal(f.camera.viewmat, src.camera.viewmat) and torch.equal(f.camera.K, src.camera.K)
        assert_same_projection(f.camera, src.camera)
        assert f.camera.time == pytest.approx(src.camera.time)
        assert np.array_equal(data.read_image(f), img)  # png is lossless
    assert torch.allclose(data.points.xyz, points.xyz) and torch.allclose(data.points.rgb, points.rgb)
    seg = np.load(root / "init_pt_cld.npz")["data"][:, 6]
    assert (seg == 1).all()
    md = json.loads((root / "test_meta.json").read_text())
    assert md["fn"][2] == ["4/000002.png"] and md["cam_id"][0] == [4] and (md["w"], md["h"]) == (W, H)


def test_round_trip_jpg_into_empty_folder(tmp_path):
    frames = orbit_frames(T_=2, ids=(3, 5))
    images = [np.full((H, W, 3), 17 * i, dtype=np.uint8) for i in range(len(frames))]
    root = tmp_path / "empty"
    root.mkdir()
    panoptic.write(root, frames, images, test_camera_ids=set(), ext=".jpg")
    data = panoptic.load(root)
    assert data.test_camera_ids == set() and data.points is None and data.name == "empty"  # no name: the folder's
    assert (root / "ims" / "5" / "000001.jpg").is_file()
    assert np.abs(data.read_image(data.frames[-1]).astype(int) - images[-1]).max() <= 2


def test_write_refuses_non_empty_root(tmp_path):
    root = tmp_path / "taken"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    frames = orbit_frames()
    with pytest.raises(DatasetError, match="not an empty folder"):
        panoptic.write(root, frames, random_images(frames), test_camera_ids={0})
    assert [p.name for p in root.iterdir()] == ["keep.txt"]


def test_write_failing_midway_leaves_nothing(tmp_path):
    frames = orbit_frames()
    images = random_images(frames)
    images[-1] = images[-1][:, :-1]  # wrong shape: fails after the other images are written
    root = tmp_path / "out"
    with pytest.raises(InputError, match=r"image of frame 'c3/2'.*\[12, 20, 3\]"):
        panoptic.write(root, frames, images, test_camera_ids={0})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda fr: fr[:-1], "every time needs the same cameras"),
        (lambda fr: [Frame(f.camera, f.frame + 1, f.key) for f in fr], "must be 0..2, got \\[1, 2, 3\\]"),
        (lambda fr: fr + fr[:1], "are both camera 0 at time index 0"),
    ],
)
def test_write_rejects_bad_frames(tmp_path, mutate, message):
    frames = mutate(orbit_frames())
    with pytest.raises(InputError, match=message):
        panoptic.write(tmp_path / "out", frames, random_images(frames), test_camera_ids={0})
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_bad_arguments(tmp_path):
    frames = orbit_frames()
    images = random_images(frames)
    with pytest.raises(InputError, match="ext"):
        panoptic.write(tmp_path / "a", frames, images, test_camera_ids={0}, ext=".bmp")
    with pytest.raises(InputError, match="not among"):
        panoptic.write(tmp_path / "a", frames, images, test_camera_ids={42})
    with pytest.raises(InputError, match="background"):
        panoptic.write(tmp_path / "a", frames, images, test_camera_ids={0}, background=(2.0, 0, 0))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ bad input
def edit(path: Path, change) -> None:
    md = json.loads(path.read_text())
    change(md)
    path.write_text(json.dumps(md))


def test_missing_meta(hand):
    (hand / "train_meta.json").unlink()  # (a missing test_meta.json is a capture without a test split)
    with pytest.raises(DatasetError, match="train_meta.json: missing"):
        panoptic.load(hand)


def test_syntax_error(hand):
    path = hand / "train_meta.json"
    path.write_text(path.read_text().replace(",", ";", 1))
    with pytest.raises(DatasetError, match="train_meta.json: not valid JSON"):
        panoptic.load(hand)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda md: md.pop("w2c"), "missing key.*w2c"),
        (lambda md: md.update(w=0), "w must be a positive int"),
        (lambda md: md["k"][1][0].pop(), r"k must be .*ragged"),
        (lambda md: md.update(w2c=[[m[:3] for m in cams] for cams in md["w2c"]]), r"w2c must be .*\[3, 3, 3, 4\]"),
        (lambda md: md.update(k=md["k"][:2]), r"k must be \[T=3\]\[C=3\]\[3\]\[3\].*\[2, 3, 3, 3\]"),
        (lambda md: md["fn"][2].pop(), "inconsistent camera counts.*timestep 2 has 2"),
        (lambda md: md["cam_id"][1].pop(), r"inconsistent camera counts: cam_id\[1\]"),
        (lambda md: md["cam_id"][1].__setitem__(0, 99), "same cameras"),
        (lambda md: md["w2c"][0][0][0].__setitem__(0, 3.0), "orthonormal"),
    ],
)
def test_malformed_meta(hand, change, message):
    path = hand / "train_meta.json"
    edit(path, change)
    with pytest.raises(DatasetError, match=message) as info:
        panoptic.load(hand)
    assert str(path) in str(info.value)


def test_inconsistent_timesteps_between_files(hand):
    edit(hand / "test_meta.json", lambda md: [md[k].pop() for k in ("k", "w2c", "fn", "cam_id")])
    with pytest.raises(DatasetError, match="2 timesteps, but train_meta.json has 3"):
        panoptic.load(hand)


def test_overlapping_split(hand):
    write_meta(hand / "test_meta.json", [2])
    with pytest.raises(DatasetError, match=r"cameras \[2\] are also in train_meta.json"):
        panoptic.load(hand)


def test_missing_image(hand):
    path = hand / "ims" / "5" / "000001.jpg"
    path.unlink()
    with pytest.raises(DatasetError, match="image missing") as info:
        panoptic.load(hand)
    assert str(path) in str(info.value)
    panoptic.load(hand, frame_range=(2, 3))  # the missing image is outside the selection


def test_unknown_extension(hand):
    edit(hand / "train_meta.json", lambda md: md["fn"][0].__setitem__(1, "2/000000.bmp"))
    with pytest.raises(DatasetError, match=r"000000.bmp: unsupported image type '.bmp'"):
        panoptic.load(hand)


def test_unreadable_image(hand):
    data = panoptic.load(hand)
    path = hand / "ims" / "0" / "000002.jpg"
    path.write_bytes(b"garbage, not a jpeg")
    with pytest.raises(DatasetError, match="not a readable image") as info:
        data.read_image(next(f for f in data.frames if f.key == "cam00/000002"))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip", "not a readable .npz"),
        ("other", "no array 'data'"),
        ("short", r"data must be \[P, 7\]"),
    ],
)
def test_bad_point_cloud(hand, content, message):
    path = hand / "init_pt_cld.npz"
    if content == "other":
        np.savez(path, points=np.zeros((3, 7)))
    elif content == "short":
        np.savez(path, data=np.zeros((3, 4)))
    else:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        panoptic.load(hand)
    assert str(path) in str(info.value)


def test_bad_scene_json(hand):
    (hand / "scene.json").write_text(json.dumps({"background": [0, 0]}))
    with pytest.raises(DatasetError, match="scene.json: background must be three numbers"):
        panoptic.load(hand)


def test_upstream_foreground_masks_are_the_test_views_regions(hand):
    """seg/<cam>/<frame>.png as upstream's train.py reads them (0/1 values, PIL): the test views'
    become "background" / "foreground" region masks, part of the dataset's state; 0/255 masks and
    downscaling give the same labels."""
    c = TEST_IDS[0]
    before = load_scene(hand).state.digest
    assert load_scene(hand).region_labels == ()
    (hand / "seg" / str(c)).mkdir(parents=True)
    fg = np.zeros((H, W), dtype=np.uint8)
    fg[: H // 2, : W // 2] = 1  # the top-left quarter is the person
    Image.fromarray(fg).save(hand / "seg" / str(c) / "000000.png")
    Image.fromarray(fg * 255).save(hand / "seg" / str(c) / "000001.png")
    scene = load_scene(hand)
    assert scene.region_labels == ("background", "foreground") and scene.state.digest != before
    by_key = {f.key: f for f in scene.test}
    first, second = by_key[f"cam{c:02d}/000000"], by_key[f"cam{c:02d}/000001"]
    assert torch.equal(scene.regions(first), torch.from_numpy(fg.astype(np.int64)))
    assert torch.equal(scene.regions(second), torch.from_numpy(fg.astype(np.int64)))
    assert all(scene.regions(f) is None for f in scene.train)  # (training views: not read)
    half = load_scene(hand, downscale=2)
    expected = torch.from_numpy(fg[::2, ::2].astype(np.int64))  # whole 2x2 blocks: one label each
    assert torch.equal(half.regions(next(f for f in half.test if f.key == first.key)), expected)


def test_foreground_masks_of_a_camera_held_out_with_test_cameras(hand):
    """A training camera's seg/ masks are region masks too, so the camera held out with
    --test-cameras is scored per region; the masks are part of the dataset's state."""
    c = TRAIN_IDS[1]
    before = load_scene(hand).state.digest
    (hand / "seg" / str(c)).mkdir(parents=True)
    fg = np.zeros((H, W), dtype=np.uint8)
    fg[H // 3:, W // 4:] = 1
    Image.fromarray(fg).save(hand / "seg" / str(c) / "000001.png")
    scene = load_scene(hand, test_cameras=[c])
    assert scene.region_labels == ("background", "foreground") and scene.state.digest != before
    by_key = {f.key: f for f in scene.test}
    assert torch.equal(scene.regions(by_key[f"cam{c:02d}/000001"]), torch.from_numpy(fg.astype(np.int64)))
    assert scene.regions(by_key[f"cam{c:02d}/000000"]) is None  # (no mask for that timestep)


def test_capture_without_test_meta_holds_out_the_cameras_asked_for(hand, tmp_path):
    """People's own captures have no test_meta.json: every camera trains until --test-cameras
    holds some out; run and train-expert refuse a scene without test views, naming the key."""
    from moegs_bench.app.config import SceneConfig, open_configured_scene
    from moegs_bench.config import ConfigError

    meta = json.loads((hand / "train_meta.json").read_text())
    (hand / "test_meta.json").unlink()
    data = panoptic.load(hand)
    assert data.test_camera_ids == set() and {f.camera.camera_id for f in data.frames} == set(TRAIN_IDS)
    scene = load_scene(hand, test_cameras=[2])
    assert {f.camera.camera_id for f in scene.test} == {2} and {f.camera.camera_id for f in scene.train} == {0, 5}
    assert len(scene.test) == T and meta["cam_id"][0] == TRAIN_IDS  # (the file is untouched)
    with pytest.raises(InputError, match=r"no camera 9 in .* \(its cameras: 0, 2, 5\)"):
        load_scene(hand, test_cameras=[9])
    with pytest.raises(InputError, match="every camera"):
        load_scene(hand, test_cameras=TRAIN_IDS)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as e:
        open_configured_scene(SceneConfig(spec=str(hand)), cache)
    assert e.value.key == "scene.test_cameras" and "no test split" in str(e.value)
    opened = open_configured_scene(SceneConfig(spec=str(hand), test_cameras=(2,)), cache)
    assert opened.scene_id.endswith(";test_cameras=2") and len(opened.scene.test) == T
    with pytest.raises(ConfigError) as e:
        open_configured_scene(SceneConfig(spec=str(hand), test_cameras=(4,)), cache)
    assert e.value.key == "scene.test_cameras"


def test_frame_stride_keeps_every_nth_timestep_with_times_over_the_kept_ones(hand):
    """--frames 0:3 --frame-stride 2 keeps timesteps 0 and 2 as frames 0 and 1 of 2 (times 0 and
    1/2); their images and cameras are those of the unstrided load."""
    from moegs_bench.app.config import SceneConfig, scene_config_from_id

    full = load_scene(hand)
    strided = load_scene(hand, frame_range=(0, 3), frame_stride=2)
    assert strided.num_frames == 2
    keys = sorted({f.key.split("/")[1] for f in strided.data.frames})
    assert keys == ["000000", "000002"]
    by_key = {f.key: f for f in full.data.frames}
    for f in strided.data.frames:
        t = int(f.key.split("/")[1])
        assert f.frame == t // 2 and f.camera.time == pytest.approx(f.frame / 2)
        assert_same_projection(f.camera, by_key[f.key].camera)
        assert np.array_equal(strided.decode(f), full.decode(by_key[f.key]))
    assert load_scene(hand, frame_stride=3).num_frames == 1  # no range: the whole sequence, strided
    with pytest.raises(InputError, match="frame_stride"):
        load_scene(hand, frame_stride=0)
    config = SceneConfig(spec="panoptic:/x", downscale=2, frames=(0, 3), frame_stride=2, test_cameras=(2, 5))
    assert scene_config_from_id("panoptic:/x;downscale=2;frames=0:3;stride=2;test_cameras=2,5") == config
