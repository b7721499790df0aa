"""Shared scenes and helpers of the rasterizer tests (random Gaussians, a tilted camera)."""

from __future__ import annotations

import math

import torch

W, H = 40, 32


def camera(width=W, height=H, fov_deg=60.0):
    f = width / (2 * math.tan(math.radians(fov_deg) / 2))
    K = torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.2], [0, 0, 1.0]])
    # a slightly rotated camera looking down +z at the origin from z = -3
    ang = 0.1
    R = torch.tensor([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    viewmat = torch.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = torch.tensor([0.05, -0.02, 3.0])
    return viewmat, K


def scene(kind: str, n: int = 150, channels: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.02), math.log(0.15), generator=g))
    opac = torch.empty(n).uniform_(0.1, 0.95, generator=g)
    colors = torch.rand(n, channels, generator=g)
    if kind == "behind":  # a third behind the camera or inside the near plane
        means[: n // 3, 2] = torch.empty(n // 3).uniform_(-6.0, -2.995, generator=g)
    elif kind == "outside":  # many far outside the image, some straddling its border
        means[: n // 2, 0] = torch.empty(n // 2).uniform_(-6.0, 6.0, generator=g)
    elif kind == "thin_large":
        scales[: n // 4, 0] = 1e-4  # needles and discs
        scales[n // 4 : n // 3] = torch.empty(n // 3 - n // 4, 3).uniform_(1.0, 3.0, generator=g)  # huge
    elif kind == "opaque":  # deep stacks of nearly opaque Gaussians: transmittance stop and 0.999 clamp
        opac = torch.empty(n).uniform_(0.9, 1.0, generator=g)
        opac[:5] = 1.0
        scales = scales * 2
    return means, quats, scales, opac, colors


def grad_inputs(scene, viewmat, K, bg):
    return [t.clone().requires_grad_(True) for t in (*scene, viewmat, K)] + (
        [bg.clone().requires_grad_(True)] if bg is not None else []
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12))


NAMES = ["means", "quats", "scales", "opacities", "colors", "viewmat", "K", "backgrounds"]
