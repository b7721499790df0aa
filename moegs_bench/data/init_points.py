"""Initial points for a scene that ships no point cloud: samples along the training cameras' rays.

3DGS (Kerbl et al. 2023) starts from SfM points; 4DGaussians and Dynamic 3D Gaussians fall back
to random points in a box (hustvl/4DGaussians ``scene/dataset_readers.py``, D-NeRF: 100k points
in [-1.3, 1.3]^3). A box has to be sized by hand: too small, and the walls and floor of a real
room (which an inward-facing rig sees behind its subject) can only be drawn by a few huge
Gaussians; too large, and most points lie where no camera looks. Here the points are put where
the cameras look instead:

- every training camera gets an equal share of the points; each point lies on the ray of a random
  pixel of that camera's first training image and takes that pixel's colour (so every point is
  seen by at least one training view, in the colour that view shows);
- its depth along the ray is uniform in *disparity* between the dataset's ``[near, far]`` when
  the dataset knows them (LLFF ``poses_bounds``: N3V, Technicolor), else uniform in depth
  between ``0.3 d`` and ``3 d``, ``d`` the distance from the camera to the rig's *focus* (the
  point nearest to every optical axis, as in inward-facing domes and studios): the subject near
  the focus and walls up to twice the rig's radius beyond it are covered;
- when the optical axes have no common point in front of every camera (a forward-facing rig
  without depth bounds), ``d`` is the spread of the camera centres times 10 (a scale guess, named
  in the point cloud's ``source``).

Deterministic: a seeded generator draws the pixels and depths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from moegs_bench.cameras import Camera

#: depth range of the samples, as multiples of the distance from a camera to the rig's focus
FOCUS_DEPTHS = (0.3, 3.0)
#: forward-facing rig without bounds: d = this many times the spread of the camera centres
FORWARD_SCALE = 10.0


def rig_focus(cameras: Sequence[Camera]) -> Tensor | None:
    """``[3]`` the least-squares point nearest to every camera's optical axis, or None when it
    does not lie in front of every camera (parallel or diverging axes: a forward-facing rig)."""
    centres = torch.stack([c.campos.double().cpu() for c in cameras])  # [C, 3]
    dirs = torch.stack([c.R.double().cpu()[2] for c in cameras])  # [C, 3] optical axes (world)
    if len(cameras) < 2:
        return None
    eye = torch.eye(3, dtype=torch.float64)
    proj = eye - dirs[:, :, None] * dirs[:, None, :]  # [C, 3, 3] projections off each axis
    A, b = proj.sum(0), (proj @ centres[:, :, None]).sum(0)[:, 0]
    if float(torch.linalg.eigvalsh(A)[0]) < 1e-6 * len(cameras):  # axes (nearly) parallel
        return None
    focus = torch.linalg.solve(A, b)  # [3]
    depth = ((focus - centres) * dirs).sum(-1)  # [C]
    return focus if bool((depth > 0).all()) else None


def ray_points(cameras: Sequence[Camera], images: Sequence[Tensor], n: int, *, seed: int = 0,
               depth_range: tuple[float, float] | None = None) -> tuple[Tensor, Tensor, str]:
    """``n`` points along the rays of ``cameras`` (one image ``[H, W, 3]`` in [0, 1] each, at the
    camera's resolution): ``(xyz [n, 3], rgb [n, 3], description)``; see the module doc."""
    if not cameras or len(cameras) != len(images):
        raise ValueError("ray_points needs one image per camera and at least one camera")
    g = torch.Generator().manual_seed(seed)
    focus = rig_focus(cameras)
    if depth_range is not None:
        near, far = float(depth_range[0]), float(depth_range[1])
        how = f"disparity uniform in the dataset's depth bounds [{near:.3g}, {far:.3g}]"
    elif focus is not None:
        how = f"depth uniform in [{FOCUS_DEPTHS[0]:g}, {FOCUS_DEPTHS[1]:g}] x the distance to the rig's focus"
    else:
        how = (f"depth uniform in [{FOCUS_DEPTHS[0]:g}, {FOCUS_DEPTHS[1]:g}] x {FORWARD_SCALE:g} x the spread of "
               "the camera centres (forward-facing rig, no depth bounds: a scale guess)")
    counts = [n // len(cameras) + (i < n % len(cameras)) for i in range(len(cameras))]
    xyz, rgb = [], []
    for cam, img, m in zip(cameras, images, counts):
        h, w = img.shape[:2]
        u = torch.rand(m, generator=g, dtype=torch.float64) * w  # [m] pixel coordinates (continuous)
        v = torch.rand(m, generator=g, dtype=torch.float64) * h
        r = torch.rand(m, generator=g, dtype=torch.float64)
        centre = cam.campos.double().cpu()
        if depth_range is not None:
            z = 1.0 / (1.0 / near + r * (1.0 / far - 1.0 / near))  # [m] disparity uniform
        else:
            if focus is not None:
                d = float(((focus - centre) * cam.R.double().cpu()[2]).sum())
            else:
                centres = torch.stack([c.campos.double().cpu() for c in cameras])
                d = FORWARD_SCALE * max(float((centres - centres.mean(0)).norm(dim=1).max()), 1e-3)
            z = d * (FOCUS_DEPTHS[0] + r * (FOCUS_DEPTHS[1] - FOCUS_DEPTHS[0]))  # [m]
        K = cam.K.double().cpu()
        x_cam = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)  # [m, 3]
        xyz.append(centre + x_cam @ cam.R.double().cpu())  # R^T x, rows  # [m, 3]
        px = img[v.long().clamp(0, h - 1), u.long().clamp(0, w - 1)]  # [m, 3]
        rgb.append(px.float())
    return torch.cat(xyz).float(), torch.cat(rgb).clamp(0, 1), how
