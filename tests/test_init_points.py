"""Initial points of a scene without a point cloud (moegs_bench.data.init_points), checked against
an analytic world: a textured ball (the subject) at the centre of an inward-facing rig inside a
round room whose textured wall lies beyond the rig. Its images are ray cast here in float64; the
oracle is the true surface each pixel sees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import moegs_bench.data.init_points as init_points
from moegs_bench.cameras import Camera
from moegs_bench.data import panoptic
from moegs_bench.data.init_points import ray_points, rig_focus
from moegs_bench.data.scene import Frame, Scene

W, H = 32, 24
RIG_RADIUS = 4.0
BALL_RADIUS = 1.0
WALL_RADIUS = 1.4 * RIG_RADIUS  # the far wall lies 2.4 rig radii from a camera


def dome(n: int = 5) -> list[Camera]:
    """Cameras on a circle at height -1 around the origin, all looking at the origin."""
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = (RIG_RADIUS * math.sin(a), -1.0, RIG_RADIUS * math.cos(a))
        cams.append(Camera.look_at(eye, (0.0, 0.0, 0.0), fov_x_deg=60.0, width=W, height=H, camera_id=i))
    return cams


def _rays(cam: Camera) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit world directions ``[H, W, 3]`` of the pixel centres, the camera centre, and the depth
    (camera z) per unit of distance ``[H, W]``."""
    K, R = cam.K.double(), cam.R.double()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    d_cam = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
    return d_cam @ R, cam.campos.double(), d_cam[..., 2]


def world_colour(p: torch.Tensor) -> torch.Tensor:
    """A smooth texture on every surface: ``[..., 3]`` in [0.1, 0.9]."""
    return 0.5 + 0.4 * torch.stack([torch.sin(2.3 * p[..., 0] + 1.0), torch.sin(1.7 * p[..., 1] + 2.0 * p[..., 2]),
                                    torch.cos(1.9 * p[..., 2] - p[..., 0])], -1)


def cast(cam: Camera, *, room: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The image ``[H, W, 3]`` (white where nothing is hit) and the true depth ``[H, W]`` (inf)."""
    d, o, zfac = _rays(cam)
    b = (o * d).sum(-1)  # ball: |o + s d| = r
    disc = b ** 2 - (o @ o - BALL_RADIUS ** 2)
    s_ball = torch.where(disc > 0, -b - disc.clamp_min(0).sqrt(), torch.full_like(b, math.inf))
    a2 = d[..., 0] ** 2 + d[..., 2] ** 2  # wall: x^2 + z^2 = R^2 (a vertical cylinder)
    b2 = 2 * (o[0] * d[..., 0] + o[2] * d[..., 2])
    c2 = o[0] ** 2 + o[2] ** 2 - WALL_RADIUS ** 2
    s_wall = (-b2 + (b2 ** 2 - 4 * a2 * c2).sqrt()) / (2 * a2)
    s = torch.minimum(s_ball, s_wall) if room else s_ball
    hit = o + s[..., None].clamp(max=1e6) * d
    img = torch.where(torch.isfinite(s)[..., None], world_colour(hit), torch.ones(3, dtype=torch.float64))
    return img.float(), s * zfac


def surface_distance(x: torch.Tensor) -> torch.Tensor:
    """``[N]`` distance of points to the nearest surface (ball or wall)."""
    x = x.double()
    ball = (x.norm(dim=-1) - BALL_RADIUS).abs()
    wall = (x[:, [0, 2]].norm(dim=-1) - WALL_RADIUS).abs()
    return torch.minimum(ball, wall)


def test_rig_focus_is_the_point_the_axes_meet():
    focus = rig_focus(dome())
    assert focus is not None and float(focus.norm()) < 1e-6
    parallel = [Camera.look_at((x, 0.0, 0.0), (x, 0.0, 5.0), fov_x_deg=60.0, width=W, height=H, camera_id=i)
                for i, x in enumerate((-0.5, 0.0, 0.5))]
    assert rig_focus(parallel) is None  # a forward-facing rig: no common point
    diverging = [Camera.look_at((0.0, 0.0, 0.0), (math.sin(a), 0.0, math.cos(a)), fov_x_deg=60.0, width=W, height=H,
                                camera_id=i) for i, a in enumerate((0.0, 2.0, 4.0))]
    assert rig_focus(diverging) is None  # the axes meet behind the cameras


def test_points_lie_on_the_surfaces_the_cameras_see_out_to_the_walls():
    """Every pixel block of every camera has points on the surface it sees (the ball, or the wall
    beyond the rig), and the agreement between cameras puts most points on surfaces, several times
    more than the unfiltered candidates (which a box around the centre would not even reach)."""
    cams = dome()
    casts = [cast(c) for c in cams]
    xyz, rgb, how = ray_points(cams, [img for img, _ in casts], 8_000, seed=3)
    assert xyz.shape == (8_000, 3) and rgb.shape == (8_000, 3) and "best of 32 depths" in how
    block = 8
    for cam, (_, depth_true) in zip(cams, casts):
        uv, depth = cam.project(xyz)
        inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        u, v = uv[inside, 0].long(), uv[inside, 1].long()
        on_surface = (depth[inside].double() - depth_true[v, u]).abs() < 0.1 * depth_true[v, u]
        for bv in range(0, H, block):
            for bu in range(0, W, block):
                cell = (u >= bu) & (u < bu + block) & (v >= bv) & (v < bv + block)
                assert int((cell & on_surface).sum()) > 0, (cam.camera_id, bu, bv)
    near = surface_distance(xyz) < 0.2
    wall = (xyz[:, [0, 2]].double().norm(dim=-1) - WALL_RADIUS).abs() < 0.2
    assert float(near.float().mean()) > 0.3 and int(wall.sum()) > 500
    original = init_points.DEPTH_SAMPLES
    try:
        init_points.DEPTH_SAMPLES = 1  # one random depth per ray: no agreement asked
        raw, _, _ = ray_points(cams, [img for img, _ in casts], 8_000, seed=3)
    finally:
        init_points.DEPTH_SAMPLES = original
    assert float(near.float().mean()) > 3 * float((surface_distance(raw) < 0.2).float().mean())


def test_each_point_has_the_colour_of_a_pixel_it_projects_to():
    cams = dome(3)
    images = [cast(c)[0] for c in cams]
    xyz, rgb, _ = ray_points(cams, images, 600, seed=0)
    for p, c in zip(xyz, rgb):
        best = math.inf
        for cam, img in zip(cams, images):
            uv, depth = cam.project(p[None])
            u, v = int(uv[0, 0]), int(uv[0, 1])
            if float(depth) > 0 and 0 <= u < W and 0 <= v < H:
                best = min(best, float((img[v, u] - c).abs().max()))
        assert best < 1e-6  # its own camera's pixel


def test_a_composited_background_is_not_sampled():
    """D-NeRF-style renders over white: rays of white pixels cross empty space, so no point comes
    from them; the points gather on the ball."""
    cams = dome(6)
    images = [cast(c, room=False)[0] for c in cams]
    xyz, rgb, _ = ray_points(cams, images, 3_000, seed=2, background=(1.0, 1.0, 1.0))
    assert float(rgb.max(-1).values.max()) <= 0.9 + 1e-6  # no white: the texture stays in [0.1, 0.9]
    assert float(((xyz.double().norm(dim=-1) - BALL_RADIUS).abs() < 0.2).float().mean()) > 0.5


def test_depth_bounds_are_sampled_uniformly_in_disparity():
    """One forward-looking camera with bounds [2, 50]: no other camera to compare with, so every
    candidate is as good as any and the kept depths keep their distribution."""
    cam = Camera.look_at((0.0, 0.0, 0.0), (0.0, 0.0, 5.0), fov_x_deg=60.0, width=W, height=H, camera_id=0)
    img = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0))
    xyz, _, how = ray_points([cam], [img], 4000, seed=1, depth_range=(2.0, 50.0))
    assert "depth bounds" in how
    z = xyz[:, 2].double()  # the camera looks along +z from z = 0: depth = z
    assert float(z.min()) >= 2.0 - 1e-4 and float(z.max()) <= 50.0 + 1e-3
    assert abs(float((1 / z).mean()) - (1 / 2 + 1 / 50) / 2) < 0.01  # uniform in disparity: its mean
    parallel = [Camera.look_at((x, 0.0, 0.0), (x, 0.0, 5.0), fov_x_deg=60.0, width=W, height=H, camera_id=i)
                for i, x in enumerate((-0.5, 0.0, 0.5))]
    _, _, guess = ray_points(parallel, [img] * 3, 30, seed=1)
    assert "scale guess" in guess  # no bounds and no focus: said so


def test_deterministic_for_a_seed():
    cams = dome(3)
    images = [cast(c)[0] for c in cams]
    a = ray_points(cams, images, 500, seed=7)
    b = ray_points(cams, images, 500, seed=7)
    c = ray_points(cams, images, 500, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_scene_without_points_samples_its_training_rays(tmp_path):
    """A Dynamic3DGaussians capture without init_pt_cld.npz: Scene's points come from the training
    cameras' first frames, none from the held-out camera's images."""
    cams = dome(4)
    frames, images = [], []
    for t in range(2):
        for cam in cams:
            frames.append(Frame(camera=cam, frame=t, key=f"cam{cam.camera_id:02d}/{t:06d}"))
            img = (cast(cam)[0] * 255).round().to(torch.uint8).numpy()
            if t == 1 or cam.camera_id == 3:
                img = np.zeros_like(img)  # colours no training point may take
            images.append(img)
    panoptic.write(tmp_path / "room", frames, images, test_camera_ids={3})
    scene = Scene(panoptic.load(tmp_path / "room"))
    pts = scene.points
    assert "training rays" in pts.source and pts.xyz.shape[0] == 10_000
    assert float(pts.rgb.max(-1).values.min()) > 0.05  # first frames of cameras 0-2, never black
    lo, hi = scene.bounds
    assert bool((lo < hi).all())


def test_needs_one_image_per_camera():
    cams = dome(2)
    for images in ([cast(cams[0])[0]], []):
        with pytest.raises(ValueError):
            ray_points(cams, images, 10)
