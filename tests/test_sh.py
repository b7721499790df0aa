"""Spherical harmonics (``moegs_bench.render.sh``) against independent oracles.

The oracles share nothing with the implementation: exact quadrature on the sphere (orthonormality),
closed-form constants written from the textbook formulas, the addition theorem, harmonicity of the
solid harmonics r^l Y_lm, and the float64 dense reference rasterizer for the rendering checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moegs_bench.render import rasterize
from moegs_bench.render.sh import eval_sh, sh_basis, sh_to_rgb
from reference_raster import reference_rasterize

BANDS = [(0, slice(0, 1)), (1, slice(1, 4)), (2, slice(4, 9)), (3, slice(9, 16))]


def _random_dirs(n: int, seed: int, scale: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    if scale:  # arbitrary lengths: the basis must normalise
        d = d * torch.empty(n, 1, dtype=torch.float64).uniform_(0.05, 20.0, generator=g)
    return d


def _random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# --------------------------------------------------------------------------- the basis itself


def test_orthonormal_on_the_sphere():
    """Gauss-Legendre in cos(theta) x uniform phi integrates products of degree <= 6 exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(12)  # exact up to degree 23 in cos(theta)
    n_phi = 24  # exact for trigonometric polynomials of degree < 24 in phi
    ct = torch.tensor(nodes, dtype=torch.float64)[:, None]
    st = torch.sqrt(1 - ct**2)
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.37) * (2 * math.pi / n_phi)  # arbitrary offset
    dirs = torch.stack([st * torch.cos(phi), st * torch.sin(phi), ct.expand(-1, n_phi)], -1).reshape(-1, 3)
    w = (torch.tensor(weights, dtype=torch.float64)[:, None] * (2 * math.pi / n_phi)).expand(-1, n_phi).reshape(-1)
    assert math.isclose(float(w.sum()), 4 * math.pi, rel_tol=1e-13)
    Y = sh_basis(3, dirs)  # [P, 16]
    gram = Y.T @ (w[:, None] * Y)
    assert gram.shape == (16, 16)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-12), (gram - torch.eye(16)).abs().max()


def test_orthonormal_fibonacci_grid_float32():
    """Same property on an equal-area Fibonacci lattice, in the default float32."""
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z**2)
    phi = math.pi * (3 - math.sqrt(5)) * i
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).float()
    Y = sh_basis(3, dirs).double()
    gram = Y.T @ Y * (4 * math.pi / n)
    assert (gram - torch.eye(16, dtype=torch.float64)).abs().max() < 1e-3


def test_lower_degrees_are_prefixes():
    d = _random_dirs(50, 0)
    full = sh_basis(3, d)
    for deg in range(4):
        assert sh_basis(deg, d).shape == (50, (deg + 1) ** 2)
        assert torch.equal(sh_basis(deg, d), full[:, : (deg + 1) ** 2])


def test_degree_zero_is_constant():
    d = _random_dirs(100, 1, scale=True)
    y0 = sh_basis(0, d)
    assert y0.shape == (100, 1)
    assert torch.all(y0 == 0.28209479177387814)
    assert math.isclose(0.28209479177387814, 1 / (2 * math.sqrt(math.pi)), rel_tol=1e-15)


@pytest.mark.parametrize(
    "axis,expected",
    [
        ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # +x -> (-C1 y, C1 z, -C1 x) = (0, 0, -C1)
        ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),
        ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
        ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
        ((0.0, 0.0, -2.5), (0.0, -1.0, 0.0)),  # not normalised
    ],
)
def test_degree_one_3dgs_signs(axis, expected):
    c1 = math.sqrt(3 / (4 * math.pi))
    assert math.isclose(c1, 0.4886025119029199, rel_tol=1e-15)
    y = sh_basis(1, torch.tensor([axis], dtype=torch.float64))[0]
    want = torch.tensor([1 / (2 * math.sqrt(math.pi)), *(c1 * e for e in expected)], dtype=torch.float64)
    assert torch.allclose(y, want, rtol=0, atol=1e-15)


def test_hand_computed_values_degrees_2_and_3():
    """All 16 values at d = (1, 2, 2) / 3 (passed unnormalised), 3DGS signs, textbook constants."""
    pi = math.pi
    a = 0.5 * math.sqrt(15 / pi)
    b = 0.25 * math.sqrt(5 / pi)
    c = 0.25 * math.sqrt(15 / pi)
    # x = 1/3, y = 2/3, z = 2/3 on the unit sphere
    deg2 = [
        a * 2 / 9,  # xy
        -a * 4 / 9,  # yz (negative in 3DGS)
        b * 3 / 9,  # 2z^2 - x^2 - y^2 = (8 - 1 - 4) / 9
        -a * 2 / 9,  # xz (negative in 3DGS)
        c * -3 / 9,  # x^2 - y^2
    ]
    k1 = 0.25 * math.sqrt(35 / (2 * pi))
    k2 = 0.5 * math.sqrt(105 / pi)
    k3 = 0.25 * math.sqrt(21 / (2 * pi))
    k4 = 0.25 * math.sqrt(7 / pi)
    k5 = 0.25 * math.sqrt(105 / pi)
    deg3 = [
        -k1 * -2 / 27,  # y (3x^2 - y^2) = (2/3)(-1/9)
        k2 * 4 / 27,  # xyz
        -k3 * 22 / 27,  # y (4z^2 - x^2 - y^2) = (2/3)(11/9)
        k4 * -14 / 27,  # z (2z^2 - 3x^2 - 3y^2) = (2/3)(-7/9)
        -k3 * 11 / 27,  # x (4z^2 - x^2 - y^2) = (1/3)(11/9)
        k5 * -6 / 27,  # z (x^2 - y^2) = (2/3)(-3/9)
        -k1 * -11 / 27,  # x (x^2 - 3y^2) = (1/3)(-11/9)
    ]
    c1 = math.sqrt(3 / (4 * pi))
    deg01 = [1 / (2 * math.sqrt(pi)), -c1 * 2 / 3, c1 * 2 / 3, -c1 / 3]
    want = torch.tensor(deg01 + deg2 + deg3, dtype=torch.float64)
    got = sh_basis(3, torch.tensor([[3.0, 6.0, 6.0]], dtype=torch.float64))[0]
    assert torch.allclose(got, want, rtol=0, atol=1e-14), (got - want).abs().max()
    # and in float32
    got32 = sh_basis(3, torch.tensor([[1.0, 2.0, 2.0]]))[0]
    assert got32.dtype == torch.float32
    assert torch.allclose(got32.double(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("degree,band", BANDS)
def test_parity(degree, band):
    d = _random_dirs(200, 2, scale=True)
    y, y_neg = sh_basis(3, d)[:, band], sh_basis(3, -d)[:, band]
    assert torch.allclose(y_neg, (-1) ** degree * y, rtol=0, atol=1e-14)


def test_solid_harmonics_are_harmonic_and_homogeneous():
    """r^l Y_lm(p / r) is a harmonic homogeneous polynomial of degree l (zero Laplacian)."""
    degs = torch.tensor([0] + [1] * 3 + [2] * 5 + [3] * 7, dtype=torch.float64)

    def solid(p: torch.Tensor) -> torch.Tensor:  # [3] -> [16]
        return p.norm() ** degs * sh_basis(3, p)

    for p in _random_dirs(3, 3, scale=True) * 0.3:
        for k in range(16):
            hess = torch.autograd.functional.hessian(lambda q, k=k: solid(q)[k], p)  # [3, 3]
            assert abs(float(hess.trace())) <= 1e-10 * (1 + float(hess.abs().max())), (k, hess)
        # homogeneity: f(t p) = t^l f(p)
        for t in (0.5, 3.0):
            assert torch.allclose(solid(t * p), t**degs * solid(p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("degree,band", BANDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_addition_theorem_and_rotation_invariance(degree, band, seed):
    d = _random_dirs(300, 10 + seed)
    R = _random_rotation(seed)
    y, y_rot = sh_basis(3, d)[:, band], sh_basis(3, d @ R.T)[:, band]
    power = torch.full((300,), (2 * degree + 1) / (4 * math.pi), dtype=torch.float64)
    assert torch.allclose((y**2).sum(1), power, rtol=1e-12)
    assert torch.allclose((y_rot**2).sum(1), power, rtol=1e-12)
    # each band spans a rotation-invariant space: Y_l(R d) = D Y_l(d) with D orthogonal
    D = torch.linalg.lstsq(y, y_rot).solution.T  # [2l+1, 2l+1]
    assert torch.allclose(y @ D.T, y_rot, atol=1e-12)
    assert torch.allclose(D @ D.T, torch.eye(2 * degree + 1, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("degree", [-1, 4])
def test_basis_rejects_bad_degree(degree):
    with pytest.raises(ValueError, match="sh_degree"):
        sh_basis(degree, torch.ones(2, 3))


# --------------------------------------------------------------------------- eval_sh, sh_to_rgb


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_eval_sh_is_basis_times_coefficients(degree):
    g = torch.Generator().manual_seed(degree)
    k = (degree + 1) ** 2
    dirs = _random_dirs(2 * 7, 4, scale=True).view(2, 7, 3)  # batch dims are allowed
    coeffs = torch.randn(2, 7, 16, 5, generator=g, dtype=torch.float64)  # more coefficients than needed
    out = eval_sh(degree, coeffs, dirs)
    assert out.shape == (2, 7, 5)
    Y = sh_basis(degree, dirs)  # [2, 7, k]
    want = torch.einsum("abk,abkc->abc", Y, coeffs[..., :k, :])
    assert torch.allclose(out, want, rtol=1e-13, atol=1e-14)
    # the surplus coefficients are ignored, exactly
    junk = coeffs.clone()
    junk[..., k:, :] = torch.randn(2, 7, 16 - k, 5, generator=g, dtype=torch.float64) * 1e6
    assert torch.equal(eval_sh(degree, junk, dirs), eval_sh(degree, coeffs[..., :k, :].contiguous(), dirs))


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_eval_sh_rejects_too_few_coefficients(degree):
    k = (degree + 1) ** 2
    with pytest.raises(ValueError, match=str(k)):
        eval_sh(degree, torch.zeros(4, k - 1, 3), torch.ones(4, 3))


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_direction_scale_invariance(degree):
    g = torch.Generator().manual_seed(7)
    dirs = _random_dirs(64, 5)
    coeffs = torch.randn(64, 16, 3, generator=g, dtype=torch.float64)
    ref = eval_sh(degree, coeffs, dirs)
    for s in (1e-3, 0.3, 7.0, 1e4):
        assert torch.allclose(eval_sh(degree, coeffs, dirs * s), ref, rtol=1e-12, atol=1e-13)
    # a negative scale is the antipode: parity per band
    sign = torch.tensor([(-1.0) ** l for l, band in BANDS for _ in range(band.start, band.stop)], dtype=torch.float64)
    k = (degree + 1) ** 2
    assert torch.allclose(eval_sh(degree, coeffs * sign[:, None], -dirs * 2.0), ref, atol=1e-13)
    assert torch.allclose(eval_sh(degree, coeffs[:, :k] * sign[:k, None], -dirs), ref, atol=1e-13)


def test_sh_to_rgb_adds_half_and_clamps_at_zero():
    C0 = 1 / (2 * math.sqrt(math.pi))
    dc = torch.tensor([[[-5.0, -1.7724538509055159, 0.0]], [[1.0, -0.3, 2.0]]], dtype=torch.float64)  # [2, 1, 3]
    dirs = _random_dirs(2, 6)
    rgb = sh_to_rgb(0, dc, dirs)
    want = torch.clamp(C0 * dc[:, 0] + 0.5, min=0)
    assert torch.allclose(rgb, want, rtol=0, atol=1e-15)
    assert rgb[0, 0] == 0 and abs(float(rgb[0, 1])) < 1e-15  # clamped / exactly at the kink
    assert torch.all(rgb >= 0)
    # higher degrees: sh_to_rgb == max(0, eval_sh + 0.5) everywhere, both sides of the clamp exercised
    g = torch.Generator().manual_seed(8)
    coeffs = torch.randn(500, 16, 3, generator=g, dtype=torch.float64)
    d = _random_dirs(500, 9, scale=True)
    raw = eval_sh(3, coeffs, d)
    assert (raw + 0.5 < 0).any() and (raw + 0.5 > 0).any()
    assert torch.equal(sh_to_rgb(3, coeffs, d), torch.clamp(raw + 0.5, min=0.0))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_eval_sh_gradcheck(degree):
    g = torch.Generator().manual_seed(20 + degree)
    coeffs = torch.randn(3, (degree + 1) ** 2, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    dirs = (_random_dirs(3, 21 + degree) * 1.7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, d: eval_sh(degree, c, d), (coeffs, dirs), eps=1e-6, atol=1e-8)
    if degree == 0:  # constant in the direction
        eval_sh(0, coeffs, dirs).sum().backward()
        assert dirs.grad is None or torch.all(dirs.grad == 0)


def test_sh_to_rgb_gradients():
    g = torch.Generator().manual_seed(30)
    coeffs = (torch.randn(4, 16, 3, generator=g, dtype=torch.float64) * 0.05).requires_grad_(True)
    dirs = _random_dirs(4, 31, scale=True).requires_grad_(True)
    assert bool((eval_sh(3, coeffs, dirs) + 0.5 > 0.1).all())  # away from the kink
    assert torch.autograd.gradcheck(lambda c, d: sh_to_rgb(3, c, d), (coeffs, dirs), eps=1e-6, atol=1e-8)
    # fully clamped colours pass no gradient
    dark = torch.zeros(2, 4, 3, dtype=torch.float64)
    dark[:, 0] = -10.0
    dark.requires_grad_(True)
    d = _random_dirs(2, 32).requires_grad_(True)
    sh_to_rgb(1, dark, d).sum().backward()
    assert torch.all(dark.grad == 0) and torch.all(d.grad == 0)


# --------------------------------------------------------------------------- SH in the rasterizer

W, H = 24, 20


def _K(width=W, height=H, f=22.0):
    return torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.2], [0, 0, 1.0]])


def _look_at(campos, target=(0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0)) -> torch.Tensor:
    """OpenCV world-to-camera matrix (x right, y down, z forward) of a camera at ``campos``."""
    c = torch.tensor(campos, dtype=torch.float64)
    fwd = torch.tensor(target, dtype=torch.float64) - c
    fwd = fwd / fwd.norm()
    right = torch.linalg.cross(fwd, torch.tensor(up, dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    R = torch.stack([right, down, fwd])  # rows: camera axes in world coordinates
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, :3] = R
    vm[:3, 3] = -R @ c
    return vm.float()


def _scene(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 1.6 - 0.8
    quats = torch.randn(n, 4, generator=g)
    scales = torch.empty(n, 3).uniform_(0.05, 0.2, generator=g)
    opac = torch.empty(n).uniform_(0.2, 0.95, generator=g)
    return means, quats, scales, opac


def _hand_rgb_deg1(sh: torch.Tensor, means: torch.Tensor, campos) -> torch.Tensor:
    """0.5 + C0 c0 - C1 y c1 + C1 z c2 - C1 x c3 at the unit direction camera -> mean, clamped."""
    C0, C1 = 1 / (2 * math.sqrt(math.pi)), math.sqrt(3 / (4 * math.pi))
    d = means.double() - torch.tensor(campos, dtype=torch.float64)
    x, y, z = (d / d.norm(dim=1, keepdim=True)).unbind(1)
    sh = sh.double()
    rgb = 0.5 + C0 * sh[:, 0] - C1 * y[:, None] * sh[:, 1] + C1 * z[:, None] * sh[:, 2] - C1 * x[:, None] * sh[:, 3]
    return rgb.clamp(min=0)


def test_degree_zero_renders_like_plain_colours():
    means, quats, scales, opac = _scene()
    g = torch.Generator().manual_seed(1)
    sh = torch.randn(len(means), 9, 3, generator=g)  # extra coefficients must be ignored
    sh[:5, 0] = -4.0  # some colours clamp to 0
    vm, K = _look_at((0.3, -0.2, -3.0)), _K()
    bg = torch.tensor([0.1, 0.5, 0.9])
    img, alpha, _ = rasterize(means, quats, scales, opac, sh, vm, K, W, H, sh_degree=0, backgrounds=bg)
    plain = torch.clamp(0.5 + 0.28209479177387814 * sh[:, 0], min=0)
    assert (plain[:5] == 0).all()
    img2, alpha2, _ = rasterize(means, quats, scales, opac, plain, vm, K, W, H, backgrounds=bg)
    assert alpha.max() > 0.5
    assert (img - img2).abs().max() <= 1e-6 and torch.equal(alpha, alpha2)


@pytest.mark.parametrize("campos", [(0.0, 0.0, -3.0), (2.5, -1.0, 1.5), (-0.5, 2.8, 0.7)])
def test_degree_one_view_dependence_matches_reference(campos):
    means, quats, scales, opac = _scene(seed=2)
    g = torch.Generator().manual_seed(3)
    sh = torch.randn(len(means), 4, 3, generator=g) * 0.6
    vm, K = _look_at(campos), _K()
    img, alpha, _ = rasterize(means, quats, scales, opac, sh, vm, K, W, H, sh_degree=1)
    rgb = _hand_rgb_deg1(sh, means, campos)
    ref, ref_a = reference_rasterize(means, quats, scales, opac, rgb, vm, K, W, H)
    assert ref_a.max() > 0.5, "scene does not cover the image"
    assert (img.double() - ref).abs().max() <= 1e-5
    assert (alpha.double() - ref_a).abs().max() <= 1e-5


def test_moving_the_camera_changes_the_colour():
    """One Gaussian at the origin with only a z-lobe: seen from -z and +z its colour is 0.5 +- C1 c2."""
    C1 = math.sqrt(3 / (4 * math.pi))
    means = torch.zeros(1, 3)
    quats = torch.tensor([[1.0, 0, 0, 0]])
    scales = torch.full((1, 3), 0.3)
    opac = torch.tensor([0.9])
    sh = torch.zeros(1, 4, 3)
    sh[0, 2] = torch.tensor([0.6, -0.6, 0.0])  # z coefficient
    sh[0, 1] = sh[0, 3] = torch.tensor([5.0, 5.0, 5.0])  # x, y lobes: invisible along the z axis
    colours = {}
    for name, pos in (("front", (0.0, 0.0, -3.0)), ("back", (0.0, 0.0, 3.0))):
        img, alpha, _ = rasterize(means, quats, scales, opac, sh, _look_at(pos), _K(), W, H, sh_degree=1)
        mask = alpha[..., 0] > 0.05
        assert mask.sum() > 20
        colours[name] = img[mask] / alpha[mask]  # one Gaussian, no background: exactly its colour
        assert torch.allclose(colours[name], colours[name][:1].expand_as(colours[name]), atol=1e-5)
    assert torch.allclose(colours["front"][0], torch.tensor([0.5 + 0.6 * C1, 0.5 - 0.6 * C1, 0.5]), atol=1e-5)
    assert torch.allclose(colours["back"][0], torch.tensor([0.5 - 0.6 * C1, 0.5 + 0.6 * C1, 0.5]), atol=1e-5)


def test_sh_rendering_gradients_reach_coefficients_and_means():
    means, quats, scales, opac = _scene(n=12, seed=4)
    g = torch.Generator().manual_seed(5)
    sh = (torch.randn(12, 16, 3, generator=g) * 0.2).requires_grad_(True)
    means = means.clone().requires_grad_(True)
    img, _, _ = rasterize(means, quats, scales, opac, sh, _look_at((0.4, 0.3, -3.0)), _K(), W, H, sh_degree=3)
    img.sum().backward()
    assert torch.isfinite(sh.grad).all() and torch.isfinite(means.grad).all()
    assert sh.grad[:, :16].abs().sum(0).gt(0).all()  # every coefficient of some visible Gaussian is used
