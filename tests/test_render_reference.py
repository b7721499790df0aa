"""The PyTorch backend against the float64 dense reference: images, alphas, every gradient."""

from __future__ import annotations

import math

import pytest
import torch

from moegs_bench.render import rasterize
from reference_raster import reference_rasterize

W, H = 40, 32


def _camera(width=W, height=H, fov_deg=60.0):
    f = width / (2 * math.tan(math.radians(fov_deg) / 2))
    K = torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.2], [0, 0, 1.0]])
    # a slightly rotated camera looking down +z at the origin from z = -3
    ang = 0.1
    R = torch.tensor([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    viewmat = torch.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = torch.tensor([0.05, -0.02, 3.0])
    return viewmat, K


def _scene(kind: str, n: int = 150, channels: int = 3, seed: int = 0):
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


def _grad_inputs(scene, viewmat, K, bg):
    return [t.clone().requires_grad_(True) for t in (*scene, viewmat, K)] + (
        [bg.clone().requires_grad_(True)] if bg is not None else []
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12))


NAMES = ["means", "quats", "scales", "opacities", "colors", "viewmat", "K", "backgrounds"]


@pytest.mark.parametrize(
    "kind,channels,use_bg",
    [
        ("generic", 3, False),
        ("generic", 3, True),
        ("behind", 3, False),
        ("outside", 3, True),
        ("thin_large", 3, False),
        ("opaque", 3, True),
        ("generic", 19, True),  # many channels
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_reference(kind, channels, use_bg, seed):
    scene = _scene(kind, channels=channels, seed=seed)
    viewmat, K = _camera()
    bg = torch.linspace(0.1, 0.9, channels) if use_bg else None
    ours = _grad_inputs(scene, viewmat, K, bg)
    ref = _grad_inputs(scene, viewmat, K, bg)

    img, alpha, _ = rasterize(*ours[:7], W, H, backgrounds=ours[7] if use_bg else None, backend="torch")
    img_r, alpha_r = reference_rasterize(*ref[:7], W, H, backgrounds=ref[7] if use_bg else None)
    assert img.dtype == torch.float32 and img.shape == (H, W, channels) and alpha.shape == (H, W, 1)
    assert alpha_r.max() > 0.2, "scene does not cover the image: the test would be vacuous"
    assert (img.double() - img_r).abs().max() <= 1e-5
    assert (alpha.double() - alpha_r).abs().max() <= 1e-5

    # a random linear functional of both outputs, so every gradient path is exercised
    gen = torch.Generator().manual_seed(seed + 7)
    wc, wa = torch.randn(H, W, channels, generator=gen), torch.randn(H, W, 1, generator=gen)
    ((img * wc).sum() + (alpha * wa).sum()).backward()
    ((img_r * wc.double()).sum() + (alpha_r * wa.double()).sum()).backward()
    for name, a, b in zip(NAMES, ours, ref):
        assert a.grad is not None and torch.isfinite(a.grad).all(), name
        assert b.grad.norm() > 0, f"{name}: reference gradient is zero, the check would be vacuous"
        assert _rel(a.grad, b.grad) <= 1e-4, f"{name}: relative gradient error {_rel(a.grad, b.grad):.2e}"


def test_transmittance_stop_is_exercised():
    """The opaque scene must actually hit the 1e-4 stop and the 0.999 clamp somewhere."""
    means, quats, scales, opac, colors = _scene("opaque")
    viewmat, K = _camera()
    _, alpha, _ = rasterize(means, quats, scales, opac, colors, viewmat, K, W, H)
    assert float(alpha.max()) > 1 - 1.5e-4


def test_expected_depth_and_sh_match_reference():
    from moegs_bench.render import sh_to_rgb

    means, quats, scales, opac, _ = _scene("generic", seed=3)
    viewmat, K = _camera()
    g = torch.Generator().manual_seed(3)
    sh = torch.randn(len(means), 16, 3, generator=g) * 0.3
    img, alpha, _ = rasterize(means, quats, scales, opac, sh, viewmat, K, W, H, sh_degree=3, render_mode="RGB+ED")
    campos = torch.linalg.inv(viewmat)[:3, 3]
    rgb = sh_to_rgb(3, sh.double(), means.double() - campos.double())
    depth = (means.double() @ viewmat[:3, :3].T.double() + viewmat[:3, 3].double())[:, 2:]
    ref, ref_a = reference_rasterize(means, quats, scales, opac, torch.cat([rgb, depth], 1), viewmat, K, W, H)
    ed = ref[..., 3:] / ref_a.clamp(min=1e-10)
    assert (img[..., :3].double() - ref[..., :3]).abs().max() <= 1e-5
    mask = ref_a[..., 0] > 0.05
    assert torch.allclose(img[..., 3][mask].double(), ed[..., 0][mask], rtol=1e-5, atol=1e-5)


def test_camera_facing_away_gives_empty_image_and_zero_gradients():
    scene = _scene("generic")
    viewmat, K = _camera()
    viewmat[:3, 3] = torch.tensor([0.0, 0.0, -5.0])  # everything is behind the camera
    inputs = _grad_inputs(scene, viewmat, K, torch.tensor([0.2, 0.4, 0.6]))
    img, alpha, _ = rasterize(*inputs[:7], W, H, backgrounds=inputs[7])
    assert torch.all(alpha == 0)
    assert torch.allclose(img, torch.tensor([0.2, 0.4, 0.6]).expand(H, W, 3))
    img.sum().backward()
    for name, t in zip(NAMES[:7], inputs[:7]):
        assert t.grad is not None and torch.all(t.grad == 0), name
    assert torch.allclose(inputs[7].grad, torch.full((3,), float(H * W)))


def test_empty_scene():
    viewmat, K = _camera()
    z = torch.zeros(0, 3)
    img, alpha, _ = rasterize(z, torch.zeros(0, 4), z, torch.zeros(0), torch.zeros(0, 5), viewmat, K, W, H)
    assert img.shape == (H, W, 5) and torch.all(img == 0) and torch.all(alpha == 0)


def test_gradcheck_tiny():
    """Finite differences on the backend itself, in float64, on a tiny scene."""
    g = torch.Generator().manual_seed(5)
    n, w, h = 6, 12, 10
    means = (torch.rand(n, 3, generator=g) - 0.5).double() * 0.8
    quats = torch.randn(n, 4, generator=g).double()
    scales = torch.empty(n, 3).uniform_(0.08, 0.2, generator=g).double()
    opac = torch.empty(n).uniform_(0.3, 0.9, generator=g).double()
    colors = torch.rand(n, 2, generator=g).double()
    bg = torch.tensor([0.3, 0.7], dtype=torch.float64)
    viewmat, K = _camera(w, h)
    viewmat, K = viewmat.double(), K.double()

    def f(*args):
        img, alpha, _ = rasterize(*args, w, h, backgrounds=bg)
        return img, alpha

    inputs = [t.requires_grad_(True) for t in (means, quats, scales, opac, colors, viewmat, K)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
