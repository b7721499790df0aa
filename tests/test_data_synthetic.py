"""The embedded synthetic suite: the analytic ray caster (hand-checked cases), the rig, determinism,
the on-disk round trip through the Panoptic loader, the cache, and that every scene really holds
its motion regimes (per-region temporal statistics of the rendered test view)."""

from __future__ import annotations

import functools
import importlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.cameras import Camera
from moegs_bench.data.synthetic import (
    DEFAULT_SCENE,
    REGIMES,
    SCENES,
    cache_key,
    cameras,
    contact_sheet,
    ensure,
    generate,
    render_frames,
)
from moegs_bench.io import image_to_uint8 as to_uint8
from moegs_bench.data.synthetic.raycast import (
    AMBIENT,
    BACKGROUND,
    DIFFUSE,
    LIGHT_DIR,
    Blob,
    Rig,
    Box,
    Room,
    Scene3D,
    Sheet,
    Sphere,
    Texture,
    Wave,
    render,
    rotation,
    trace,
)
from moegs_bench.data.synthetic.scenes import TARGET
from test_cli import folder_files

# the package exports the function generate(), which hides its module of the same name
generate_module = importlib.import_module("moegs_bench.data.synthetic.generate")
GREY = Texture(base=(0.5, 0.5, 0.5))
SMALL = {"frames": 4, "width": 24, "height": 18, "train_cameras": 3}


def ray(o, d) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.tensor(d, dtype=torch.float32)
    return torch.tensor([o], dtype=torch.float32), (d / d.norm())[None]


# ----------------------------------------------------------------------------- the ray caster
def test_sphere_in_front_of_a_camera_hand_checked():
    # camera at the origin looking along +z (identity viewmat), sphere of radius 1 at distance 5
    cam = Camera.look_at((0, 0, 0), (0, 0, 5), width=33, height=33, fov_x_deg=40.0)
    assert torch.equal(cam.viewmat, torch.eye(4))
    scene = Scene3D([Sphere("ball", (0, 0, 5), 1.0, GREY)])
    v = render(scene, [cam], ss=1)
    # the centre pixel (16, 16) looks straight down the axis: it hits at distance 5 - 1
    assert v.depth[0, 16, 16].item() == pytest.approx(4.0, abs=1e-5)
    assert v.prim[0, 16, 16].item() == 0
    # lit head-on: normal (0, 0, -1); ambient (the sky term is 0.85 for a vertical normal) + Lambert
    light = torch.tensor(LIGHT_DIR) / torch.tensor(LIGHT_DIR).norm()
    expected = 0.5 * (AMBIENT * 0.85 + DIFFUSE * max(0.0, -float(light[2])))
    torch.testing.assert_close(v.rgb[0, 16, 16], torch.full((3,), expected), atol=1e-5, rtol=0)
    # a corner ray misses: no hit, background colour
    assert math.isinf(v.depth[0, 0, 0].item()) and v.prim[0, 0, 0].item() == -1
    assert v.rgb[0, 0, 0].tolist() == list(BACKGROUND)
    # the disc covers the pixels within the sphere's angular radius (asin(1/5)) of the axis
    f = cam.K[0, 0].item()
    radius_px = f * math.tan(math.asin(1 / 5))
    yy, xx = torch.meshgrid(torch.arange(33) + 0.5 - 16.5, torch.arange(33) + 0.5 - 16.5, indexing="ij")
    r = (xx**2 + yy**2).sqrt()
    hit = v.prim[0] == 0
    assert hit[r < radius_px - 0.5].all() and not hit[r > radius_px + 0.5].any()


def test_trace_single_rays_hand_checked():
    scene = Scene3D([Sphere("ball", (0, 0, 5), 1.0, GREY)])
    tr = trace(scene, *ray((0, 0, 0), (0, 0, 1)))
    assert tr.depth.item() == pytest.approx(4.0, abs=1e-5) and tr.prim.item() == 0
    tr = trace(scene, *ray((0, 0, 0), (1, 0, 0)))
    assert math.isinf(tr.depth.item()) and tr.prim.item() == -1
    # from inside the sphere: the far side
    tr = trace(scene, *ray((0, 0, 5), (0, 0, 1)))
    assert tr.depth.item() == pytest.approx(1.0, abs=1e-5)


def test_box_room_and_sheet_distances():
    box = Box("box", (0, 0, 5), (1, 1, 1), GREY)
    assert trace(Scene3D([box]), *ray((0, 0, 0), (0, 0, 1))).depth.item() == pytest.approx(4.0, abs=1e-5)
    turned = Box("box", (0, 0, 5), (1, 1, 1), GREY, rot=rotation(yaw=math.pi / 4))  # an edge faces us
    assert trace(Scene3D([turned]), *ray((0, 0, 0), (0, 0, 1))).depth.item() == pytest.approx(5 - 2**0.5, abs=1e-5)
    room = Room("room", (-2, -2, -2), (2, 2, 3), {"walls": GREY})
    tr = trace(Scene3D([], static=[room]), *ray((0, 0, 0), (0, 0, 1)))
    assert tr.depth.item() == pytest.approx(3.0, abs=1e-5) and tr.prim.item() == 0
    tr = trace(Scene3D([], static=[room]), *ray((0, 0, 0), (1, 0, 1)))  # the x = 2 wall, at 45 degrees
    assert tr.depth.item() == pytest.approx(2 * 2**0.5, abs=1e-5)
    # a flat sheet facing the camera at z = 5 (local normal along +z)
    flat = Sheet("sheet", (0, 0, 5), 1.0, 1.0, [Wave(0.0, 3.0)], GREY, pinned=False)
    tr = trace(Scene3D([flat]), *ray((0, 0, 0), (0.1, 0.05, 1)))
    assert tr.depth.item() == pytest.approx(5 * math.sqrt(1 + 0.01 + 0.0025), abs=1e-4)


def test_waving_sheet_hits_lie_on_the_height_field():
    waves = [Wave(0.15, 2 * math.pi / 0.8, 0.0, 0.3), Wave(0.05, 2 * math.pi / 0.4, 2 * math.pi / 0.9, 1.0)]
    sheet = Sheet("flag", (0.2, -0.1, 4.0), 1.0, 0.6, waves, GREY, rot=rotation(yaw=0.4))
    cam = Camera.look_at((0.5, -0.8, 0.0), (0.2, -0.1, 4.0), width=40, height=30)
    v = render(Scene3D([sheet]), [cam], ss=1)
    o, d = cam.rays()
    hit = torch.isfinite(v.depth[0])
    assert hit.float().mean() > 0.1
    p = (o + v.depth[0, ..., None] * d)[hit]
    q = (p - sheet.center) @ sheet.rot
    residual = q[:, 2] - sheet.height(q[:, 0], q[:, 1])
    assert residual.abs().max() < 1e-3
    assert (q[:, 0].abs() <= 1.0 + 1e-3).all() and (q[:, 1].abs() <= 0.6 + 1e-3).all()


def test_flame_emission_matches_numerical_integral():
    blob = Blob((0.1, -0.2, 3.0), (0.2, 0.5, 0.3), (1.0, 0.5, 0.25), rot=rotation(yaw=0.3, roll=0.2))
    o, d = ray((0, 0, 0), (0.05, -0.06, 1))
    for t_max in (2.8, 3.1, math.inf):  # a surface in front of, inside and behind the blob
        s = torch.linspace(0, min(t_max, 8.0), 20001, dtype=torch.float64)
        x = o.double() + s[:, None] * d.double()
        loc = ((x - blob.center.double()) @ blob.rot.double()) / blob.sigma.double()
        numeric = torch.trapezoid(torch.exp(-0.5 * (loc**2).sum(-1)), s).item()
        got = blob.emission(o, d, torch.tensor([t_max]))[0]
        torch.testing.assert_close(got, blob.color * numeric, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- scenes and rig
def test_scene_list_and_regions():
    assert len(SCENES) >= 3 and DEFAULT_SCENE in SCENES
    for name, spec in SCENES.items():
        assert spec.name == name and spec.description
        assert set(spec.regions) == set(REGIMES), name
        names = set()
        for i in range(30):
            s3d = spec.at(i / 30)
            assert len(set(s3d.names())) == len(s3d.names()), f"{name}: duplicate surface names"
            names |= set(s3d.names()) | {f"flame:{f.name}" for f in s3d.flames}
        for regime, members in spec.regions.items():
            assert members and set(members) <= names, (name, regime, set(members) - names)
        static = set(spec.at(0.0).names()[: len(spec.at(0.0).static)])
        assert set(spec.regions["static"]) == static, name


def test_static_surfaces_do_not_change_over_time():
    """Renderers trace Scene3D.static once per camera: it must not depend on time."""
    train, test = cameras(3, 24, 18)
    rig = Rig([test, *train], 1)
    for name, spec in SCENES.items():
        first = rig.base(spec.at(0.0))
        for t in (0.37, 0.81):
            other = rig.base(spec.at(t))
            assert torch.equal(first.rgb, other.rgb) and torch.equal(first.depth, other.depth), (name, t)


def test_rig_is_an_arc_with_a_held_out_camera_inside():
    train, test = cameras(12, 96, 72)
    assert [c.camera_id for c in train] == list(range(1, 13)) and test.camera_id == 0
    target = torch.tensor(TARGET)
    radii = torch.stack([(c.campos - target).norm() for c in train])
    assert torch.allclose(radii, radii[0], atol=1e-4)
    # the arc spans 120 degrees around the vertical axis (y) through the target
    horiz = torch.stack([(c.campos - target)[[0, 2]] for c in train])
    angles = torch.atan2(horiz[:, 0], -horiz[:, 1]) * 180 / math.pi
    assert angles[0].item() == pytest.approx(-60, abs=1e-3) and angles[-1].item() == pytest.approx(60, abs=1e-3)
    assert (angles.diff() > 0).all()
    # every camera looks at the target: it projects to the image centre
    for cam in [*train, test]:
        uv, depth = cam.project(target[None])
        assert depth.item() > 0 and torch.allclose(uv[0], torch.tensor([48.0, 36.0]), atol=1e-3)
    # the test camera is inside the arc and differs from every train camera
    assert (test.campos - target).norm() < radii.min() - 0.1
    assert min((test.campos - c.campos).norm().item() for c in train) > 0.3
    test_angle = math.degrees(math.atan2((test.campos - target)[0].item(), -(test.campos - target)[2].item()))
    assert -10 < test_angle < 10


# ----------------------------------------------------------------------------- files
def test_generate_is_deterministic_and_seeded(tmp_path: Path):
    a = folder_files(generate(tmp_path / "a", "kitchen", **SMALL))
    b = folder_files(generate(tmp_path / "b", "kitchen", **SMALL))
    assert a == b
    assert {"train_meta.json", "test_meta.json", "scene.json", "init_pt_cld.npz"} <= set(a)
    images = SMALL["frames"] * (SMALL["train_cameras"] + 1)
    assert sum(k.startswith("ims/") and k.endswith(".png") for k in a) == images
    assert sum(k.startswith("regions/") and k.endswith(".png") for k in a) == SMALL["frames"]  # the test views'
    assert "regions.json" in a
    c = folder_files(generate(tmp_path / "c", "kitchen", **SMALL, seed=1))
    assert set(c) == set(a)
    pngs = [k for k in a if k.startswith("ims/") and k.endswith(".png")]
    assert all(a[k] != c[k] for k in pngs)  # textures and colours depend on the seed
    assert a["init_pt_cld.npz"] != c["init_pt_cld.npz"]
    assert a["train_meta.json"] == c["train_meta.json"]  # the rig does not


def test_round_trip_through_the_panoptic_loader(tmp_path: Path):
    from moegs_bench.data import load_scene

    root = generate(tmp_path / "windy", "windy", **SMALL, seed=3)
    scene = load_scene("panoptic:" + str(root))
    T, n = SMALL["frames"], SMALL["train_cameras"]
    assert scene.name == "windy" and scene.num_frames == T
    assert scene.camera_ids == list(range(n + 1)) and {f.camera.camera_id for f in scene.test} == {0}
    assert len(scene.train) == T * n and len(scene.test) == T
    assert scene.resolution == (SMALL["width"], SMALL["height"])
    train, test = cameras(n, SMALL["width"], SMALL["height"])
    expected = render_frames("windy", [test, *train], T, seed=3)
    for f in [*scene.train, *scene.test]:
        assert f.camera.time == pytest.approx(f.frame / T)
        cam = (test if f.camera.camera_id == 0 else train[f.camera.camera_id - 1])
        assert torch.allclose(f.camera.viewmat, cam.viewmat, atol=1e-6) and torch.allclose(f.camera.K, cam.K)
        img = scene.image(f)
        assert img.shape == (SMALL["height"], SMALL["width"], 3) and img.dtype == torch.float32
        want = torch.from_numpy(to_uint8(expected[f.frame].rgb[f.camera.camera_id])).float() / 255
        assert torch.equal(img, want)
    pts = scene.points
    assert 2000 <= pts.xyz.shape[0] <= 5000 and pts.rgb.min() >= 0 and pts.rgb.max() <= 1
    assert "synthetic" in pts.source or "init_pt_cld" in pts.source


def test_points_lie_on_surfaces_seen_at_time_zero():
    train, _ = cameras(12, 48, 36)
    pc = generate_module.sample_points("carousel", train, n=1000)
    assert pc.xyz.shape == (1000, 3) and pc.rgb.shape == (1000, 3)
    s3d = SCENES["carousel"].at(0.0)
    # each point is within a few jitter sigmas of the first hit along the ray from a camera
    cam = train[5]
    d = pc.xyz - cam.campos
    dist = d.norm(dim=-1)
    tr = trace(s3d, cam.campos.expand_as(d).contiguous(), d / dist[:, None])
    visible = (tr.depth - dist).abs() < 0.05
    assert visible.float().mean() > 0.5  # points seen by this camera sit on the surface it sees
    room = torch.tensor([isinstance(p, Room) for p in s3d.all_surfaces()])[tr.prim.clamp_min(0)]
    assert 0.1 < (room & visible).sum() / visible.sum() < 0.5  # the background is sparser


@pytest.mark.slow
def test_default_suite_size(tmp_path: Path):
    root = generate(tmp_path / "default", DEFAULT_SCENE)
    files = folder_files(root)
    assert sum(k.startswith("ims/") and k.endswith(".png") for k in files) == 30 * 13
    assert sum(k.startswith("regions/") for k in files) == 30
    size = sum(len(v) for v in files.values())
    assert size < 5_000_000, f"{size / 1e6:.2f} MB"


# ----------------------------------------------------------------------------- cache
def test_ensure_generates_once_and_keys_on_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = generate_module.generate
    monkeypatch.setattr(generate_module, "generate", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = ensure("carousel", tmp_path, **SMALL)
    again = ensure("carousel", tmp_path, **SMALL)
    assert first == again and len(calls) == 1
    assert first.name == cache_key("carousel", **SMALL) and first.name.startswith("carousel-")
    assert cache_key("carousel", **SMALL) != cache_key("carousel", **{**SMALL, "seed": 1})
    assert cache_key("carousel", **SMALL) != cache_key("juggler", **SMALL)
    assert cache_key("carousel") == cache_key("carousel", frames=30, width=96, height=72, seed=0, train_cameras=12)
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left behind


def test_ensure_loses_a_race_gracefully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Another process finishes first: its folder is kept, ours is discarded."""
    real = generate_module.generate
    final = tmp_path / cache_key("juggler", **SMALL)

    def racing(out, *a, **k):
        real(final, *a, **k)  # the other process
        return real(out, *a, **k)

    monkeypatch.setattr(generate_module, "generate", racing)
    assert ensure("juggler", tmp_path, **SMALL) == final
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    assert (final / "train_meta.json").exists()


def test_invalid_arguments(tmp_path: Path):
    with pytest.raises(InputError, match="kitchen"):
        generate(tmp_path / "x", "no-such-scene")
    with pytest.raises(InputError, match="frames"):
        generate(tmp_path / "x", "kitchen", frames=1)
    with pytest.raises(InputError, match="width"):
        ensure("kitchen", tmp_path, width=4)
    with pytest.raises(InputError, match="unknown parameter"):
        ensure("kitchen", tmp_path, colour=3)
    assert not (tmp_path / "x").exists()


def test_contact_sheet(tmp_path: Path):
    from PIL import Image

    out = contact_sheet(tmp_path / "sheet.png", ["kitchen", "windy"], frames=4, columns=3, width=32, height=24)
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 2 * 48 and img.shape[1] > 3 * 64 and img.std() > 10


# ----------------------------------------------------------------------------- motion regimes
T = 30


@functools.lru_cache(maxsize=None)
def _test_view(name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The test camera over the default sequence: images [T, H, W, 3] (8-bit values), coverage
    [T, H, W] per surface and flame glow [T, H, W]."""
    _, test = cameras(12, 96, 72)
    views = render_frames(name, [test], T)
    img = torch.from_numpy(np.stack([to_uint8(v.rgb[0]) for v in views])).float() / 255
    names = {n for v in views for n in v.names}
    cov = {n: torch.stack([v.coverage(n)[0] for v in views]) for n in names}
    ss = views[0].ss
    glow = torch.stack([v.glow[0].reshape(72, ss, 96, ss).mean((1, 3)) for v in views])
    return img, cov, glow


def _union(cov: dict[str, torch.Tensor], names) -> torch.Tensor:
    return sum(cov.get(n, torch.zeros(T, 72, 96)) for n in names)


@pytest.mark.parametrize("name", list(SCENES))
def test_scene_has_every_motion_regime(name: str):
    spec = SCENES[name]
    img, cov, glow = _test_view(name)
    regions = spec.regions
    period = T // spec.cycles

    # (a) static background: no temporal change at all, yet fine spatial detail
    static = (_union(cov, ("room",)) == 1).all(0) & (glow == 0).all(0)
    assert static.float().mean() > 0.3
    assert (img - img[0]).abs().amax(-1)[:, static].max() == 0
    both = static[:, 1:] & static[:, :-1]
    assert (img[0, :, 1:] - img[0, :, :-1]).abs().mean(-1)[both].mean() > 0.02

    def change(names) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = _union(cov, names)
        region = (c > 0).any(0)
        steps = (img[1:] - img[:-1]).abs().mean(-1)[:, region].mean()
        total = (img[-1] - img[0]).abs().mean(-1)[region].mean()
        return region, steps, total

    # (b) slow rigid motion: small steps adding up to a large change
    rigid, rigid_step, rigid_total = change(regions["rigid"])
    assert rigid.sum() > 20 and rigid_total > 0.1
    assert rigid_step < 0.35 * rigid_total

    # (c) fast oscillation: large steps, periodic with the scene's period
    osc, osc_step, osc_total = change(regions["oscillating"])
    assert osc.sum() > 50 and osc_step > 0.6 * osc_total and osc_step > 2 * rigid_step
    core = (_union(cov, regions["oscillating"]) > 0.99).all(0)
    assert core.sum() > 10
    lag_p = (img[period:] - img[:-period]).abs().mean(-1)[:, core].mean()
    lag_half = (img[period // 2 :] - img[: -(period // 2)]).abs().mean(-1)[:, core].mean()
    assert lag_half > 0.05 and lag_p < 0.1 * lag_half

    # (d) appearance change without motion: a fixed silhouette whose colour changes
    surfaces = [n for n in regions["appearance"] if not n.startswith("flame:")]
    assert surfaces
    for n in surfaces:
        c = cov[n]
        assert (c == c[0]).all(), f"{n}: the silhouette moves"
        inside = (c == 1).all(0)
        assert inside.sum() >= 15
        assert (img - img[0]).abs().mean(-1)[:, inside].mean(1).max() > 0.15, n
    for n in regions["appearance"]:
        if n.startswith("flame:"):  # flames flicker: their glow varies strongly over time
            lit = (glow > 0.5).any(0)
            assert lit.sum() > 20 and glow[:, lit].std(0).mean() > 0.2

    # (e) topology: every listed object is absent in some frames and present in others
    for n in regions["topology"]:
        area = cov[n].sum((1, 2))
        assert (area == 0).any() and (area > 0).any(), n
