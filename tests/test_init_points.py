"""Initial points of a scene without a point cloud (moegs_bench.data.init_points): a synthetic
inward-facing rig inside a room whose walls lie beyond the rig, checked against the analytic
ray-wall intersections; a forward-facing rig with depth bounds; pixel colours; determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moegs_bench.cameras import Camera
from moegs_bench.data import panoptic
from moegs_bench.data.init_points import FOCUS_DEPTHS, ray_points, rig_focus
from moegs_bench.data.scene import Frame, Scene

W, H = 32, 24
RIG_RADIUS = 4.0
WALL_RADIUS = 1.4 * RIG_RADIUS  # a round room around the rig: its far wall lies 2.4 rig radii away


def dome(n: int = 5) -> list[Camera]:
    """Cameras on a circle at height -1 around the origin, all looking at the origin."""
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = (RIG_RADIUS * math.sin(a), -1.0, RIG_RADIUS * math.cos(a))
        cams.append(Camera.look_at(eye, (0.0, 0.0, 0.0), fov_x_deg=60.0, width=W, height=H, camera_id=i))
    return cams


def coded_image(cam_id: int) -> torch.Tensor:
    """Red codes the camera, green and blue the pixel column and row: a colour names its ray."""
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([torch.full((H, W), cam_id / 10), (u + 0.5) / W, (v + 0.5) / H], -1)  # [H, W, 3]


def wall_depth(cam: Camera, u: float, v: float) -> float:
    """Distance along the ray of pixel (u, v) to the room's wall (a vertical cylinder)."""
    K, R = cam.K.double(), cam.R.double()
    d = R.T @ torch.tensor([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0], dtype=torch.float64)
    d = d / d.norm()
    o = cam.campos.double()
    a, b, c = float(d[0] ** 2 + d[2] ** 2), float(2 * (o[0] * d[0] + o[2] * d[2])), float(o[0] ** 2 + o[2] ** 2)
    s = (-b + math.sqrt(b * b - 4 * a * (c - WALL_RADIUS ** 2))) / (2 * a)  # [distance along the unit ray]
    return s * float((R @ d)[2])  # as a camera-space depth


def test_rig_focus_is_the_point_the_axes_meet():
    focus = rig_focus(dome())
    assert focus is not None and float(focus.norm()) < 1e-6
    parallel = [Camera.look_at((x, 0.0, 0.0), (x, 0.0, 5.0), fov_x_deg=60.0, width=W, height=H, camera_id=i)
                for i, x in enumerate((-0.5, 0.0, 0.5))]
    assert rig_focus(parallel) is None  # a forward-facing rig: no common point
    diverging = [Camera.look_at((0.0, 0.0, 0.0), (math.sin(a), 0.0, math.cos(a)), fov_x_deg=60.0, width=W, height=H,
                                camera_id=i) for i, a in enumerate((0.0, 2.0, 4.0))]
    assert rig_focus(diverging) is None  # the axes meet behind the cameras


def test_points_cover_every_view_out_to_the_walls():
    """Every pixel block of every camera has points on its rays from the subject (the rig's
    centre) out to the wall beyond the rig, which a box around the centre does not reach."""
    cams = dome()
    xyz, rgb, how = ray_points(cams, [coded_image(c.camera_id) for c in cams], 20_000, seed=3)
    assert xyz.shape == (20_000, 3) and rgb.shape == (20_000, 3) and "focus" in how
    block = 8
    for cam in cams:
        uv, depth = cam.project(xyz)
        inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        for bv in range(0, H, block):
            for bu in range(0, W, block):
                sel = inside & (uv[:, 0] >= bu) & (uv[:, 0] < bu + block) & (uv[:, 1] >= bv) & (uv[:, 1] < bv + block)
                wall = wall_depth(cam, bu + block / 2, bv + block / 2)
                near_centre = sel & ((depth - RIG_RADIUS).abs() < 0.25 * RIG_RADIUS)
                near_wall = sel & ((depth - wall).abs() < 0.15 * wall)
                assert int(near_centre.sum()) > 0, (cam.camera_id, bu, bv)
                assert int(near_wall.sum()) > 0, (cam.camera_id, bu, bv, wall)
    # and nothing beyond the documented range of any camera's own rays
    dist = torch.cdist(xyz.double(), torch.stack([c.campos.double() for c in cams])).min(1).values
    assert float(dist.max()) <= FOCUS_DEPTHS[1] * math.hypot(RIG_RADIUS, 1.0) * 1.5


def test_each_point_has_the_colour_of_its_pixel():
    cams = dome(3)
    xyz, rgb, _ = ray_points(cams, [coded_image(c.camera_id) for c in cams], 600, seed=0)
    for p, c in zip(xyz, rgb):
        cam = cams[round(float(c[0]) * 10)]  # the camera the colour names
        uv, depth = cam.project(p[None])
        assert float(depth) > 0
        assert abs(float(uv[0, 0]) - float(c[1]) * W) <= 0.5 + 1e-3  # the pixel (column, row) it came from
        assert abs(float(uv[0, 1]) - float(c[2]) * H) <= 0.5 + 1e-3


def test_forward_facing_rig_samples_its_depth_bounds_uniformly_in_disparity():
    cams = [Camera.look_at((x, 0.0, 0.0), (x, 0.0, 5.0), fov_x_deg=60.0, width=W, height=H, camera_id=i)
            for i, x in enumerate((-0.5, 0.0, 0.5))]
    images = [coded_image(c.camera_id) for c in cams]
    xyz, _, how = ray_points(cams, images, 3000, seed=1, depth_range=(2.0, 50.0))
    assert "depth bounds" in how
    z = xyz[:, 2].double()  # every camera looks along +z from z = 0: depth = z
    assert float(z.min()) >= 2.0 - 1e-4 and float(z.max()) <= 50.0 + 1e-3
    disparity = 1 / z
    assert abs(float(disparity.mean()) - (1 / 2 + 1 / 50) / 2) < 0.01  # uniform in disparity: its mean
    _, _, guess = ray_points(cams, images, 30, seed=1)
    assert "scale guess" in guess  # no bounds and no focus: said so


def test_deterministic_for_a_seed():
    cams = dome(3)
    images = [coded_image(c.camera_id) for c in cams]
    a = ray_points(cams, images, 500, seed=7)
    b = ray_points(cams, images, 500, seed=7)
    c = ray_points(cams, images, 500, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_scene_without_points_samples_its_training_rays(tmp_path):
    """A Dynamic3DGaussians capture without init_pt_cld.npz: Scene's points lie on the training
    cameras' rays with their first frame's colours, none on the held-out camera's image alone."""
    cams = dome(4)
    frames, images = [], []
    for t in range(2):
        for cam in cams:
            frames.append(Frame(camera=cam, frame=t, key=f"cam{cam.camera_id:02d}/{t:06d}"))
            img = (coded_image(cam.camera_id) * 255).round().to(torch.uint8).numpy()
            images.append(img if t == 0 else np.zeros_like(img))  # only the first frame's colours are used
    panoptic.write(tmp_path / "room", frames, images, test_camera_ids={3})
    scene = Scene(panoptic.load(tmp_path / "room"))
    pts = scene.points
    assert "training rays" in pts.source and pts.xyz.shape[0] == 10_000
    codes = (pts.rgb[:, 0] * 10).round().long()
    assert set(codes.tolist()) == {0, 1, 2}  # the three training cameras, not camera 3
    assert float(pts.rgb[:, 1:].min()) > 0  # first-frame colours (the second frames are black)
    lo, hi = scene.bounds
    assert bool((lo < hi).all())


def test_needs_one_image_per_camera():
    cams = dome(2)
    for images in ([coded_image(0)], []):
        with pytest.raises(ValueError):
            ray_points(cams, images, 10)
