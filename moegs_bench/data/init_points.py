"""Initial points for a scene that ships no point cloud: samples along the training cameras' rays,
kept where the cameras agree.

3DGS (Kerbl et al. 2023) starts from SfM points; 4DGaussians and Dynamic 3D Gaussians fall back
to random points in a box (hustvl/4DGaussians ``scene/dataset_readers.py``, D-NeRF: 100k points
in [-1.3, 1.3]^3). A box has to be sized by hand: too small, and the walls and floor of a real
room (which an inward-facing rig sees behind its subject) can only be drawn by a few huge
Gaussians; too large, and most points lie where no camera looks. Here the points are put where
the cameras look instead:

- every training camera gets an equal share of the points; each candidate lies on the ray of a
  random pixel of that camera's first training image and takes that pixel's colour (so every
  point is seen by at least one training view, in the colour that view shows). Where the images
  are renders composited over a known background (D-NeRF), pixels of that colour are skipped: a
  ray that sees the background crosses empty space;
- a candidate's depth along the ray is uniform in *disparity* between the dataset's
  ``[near, far]`` when the dataset knows them (LLFF ``poses_bounds``: N3V), else uniform in depth
  between ``0.3 d`` and ``3 d``, ``d`` the distance from the camera to the rig's *focus* (the point
  nearest to every optical axis, as in inward-facing domes and studios): the subject near the
  focus and walls up to twice the rig's radius beyond it are covered. When the optical axes have
  no common point in front of every camera (a forward-facing rig without depth bounds), ``d`` is
  the spread of the camera centres times 10 (a scale guess, named in the description);
- a cheap multi-view estimate (a plane sweep per ray) picks each point's depth among
  :data:`DEPTH_SAMPLES` stratified candidates in that range: the one whose colour best agrees with
  the other cameras that see it (the smallest absolute colour difference to the pixel it projects
  to in up to :data:`K` cameras nearest in viewing direction: one agreeing view is enough, as the
  others may be occluded). A candidate no other camera sees cannot be checked and scores
  :data:`UNCHECKED_SCORE`, between a confirmed and a contradicted one; among equals the choice is
  random.

Deterministic: a seeded generator draws the pixels and depths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from moegs_bench.cameras import Camera

#: depth range of the samples, as multiples of the distance from a camera to the rig's focus
FOCUS_DEPTHS = (0.3, 3.0)
#: forward-facing rig without bounds: d = this many times the spread of the camera centres
FORWARD_SCALE = 10.0
#: depths tried along each ray
DEPTH_SAMPLES = 32
#: other cameras a candidate's colour is compared with
K = 8
#: the score of a candidate no other camera sees (a colour difference, in [0, 1])
UNCHECKED_SCORE = 0.2
#: a pixel within this of a composited background colour shows the background
BACKGROUND_TOLERANCE = 2.5 / 255


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
               depth_range: tuple[float, float] | None = None,
               background: Sequence[float] | None = None) -> tuple[Tensor, Tensor, str]:
    """``n`` points along the rays of ``cameras`` (one image ``[H, W, 3]`` in [0, 1] each, at the
    camera's resolution): ``(xyz [n, 3], rgb [n, 3], description)``; ``background``: the colour
    the images were composited over, if they were (its pixels are not sampled). See the module doc."""
    if not cameras or len(cameras) != len(images):
        raise ValueError("ray_points needs one image per camera and at least one camera")
    g = torch.Generator().manual_seed(seed)
    focus = rig_focus(cameras)
    centres = torch.stack([c.campos.double().cpu() for c in cameras])  # [C, 3]
    if depth_range is not None:
        how = f"disparity uniform in the dataset's depth bounds [{depth_range[0]:.3g}, {depth_range[1]:.3g}]"
    elif focus is not None:
        how = f"depth uniform in [{FOCUS_DEPTHS[0]:g}, {FOCUS_DEPTHS[1]:g}] x the distance to the rig's focus"
    else:
        how = (f"depth uniform in [{FOCUS_DEPTHS[0]:g}, {FOCUS_DEPTHS[1]:g}] x {FORWARD_SCALE:g} x the spread of "
               "the camera centres (forward-facing rig, no depth bounds: a scale guess)")
    counts = [n // len(cameras) + (i < n % len(cameras)) for i in range(len(cameras))]
    xyz, rgb = [], []
    for i, (cam, img, m) in enumerate(zip(cameras, images, counts)):
        if m == 0:
            continue
        rays, colour = _candidates(cam, img, m, g, focus, centres, depth_range, background)  # [m, D, 3], [m, 3]
        others = _neighbours(cameras, i)
        score = _consistency(rays.reshape(-1, 3), colour.repeat_interleave(rays.shape[1], 0),
                             [cameras[j] for j in others], [images[j] for j in others]).reshape(m, -1)  # [m, D]
        score = score + 1e-6 * torch.rand(score.shape, generator=g, dtype=score.dtype)  # equals: a random one
        best = score.argmin(1)  # [m]
        xyz.append(rays[torch.arange(m), best])
        rgb.append(colour)
    if len(cameras) > 1 and DEPTH_SAMPLES > 1:
        how += f"; each point at the best of {DEPTH_SAMPLES} depths by the other cameras' colours"
    return torch.cat(xyz).float(), torch.cat(rgb).float().clamp(0, 1), how


def _candidates(cam: Camera, img: Tensor, m: int, g: torch.Generator, focus: Tensor | None, centres: Tensor,
                depth_range: tuple[float, float] | None,
                background: Sequence[float] | None) -> tuple[Tensor, Tensor]:
    """``m`` random pixel rays of ``cam`` with :data:`DEPTH_SAMPLES` stratified depths each:
    ``(xyz [m, D, 3] float64, rgb [m, 3])``."""
    h, w = img.shape[:2]
    pixels = torch.arange(h * w)
    if background is not None:  # rays that see a composited background cross empty space
        bg = torch.tensor(list(background), dtype=img.dtype)
        shows = ((img.reshape(-1, 3) - bg).abs().max(-1).values > BACKGROUND_TOLERANCE)  # [H*W]
        if bool(shows.any()):
            pixels = pixels[shows]
    pick = pixels[torch.randint(len(pixels), (m,), generator=g)]  # [m]
    u = (pick % w).double() + torch.rand(m, generator=g, dtype=torch.float64)  # [m] continuous pixel coords
    v = (pick // w).double() + torch.rand(m, generator=g, dtype=torch.float64)
    n_d = DEPTH_SAMPLES
    r = (torch.arange(n_d, dtype=torch.float64) + torch.rand(m, n_d, generator=g, dtype=torch.float64)) / n_d  # [m, D]
    centre = cam.campos.double().cpu()
    if depth_range is not None:
        near, far = float(depth_range[0]), float(depth_range[1])
        z = 1.0 / (1.0 / near + r * (1.0 / far - 1.0 / near))  # [m, D] uniform in disparity
    else:
        if focus is not None:
            d = float(((focus - centre) * cam.R.double().cpu()[2]).sum())
        else:
            d = FORWARD_SCALE * max(float((centres - centres.mean(0)).norm(dim=1).max()), 1e-3)
        z = d * (FOCUS_DEPTHS[0] + r * (FOCUS_DEPTHS[1] - FOCUS_DEPTHS[0]))  # [m, D]
    K_ = cam.K.double().cpu()
    dirs = torch.stack([(u - K_[0, 2]) / K_[0, 0], (v - K_[1, 2]) / K_[1, 1], torch.ones_like(u)], -1)  # [m, 3]
    x_cam = dirs[:, None, :] * z[..., None]  # [m, D, 3]
    xyz = centre + x_cam @ cam.R.double().cpu()  # R^T x for each row  # [m, D, 3]
    return xyz, img.reshape(-1, 3)[pick].double()


def _neighbours(cameras: Sequence[Camera], i: int) -> list[int]:
    """Up to :data:`K` other cameras, those whose optical axes are closest to camera ``i``'s."""
    axes = torch.stack([c.R.double().cpu()[2] for c in cameras])  # [C, 3]
    cos = axes @ axes[i]  # [C]
    cos[i] = -math.inf
    order = torch.argsort(-cos, stable=True)
    return [int(j) for j in order[: min(K, len(cameras) - 1)]]


def _consistency(xyz: Tensor, colour: Tensor, cameras: Sequence[Camera], images: Sequence[Tensor]) -> Tensor:
    """``[M]`` how badly the candidates' colours agree with the other ``cameras`` (lower: better)."""
    diffs = []
    for cam, img in zip(cameras, images):
        h, w = img.shape[:2]
        x_cam = (xyz - cam.campos.double().cpu()) @ cam.R.double().cpu().T  # [M, 3]
        z = x_cam[:, 2]
        K_ = cam.K.double().cpu()
        safe = z.clamp_min(1e-9)
        u = K_[0, 0] * x_cam[:, 0] / safe + K_[0, 2]  # [M]
        v = K_[1, 1] * x_cam[:, 1] / safe + K_[1, 2]
        seen = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)  # [M]
        px = img[v.long().clamp(0, h - 1), u.long().clamp(0, w - 1)].double()  # [M, 3]
        d = (px - colour).abs().mean(-1)  # [M]
        diffs.append(torch.where(seen, d, torch.full_like(d, math.inf)))
    if not diffs:
        return torch.full((xyz.shape[0],), UNCHECKED_SCORE, dtype=torch.float64)
    d = torch.stack(diffs, -1).min(-1).values  # [M] the best agreeing view; inf: seen by none
    return torch.where(torch.isfinite(d), d, torch.full_like(d, UNCHECKED_SCORE))
