"""Gate-aware pruning (router/prune.py): the Eq. 10 importance against a brute-force per-pixel
Jacobian, the removal masks, and rows leaving every column together."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.cameras import Camera
from moegs_bench.data.scene import Frame
from moegs_bench.errors import InputError
from moegs_bench.router.config import RouterConfig
from moegs_bench.router.gate import ROUTER_COLUMNS
from moegs_bench.router.mixture import Mixture
from moegs_bench.router.prune import apply_pruning, gate_importance, opacity_importance, removal_masks
from test_router import build_expert

W, H = 14, 10


def _mixture(variant: str, mode: str, seed: int = 0) -> Mixture:
    experts = [build_expert("static", seed), build_expert("stg", seed + 1)]
    torch.manual_seed(seed)
    mix = Mixture(experts, RouterConfig(variant=variant, render_mode=mode, temperature=1.0, eval_temperature=0.5))
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for e in mix.experts:  # router columns away from their initial constants, so every term matters
            for c in ROUTER_COLUMNS:
                e.table[c].copy_(torch.randn(e.num_gaussians, generator=g))
    mix.eval()
    mix.freeze_experts()
    return mix


def _frames() -> list[Frame]:
    cams = [Camera.look_at((0.3, 0.1, -3.0), (0.0, 0.0, 0.0), width=W, height=H, fov_x_deg=60.0, time=0.4),
            Camera.look_at((-0.5, 0.2, -2.8), (0.0, 0.1, 0.0), width=W, height=H, fov_x_deg=60.0, time=0.8)]
    return [Frame(camera=c, frame=i, key=f"v{i}") for i, c in enumerate(cams)]


def _brute_force(mix: Mixture, frames: list[Frame]) -> list[torch.Tensor]:
    """E_i = mean over views of sum_p ||dG_k(p)/dv_i||, v_i = [w, w_dir, t w_time], from one
    backward pass per gate pixel (no use of the compositing structure)."""
    out = []
    for k, e in enumerate(mix.experts):
        cols = [e.table[c] for c in ROUTER_COLUMNS]
        total = torch.zeros(e.num_gaussians, dtype=torch.float64)
        for frame in frames:
            t = frame.camera.time
            with torch.enable_grad():
                gates = mix(frame.camera).gates[k]  # [H, W]
                for p in range(gates.numel()):
                    gw, gd, gt = torch.autograd.grad(gates.reshape(-1)[p], cols, retain_graph=True, allow_unused=True)
                    rows = torch.stack([x if x is not None else torch.zeros_like(cols[0]) for x in (gw, gd, gt)], 1)
                    rows = rows.double()
                    rows[:, 2] /= t  # dG/d(t w_time) = dG/dw_time / t
                    total += rows.norm(dim=1)
        out.append(total / len(frames))
    return out


@pytest.mark.parametrize("variant,mode", [("volume-aware", "exact"), ("volume-aware", "separate"),
                                          ("volume-aware", "merged"), ("volume", "exact")])
def test_gate_importance_equals_the_brute_force_jacobian_norm(variant, mode):
    mix = _mixture(variant, mode)
    frames = _frames()
    for c in (e.table[c] for e in mix.experts for c in ROUTER_COLUMNS):
        c.requires_grad_(True)
    got = gate_importance(mix, frames)
    want = _brute_force(mix, frames)
    for g, w in zip(got, want):
        assert g.shape == w.shape and float(w.max()) > 0
        torch.testing.assert_close(g, w, rtol=2e-4, atol=1e-6)


def test_the_pixel_router_has_no_gate_importance():
    mix = _mixture("pixel", "exact")
    with pytest.raises(InputError, match="no per-Gaussian router weights"):
        gate_importance(mix, _frames())


def test_removal_masks_take_the_lowest_scores_per_expert():
    scores = [torch.tensor([0.5, 0.1, 0.1, 0.9, 0.3], dtype=torch.float64), torch.tensor([3.0, 1.0, 2.0, 0.0])]
    a, b = removal_masks(scores, ratio=0.5)
    assert a.tolist() == [False, True, True, False, False]  # floor(2.5) = 2: the two 0.1 (lower rows first)
    assert b.tolist() == [False, True, False, True]
    a, b = removal_masks(scores, threshold=0.4)
    assert a.tolist() == [False, True, True, False, True] and b.tolist() == [False, False, False, True]
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(InputError, match=r"ratio: expected a number in \(0, 1\)"):
            removal_masks(scores, ratio=bad)
    with pytest.raises(InputError, match="exactly one"):
        removal_masks(scores)


def test_pruning_removes_rows_from_every_column_together():
    mix = _mixture("volume-aware", "exact")
    before = [{name: col.detach().clone() for name, col in e.table.items()} for e in mix.experts]
    masks = [torch.rand(e.num_gaussians, generator=torch.Generator().manual_seed(k)) < 0.4
             for k, e in enumerate(mix.experts)]
    apply_pruning(mix, masks)
    for e, cols, mask in zip(mix.experts, before, masks):
        assert e.num_gaussians == int((~mask).sum())
        assert set(dict(e.table.items())) == set(cols) and set(ROUTER_COLUMNS) <= set(cols)
        for name, col in e.table.items():
            torch.testing.assert_close(col.detach(), cols[name][~mask], rtol=0, atol=0)
    with torch.no_grad():
        out = mix(_frames()[0].camera)  # still renders
    assert torch.isfinite(out.image).all()


def test_opacity_importance_is_the_mean_opacity_over_the_times():
    mix = _mixture("volume-aware", "exact")
    static = mix.experts[0]  # a static expert: the same opacity at every time
    with torch.no_grad():
        static.table["opacities"].normal_(generator=torch.Generator().manual_seed(3))
    (got, _) = opacity_importance(mix, [0.0, 0.5, 0.9])
    want = torch.sigmoid(static.table["opacities"].detach().double().reshape(-1))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
