"""gsplat (CUDA) against the PyTorch backend: images, alphas and gradients.

The PyTorch backend is itself checked against the float64 reference (test_render_reference.py),
so agreement here ties gsplat's kernels to the same oracle. Needs a CUDA device and gsplat.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from render_cases import NAMES, camera, grad_inputs, rel_err, scene

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: gsplat's kernels are CUDA-only"),
    pytest.mark.skipif(importlib.util.find_spec("gsplat") is None, reason="gsplat is not installed"),
]


@pytest.mark.parametrize("kind,channels,use_bg", [("generic", 3, False), ("opaque", 3, True), ("thin_large", 3, False), ("generic", 19, True)])
def test_gsplat_matches_torch_backend(kind, channels, use_bg):
    from moegs_bench.render import rasterize

    W, H = 64, 48
    gaussians = scene(kind, n=400, channels=channels, seed=11)
    viewmat, K = camera(W, H)
    bg = torch.linspace(0.1, 0.9, channels) if use_bg else None
    cpu = grad_inputs(gaussians, viewmat, K, bg)
    gpu = [t.detach().cuda().requires_grad_(True) for t in cpu]
    gen = torch.Generator().manual_seed(3)
    wc, wa = torch.randn(H, W, channels, generator=gen), torch.randn(H, W, 1, generator=gen)

    img_c, a_c, _ = rasterize(*cpu[:7], W, H, backgrounds=cpu[7] if use_bg else None, backend="torch")
    img_g, a_g, meta = rasterize(*gpu[:7], W, H, backgrounds=gpu[7] if use_bg else None, backend="gsplat")
    assert meta["backend"] == "gsplat"
    assert (img_g.cpu() - img_c).abs().max() <= 1e-4
    assert (a_g.cpu() - a_c).abs().max() <= 1e-4

    ((img_c * wc).sum() + (a_c * wa).sum()).backward()
    ((img_g * wc.cuda()).sum() + (a_g * wa.cuda()).sum()).backward()
    for name, c, g in zip(NAMES, cpu, gpu):
        if g.grad is None:  # gsplat does not differentiate w.r.t. K
            assert name == "K", name
            continue
        assert rel_err(g.grad.cpu(), c.grad) <= 1e-3, f"{name}: relative gradient error {rel_err(g.grad.cpu(), c.grad):.2e}"


def test_auto_backend_picks_gsplat_on_cuda():
    from moegs_bench.render import rasterize

    gaussians = [t.cuda() for t in scene("generic", n=50)]
    viewmat, K = (t.cuda() for t in camera(32, 24))
    _, _, meta = rasterize(*gaussians, viewmat, K, 32, 24)
    assert meta["backend"] == "gsplat"
