"""Shared checks of the dataset loader tests: known 3D points must project identically."""

from __future__ import annotations

import torch

from moegs_bench.cameras import Camera

# points around the origin, in front of every fixture camera
POINTS = torch.tensor(
    [[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [-0.4, 0.25, -0.3], [0.1, 0.4, 0.35], [-0.2, -0.3, 0.2]], dtype=torch.float64
)


def project(cam: Camera, pts: torch.Tensor = POINTS) -> torch.Tensor:
    """Pixels [P, 2] of world points, computed here in float64 (not with Camera.project)."""
    c = pts.double() @ cam.R.double().T + cam.t.double()
    uv = (c / c[:, 2:3]) @ cam.K.double().T
    return uv[:, :2]


def close(a, b, atol: float) -> None:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=atol), (a, b)


def assert_same_projection(loaded: Camera, known: Camera) -> None:
    """Same image size, same pixels (< 1e-3 px) and depths for POINTS."""
    assert (loaded.width, loaded.height) == (known.width, known.height)
    close(project(loaded), project(known), 1e-3)
    _, d_l = loaded.project(POINTS)
    _, d_k = known.project(POINTS)
    assert (d_k > 0).all()
    close(d_l, d_k, 1e-4)
