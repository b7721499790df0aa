"""The PyTorch backend against the float64 dense reference: images, alphas, every gradient."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.render import rasterize
from reference_raster import reference_rasterize
from render_cases import NAMES, H, W, camera, grad_inputs, rel_err, scene

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
    gaussians = scene(kind, channels=channels, seed=seed)
    viewmat, K = camera()
    bg = torch.linspace(0.1, 0.9, channels) if use_bg else None
    ours = grad_inputs(gaussians, viewmat, K, bg)
    ref = grad_inputs(gaussians, viewmat, K, bg)

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
        assert rel_err(a.grad, b.grad) <= 1e-4, f"{name}: relative gradient error {rel_err(a.grad, b.grad):.2e}"

def test_transmittance_stop_is_exercised():
    """The opaque scene must actually hit the 1e-4 stop and the 0.999 clamp somewhere."""
    means, quats, scales, opac, colors = scene("opaque")
    viewmat, K = camera()
    _, alpha, _ = rasterize(means, quats, scales, opac, colors, viewmat, K, W, H)
    assert float(alpha.max()) > 1 - 1.5e-4

def test_expected_depth_and_sh_match_reference():
    from moegs_bench.render import sh_to_rgb

    means, quats, scales, opac, _ = scene("generic", seed=3)
    viewmat, K = camera()
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
    gaussians = scene("generic")
    viewmat, K = camera()
    viewmat[:3, 3] = torch.tensor([0.0, 0.0, -5.0])  # everything is behind the camera
    inputs = grad_inputs(gaussians, viewmat, K, torch.tensor([0.2, 0.4, 0.6]))
    img, alpha, _ = rasterize(*inputs[:7], W, H, backgrounds=inputs[7])
    assert torch.all(alpha == 0)
    assert torch.allclose(img, torch.tensor([0.2, 0.4, 0.6]).expand(H, W, 3))
    img.sum().backward()
    for name, t in zip(NAMES[:7], inputs[:7]):
        assert t.grad is not None and torch.all(t.grad == 0), name
    assert torch.allclose(inputs[7].grad, torch.full((3,), float(H * W)))

def test_empty_scene():
    viewmat, K = camera()
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
    viewmat, K = camera(w, h)
    viewmat, K = viewmat.double(), K.double()

    def f(*args):
        img, alpha, _ = rasterize(*args, w, h, backgrounds=bg)
        return img, alpha

    inputs = [t.requires_grad_(True) for t in (means, quats, scales, opac, colors, viewmat, K)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
