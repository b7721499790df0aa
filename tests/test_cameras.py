import dataclasses
import math

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.cameras import Camera

# Hand-built camera: fx=100, fy=80, principal point (50, 40); rotation of 90 degrees about z, t = (1, 2, 3).
K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 80.0, 40.0], [0.0, 0.0, 1.0]])
ROT = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
VIEWMAT = torch.eye(4)
VIEWMAT[:3, :3] = ROT
VIEWMAT[:3, 3] = torch.tensor([1.0, 2.0, 3.0])


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Like torch.testing.assert_close, without its slow first import (torch.distributed)."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=0, atol=atol), (actual, expected)


def hand_camera(**kw) -> Camera:
    return Camera(**{"K": K, "viewmat": VIEWMAT, "width": 100, "height": 80, **kw})


def test_projection_hand_computed():
    cam = hand_camera()
    # world (1, 0, 1) -> camera R p + t = (0, 1, 1) + (1, 2, 3) = (1, 3, 4) -> (100/4 + 50, 80*3/4 + 40)
    # world (0, 0, 0) -> camera (1, 2, 3) -> (100/3 + 50, 80*2/3 + 40)
    uv, depth = cam.project(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    close(uv, torch.tensor([[75.0, 100.0], [50 + 100 / 3, 40 + 160 / 3]]))
    close(depth, torch.tensor([4.0, 3.0]))


def test_pose_properties():
    cam = hand_camera()
    assert torch.equal(cam.R, ROT) and torch.equal(cam.t, torch.tensor([1.0, 2.0, 3.0]))
    # campos = -R^T t; R^T t = (2, -1, 3)
    close(cam.campos, torch.tensor([-2.0, 1.0, -3.0]))
    assert cam.to("cpu").K is not None and cam.to("cpu").width == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.width = 3  # type: ignore[misc]


def test_rays_identity_pose_matches_formula():
    cam = Camera(K=K, viewmat=torch.eye(4), width=4, height=3)
    origins, dirs = cam.rays()
    assert origins.shape == dirs.shape == (3, 4, 3) and dirs.dtype == torch.float32
    assert torch.equal(origins, torch.zeros(3, 4, 3))
    v, u = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    expected = torch.stack([(u + 0.5 - 50) / 100, (v + 0.5 - 40) / 80, torch.ones_like(u)], dim=-1)
    close(dirs, expected / expected.norm(dim=-1, keepdim=True))


def test_rays_reproject_to_pixel_centres():
    cam = hand_camera()
    origins, dirs = cam.rays()
    assert origins.shape == (80, 100, 3)
    close(origins, cam.campos.expand(80, 100, 3))
    close(dirs.norm(dim=-1), torch.ones(80, 100))
    uv, depth = cam.project((origins + 2.5 * dirs).reshape(-1, 3))
    v, u = torch.meshgrid(torch.arange(80.0), torch.arange(100.0), indexing="ij")
    close(uv, torch.stack([u + 0.5, v + 0.5], dim=-1).reshape(-1, 2), atol=1e-3)
    assert (depth > 0).all()


def test_look_at_identity_and_intrinsics():
    cam = Camera.look_at((0.0, 0.0, 0.0), (0.0, 0.0, 5.0), width=64, height=48, fov_x_deg=90.0)
    close(cam.viewmat, torch.eye(4))
    close(cam.K, torch.tensor([[32.0, 0.0, 32.0], [0.0, 32.0, 24.0], [0.0, 0.0, 1.0]]))


@pytest.mark.parametrize("eye", [(3.0, -2.0, 1.0), (-1.0, -0.5, -4.0), (0.2, 5.0, 0.1)])
def test_look_at_centres_target(eye):
    target = torch.tensor([0.5, -0.2, 0.3])
    cam = Camera.look_at(eye, target, width=80, height=60, fov_x_deg=50.0, time=0.25, camera_id=7)
    uv, depth = cam.project(target[None])
    close(uv[0], torch.tensor([40.0, 30.0]), atol=1e-4)
    close(depth[0], torch.dist(torch.tensor(eye), target), atol=1e-5)
    close(cam.campos, torch.tensor(eye), atol=1e-5)
    assert (cam.time, cam.camera_id) == (0.25, 7)
    # the world's up (default -y) points up in the image: smaller v
    above, _ = cam.project((target + torch.tensor([0.0, -0.1, 0.0]))[None])
    assert above[0, 1] < 30.0


def test_look_at_rejects_degenerate():
    with pytest.raises(InputError, match="coincide"):
        Camera.look_at((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), width=8, height=8)
    with pytest.raises(InputError, match="parallel"):
        Camera.look_at((0.0, 0.0, 0.0), (0.0, 3.0, 0.0), width=8, height=8)


@pytest.mark.parametrize("arc", [360.0, 90.0])
def test_orbit_cameras_see_target(arc):
    target = torch.tensor([0.2, -0.4, 0.1])
    cams = Camera.orbit(5, radius=3.0, height_offset=1.0, target=target, width=40, height=30, arc_deg=arc)
    assert [c.camera_id for c in cams] == list(range(5))
    for cam in cams:
        uv, depth = cam.project(target[None])
        close(uv[0], torch.tensor([20.0, 15.0]), atol=1e-4)
        assert depth[0] > 0
        close(cam.campos[1], target[1] - 1.0)  # raised along up = -y
        close(torch.dist(cam.campos, target), torch.tensor(math.sqrt(10.0)))
    centre = target + torch.tensor([0.0, -1.0, 0.0])
    offsets = torch.stack([c.campos for c in cams]) - centre  # [5, 3], in the xz plane
    assert offsets[0, 2] < 0 and abs(offsets[0, 0]) < 1e-5  # the first camera sits on the -z side
    step = math.radians(arc / (5 if arc == 360.0 else 4))  # a full circle leaves out its end point
    cosines = (offsets[:-1] * offsets[1:]).sum(-1) / 9.0
    close(cosines, torch.full((4,), math.cos(step)), atol=1e-5)


BAD_K = [
    ("K", torch.eye(4), r"Camera\.K.*\(4, 4\)"),
    ("K", torch.tensor([[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1.0]]), r"Camera\.K.*NaN"),
    ("K", torch.tensor([[-1.0, 0, 1], [0, 1, 1], [0, 0, 1.0]]), r"Camera\.K.*fx"),
    ("K", torch.tensor([[1.0, 0, 1], [0, 0, 1], [0, 0, 1.0]]), r"Camera\.K.*fy"),
    ("K", torch.tensor([[1.0, 0, 1], [0, 1, 1], [0, 1, 1.0]]), r"Camera\.K.*last row"),
    ("K", torch.eye(3, dtype=torch.int64), r"Camera\.K.*dtype"),
    ("viewmat", torch.eye(3), r"Camera\.viewmat.*\(3, 3\)"),
    ("viewmat", torch.diag(torch.tensor([1.0, 1.0, float("inf"), 1.0])), r"Camera\.viewmat.*NaN/Inf"),
    ("viewmat", torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])), r"Camera\.viewmat.*orthonormal"),
    ("viewmat", torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0])), r"Camera\.viewmat.*det"),
    ("viewmat", torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), r"Camera\.viewmat.*last row"),
    ("width", 0, r"Camera\.width"),
    ("height", 48.0, r"Camera\.height"),
    ("time", 1.5, r"Camera\.time"),
    ("time", float("nan"), r"Camera\.time"),
    ("near", 0.0, r"Camera\.near"),
    ("far", 0.001, r"Camera\.near/far"),
    ("camera_id", "a", r"Camera\.camera_id"),
]


@pytest.mark.parametrize("field, value, message", BAD_K)
def test_validation_errors_name_the_field(field, value, message):
    with pytest.raises(InputError, match=message):
        hand_camera(**{field: value})


def test_validation_tolerates_float32_rounding():
    eps = torch.eye(4)
    eps[0, 1] = 5e-5  # within the 1e-4 orthonormality tolerance
    assert hand_camera(viewmat=eps).width == 100
