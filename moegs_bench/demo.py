"""A small generated scene for demos, smoke tests and benchmarks: no files, deterministic."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState

# World is OpenCV-style: y points down, the ground is the plane y = 0, objects stand at y < 0.
_GROUND_HALF = 2.0  # the ground is the square [-2, 2] x [-2, 2] in (x, z)
_TILE = 0.5  # checkerboard tile size
_LIGHT = (-0.4, -1.0, -0.6)  # direction towards the light
# (centre, radius, rgb)
_SPHERES = [((-0.8, -0.5, 0.2), 0.5, (0.85, 0.15, 0.12)), ((0.9, -0.35, -0.3), 0.35, (0.15, 0.3, 0.9))]
# (centre, half sizes, rotation about y in degrees, rgb)
_BOXES = [
    ((0.3, -0.4, 0.8), (0.35, 0.4, 0.35), 25.0, (0.2, 0.75, 0.25)),
    ((-0.1, -0.6, -0.8), (0.15, 0.6, 0.15), -15.0, (0.95, 0.8, 0.1)),
]


def make_demo_scene(
    n: int = 20000,
    *,
    seed: int = 0,
    width: int = 128,
    height: int = 96,
    n_cameras: int = 4,
    channels: int = 3,
) -> tuple[GaussianState, list[Camera]]:
    """Two spheres and two boxes on a checkerboard ground, as ``n`` flat Gaussians on their
    surfaces (sized to the local point density so surfaces look closed), and ``n_cameras``
    cameras on a 120 degree arc looking at the scene.

    ``colors`` is ``[n, channels]``: the first (up to) 3 channels are shaded RGB, further channels
    are per-object constant features in [0, 1].
    """
    if n < 10 or n_cameras < 1 or channels < 1:
        raise InputError(
            f"make_demo_scene: need n >= 10, n_cameras >= 1, channels >= 1; got {n}, {n_cameras}, {channels}"
        )
    g = torch.Generator().manual_seed(seed)
    spheres = [(torch.tensor(c), r, torch.tensor(rgb)) for c, r, rgb in _SPHERES]
    boxes = [(torch.tensor(c), torch.tensor(h), a, torch.tensor(rgb)) for c, h, a, rgb in _BOXES]
    areas = [4 * math.pi * r**2 for _, r, _ in spheres]
    areas += [8 * float(h[0] * h[1] + h[1] * h[2] + h[0] * h[2]) for _, h, _, _ in boxes]
    counts = _split(round(0.75 * n), areas)
    counts.append(n - sum(counts))  # ground gets the rest (about a quarter)
    areas.append((2 * _GROUND_HALF) ** 2)

    parts: list[tuple[Tensor, Tensor, Tensor]] = []  # (points, normals, rgb) per object
    for (c, r, rgb), m in zip(spheres, counts):
        nrm = torch.randn(m, 3, generator=g)
        nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        parts.append((c + r * nrm, nrm, rgb.expand(m, 3)))
    for (c, h, deg, rgb), m in zip(boxes, counts[len(spheres):]):
        pts, nrm = _box_surface(h, m, g)
        rot = _rot_y(deg)
        parts.append((c + pts @ rot.T, nrm @ rot.T, rgb.expand(m, 3)))
    m = counts[-1]
    xz = (torch.rand(m, 2, generator=g) * 2 - 1) * _GROUND_HALF
    pts = torch.stack([xz[:, 0], torch.zeros(m), xz[:, 1]], dim=-1)
    check = (torch.floor(xz[:, 0] / _TILE) + torch.floor(xz[:, 1] / _TILE)) % 2
    ground_rgb = torch.tensor([0.3, 0.3, 0.33]) + check[:, None] * torch.tensor([0.45, 0.45, 0.4])
    parts.append((pts, torch.tensor([0.0, -1.0, 0.0]).expand(m, 3), ground_rgb))

    means = torch.cat([p for p, _, _ in parts])
    normals = torch.cat([nr for _, nr, _ in parts])
    light = torch.tensor(_LIGHT) / torch.tensor(_LIGHT).norm()
    shade = 0.45 + 0.55 * (normals @ light).clamp_min(0.0)
    rgb = torch.cat([c for _, _, c in parts]) * shade[:, None] + 0.03 * (torch.rand(n, 3, generator=g) - 0.5)
    colors = rgb.clamp(0.0, 1.0)[:, :channels]
    if channels > 3:
        feats = torch.rand(len(parts), channels - 3, generator=g)
        obj = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(counts))
        colors = torch.cat([colors, feats[obj]], dim=-1)

    # Flat disks tangent to the surface: sigma ~ 0.8 x the mean point spacing of each object.
    spacing = torch.tensor([math.sqrt(a / max(k, 1)) for a, k in zip(areas, counts)])
    spacing = torch.repeat_interleave(spacing, torch.tensor(counts))
    sigma = 0.8 * spacing * torch.exp(0.15 * torch.randn(n, generator=g))
    scales = torch.stack([sigma, sigma, 0.1 * sigma], dim=-1)
    state = GaussianState(
        means=means,
        quats=_quat_z_to(normals),
        scales=scales,
        opacities=0.85 + 0.13 * torch.rand(n, generator=g),
        colors=colors.contiguous(),
    )
    arc = 120.0 if n_cameras > 1 else 0.0
    cams = Camera.orbit(
        n_cameras, radius=3.2, height_offset=1.2, target=(0.0, -0.4, 0.0), width=width, height=height,
        fov_x_deg=60.0, arc_deg=arc, start_deg=-arc / 2,
    )  # fmt: skip
    return state, cams


def _split(total: int, weights: list[float]) -> list[int]:
    """``total`` split proportionally to ``weights`` (largest remainders), every share >= 1."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [max(1, int(x)) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: int(raw[i]) - raw[i])[: max(0, total - sum(counts))]:
        counts[i] += 1
    return counts


def _box_surface(half: Tensor, m: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``m`` points uniform on the surface of an axis-aligned box of half sizes ``half`` [3]."""
    face_area = torch.stack([half[1] * half[2], half[0] * half[2], half[0] * half[1]]).repeat(2)  # [6]: +x+y+z-x-y-z
    face = torch.multinomial(face_area, m, replacement=True, generator=g)
    axis, sign = face % 3, 1.0 - 2.0 * (face // 3).float()
    pts = (torch.rand(m, 3, generator=g) * 2 - 1) * half
    rows = torch.arange(m)
    pts[rows, axis] = sign * half[axis]
    nrm = torch.zeros(m, 3)
    nrm[rows, axis] = sign
    return pts, nrm


def _rot_y(deg: float) -> Tensor:  # [3, 3]
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _quat_z_to(normals: Tensor) -> Tensor:
    """Unit quats (w, x, y, z) [N, 4] rotating the local z axis onto unit ``normals`` [N, 3]."""
    q = torch.stack([1.0 + normals[:, 2], -normals[:, 1], normals[:, 0], torch.zeros_like(normals[:, 0])], dim=-1)
    flip = q[:, 0] < 1e-6  # normal ~ -z: rotate 180 degrees about x
    q[flip] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return q / q.norm(dim=-1, keepdim=True)
