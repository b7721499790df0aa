"""The five built-in experts, tested against independent oracles: hand-computed cases, float64
formulas written here (bilinear plane sampling, Hermite splines, the STG trajectory), and exact
properties (zeroed decoder heads give the canonical Gaussians, pruning keeps rows aligned,
checkpoints restore exactly)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from moegs_bench.adapters.base import Expert, ExpertError, SceneInit
from moegs_bench.adapters.registry import BUILTIN_EXPERTS
from moegs_bench.adapters.testing import CHECKS, check_expert, tiny_scene
from moegs_bench.cameras import Camera
from moegs_bench.experts.ed3dgs import ED3DGS
from moegs_bench.experts.ex4dgs import Ex4DGS, catmull_rom, temporal_window
from moegs_bench.experts.fourdgs import FourDGaussians, HexPlaneField, normalize_aabb
from moegs_bench.experts.static3dgs import Static3DGS
from moegs_bench.experts.stg import SpacetimeGaussians
from moegs_bench.gaussians import GaussianState
from moegs_bench.geometry import slerp
from moegs_bench.training.config import TrainConfig

ALL_EXPERTS = [FourDGaussians, ED3DGS, Ex4DGS, SpacetimeGaussians, Static3DGS]
_ids = lambda cls: cls.info.id  # noqa: E731

N_POINTS = 50


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def make_init(num_frames: int = 30, n: int = N_POINTS, seed: int = 0) -> SceneInit:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([-1.0, -0.5, -2.0]), torch.tensor([1.0, 1.5, 0.0])
    pts = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    return SceneInit(
        points=pts, colors=torch.rand(n, 3, generator=g), bounds=(lo, hi), extent=2.0,
        num_frames=num_frames, num_train_views=4, train_camera_ids=(1, 2, 3, 4),
        camera_centres=torch.randn(4, 3, generator=g) * 3,
    )


def build(cls: type[Expert], init: SceneInit | None = None, **overrides) -> Expert:
    cfg = cls.profile("tiny")
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return cls(cfg, make_init() if init is None else init)


def camera(time: float, camera_id: int) -> Camera:
    K = torch.tensor([[100.0, 0.0, 48.0], [0.0, 100.0, 36.0], [0.0, 0.0, 1.0]])
    return Camera(K=K, viewmat=torch.eye(4), width=96, height=72, time=time, camera_id=camera_id)


@torch.no_grad()
def randomise_canonical(expert: Expert) -> None:
    """Non-trivial canonical values (random rotations, scales, opacities, SH) so that 'equals the
    canonical Gaussians' is not satisfied by accident."""
    tab = expert.table
    tab["quats"].copy_(torch.randn_like(tab["quats"]))
    tab["scales"].copy_(torch.randn_like(tab["scales"]) * 0.3 - 3)
    tab["opacities"].copy_(torch.randn_like(tab["opacities"]))
    tab["sh_rest"].copy_(torch.randn_like(tab["sh_rest"]) * 0.1)


def assert_canonical(state: GaussianState, expert: Expert, atol: float = 1e-6) -> None:
    tab = expert.table
    torch.testing.assert_close(state.means, tab["means"], atol=atol, rtol=0)
    torch.testing.assert_close(state.scales, torch.exp(tab["scales"]), atol=atol, rtol=1e-6)
    torch.testing.assert_close(F.normalize(state.quats, dim=-1), F.normalize(tab["quats"], dim=-1), atol=atol, rtol=0)
    torch.testing.assert_close(state.opacities, torch.sigmoid(tab["opacities"]), atol=atol, rtol=0)
    colors = torch.cat([tab["sh_dc"], tab["sh_rest"]], 1)
    torch.testing.assert_close(state.colors, colors, atol=atol, rtol=0)


def max_diff(a: GaussianState, b: GaussianState) -> float:
    return max(float((x - y).detach().abs().max()) for x, y in zip(
        (a.means, a.scales, a.quats, a.opacities, a.colors), (b.means, b.scales, b.quats, b.opacities, b.colors)))


# ====================================================================================== 4DGaussians
def test_normalize_aabb_maps_max_to_minus_one_and_min_to_plus_one():
    hi, lo = torch.tensor([2.0, 1.0, 5.0]), torch.tensor([-2.0, -3.0, 1.0])
    aabb = torch.stack([hi, lo])
    torch.testing.assert_close(normalize_aabb(hi[None], aabb), torch.full((1, 3), -1.0))
    torch.testing.assert_close(normalize_aabb(lo[None], aabb), torch.full((1, 3), 1.0))
    torch.testing.assert_close(normalize_aabb(((hi + lo) / 2)[None], aabb), torch.zeros(1, 3))
    # a quarter of the way from max to min is -0.5
    torch.testing.assert_close(normalize_aabb((hi + (lo - hi) / 4)[None], aabb), torch.full((1, 3), -0.5))


def _field(resolution=(3, 5, 7, 4), features=2, multires=(1, 2)) -> HexPlaneField:
    return HexPlaneField(resolution, features, multires, torch.tensor([1.0, 2.0, 0.5]),
                         torch.tensor([-1.0, -2.0, -1.5]))


@torch.no_grad()
def test_hexplane_constant_planes_give_c_to_the_sixth_per_scale():
    field = _field()
    consts = (0.5, 0.8)  # one constant per scale
    for planes, c in zip(field.grids, consts):
        for p in planes:
            p.fill_(c)
    xyz = torch.randn(20, 3) * 2  # inside and outside the box (border padding)
    out = field(xyz, torch.rand(20, 1))
    assert out.shape == (20, 2 * 2)
    torch.testing.assert_close(out[:, :2], torch.full((20, 2), 0.5 ** 6))
    torch.testing.assert_close(out[:, 2:], torch.full((20, 2), 0.8 ** 6))


def _bilinear_ref(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """plane [C, H, W] float64; u along W (columns), v along H (rows), both in [-1, 1] with
    align_corners=True (-1 is the first pixel centre, +1 the last) and border clamping."""
    _, h, w = plane.shape
    x = min(max((u + 1) / 2 * (w - 1), 0.0), w - 1)
    y = min(max((v + 1) / 2 * (h - 1), 0.0), h - 1)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = x - x0, y - y0
    return ((1 - ay) * (1 - ax) * plane[:, y0, x0] + (1 - ay) * ax * plane[:, y0, x1]
            + ay * (1 - ax) * plane[:, y1, x0] + ay * ax * plane[:, y1, x1])


@torch.no_grad()
def test_hexplane_matches_float64_bilinear_reference():
    res, feats, multires = (3, 5, 7, 4), 2, (1, 2)
    field = _field(res, feats, multires).double()
    for planes in field.grids:
        for p in planes:
            p.copy_(torch.rand_like(p) + 0.5)
    hi = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    lo = torch.tensor([-1.0, -2.0, -1.5], dtype=torch.float64)
    xyz = torch.cat([lo + (hi - lo) * torch.rand(10, 3, dtype=torch.float64),
                     torch.tensor([[3.0, -5.0, 0.0], [-2.0, 0.1, 9.0]], dtype=torch.float64)])  # 2 outside
    t = torch.rand(12, 1, dtype=torch.float64)
    out = field(xyz, t)
    assert out.shape == (12, feats * len(multires))
    for n in range(12):
        coords = [float(c) for c in (1 - 2 * (xyz[n] - lo) / (hi - lo))] + [float(t[n])]  # max -> -1
        expected = []
        for s, r in enumerate(multires):
            feat = torch.ones(feats, dtype=torch.float64)
            for p_idx, (i, j) in enumerate(itertools.combinations(range(4), 2)):
                plane = field.grids[s][p_idx][0]
                reso = [v * r for v in res[:3]] + [res[3]]
                assert plane.shape == (feats, reso[j], reso[i])  # [C, res_j (rows), res_i (cols)]
                feat = feat * _bilinear_ref(plane, coords[i], coords[j])
            expected.append(feat)
        torch.testing.assert_close(out[n], torch.cat(expected), rtol=1e-10, atol=1e-12)


@torch.no_grad()
def test_hexplane_fresh_field_does_not_depend_on_time():
    field = _field()
    xyz = torch.randn(15, 3)
    a = field(xyz, torch.zeros(15, 1))
    b = field(xyz, torch.full((15, 1), 0.7))
    c = field(xyz, torch.rand(15, 1))
    # equal up to rounding: the four bilinear weights of a plane of ones sum to 1 only in exact arithmetic
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    torch.testing.assert_close(a, c, rtol=1e-6, atol=0)
    assert float(a.std()) > 0  # the space planes are random: not trivially constant


def _zero_4dgs_heads(expert: FourDGaussians) -> None:
    net = expert.deformation_net
    with torch.no_grad():
        for h in (net.pos_deform, net.scales_deform, net.rotations_deform, net.opacity_deform, net.shs_deform):
            h[3].weight.zero_()
            h[3].bias.zero_()


def test_4dgs_zero_heads_give_canonical_gaussians():
    e = build(FourDGaussians)
    randomise_canonical(e)
    e.on_step(10**6)
    assert bool(e.deform_on)
    before = e.gaussians_at(0.3)
    _zero_4dgs_heads(e)
    assert max_diff(before, e.gaussians_at(0.3)) > 1e-4  # the heads did move something
    for t in (0.0, 0.3, 1.0):
        assert_canonical(e.gaussians_at(t), e)


def test_4dgs_coarse_stage_has_no_deformation():
    e = build(FourDGaussians)
    assert e.config.coarse_iterations >= 1
    randomise_canonical(e)
    e.on_step(1)
    assert not bool(e.deform_on)
    assert_canonical(e.gaussians_at(0.6), e, atol=0)
    assert e.regularization(1) is None  # upstream regularises the fine stage only
    e.on_step(e.config.coarse_iterations + 1)
    assert bool(e.deform_on)
    g = e.gaussians_at(0.6)
    assert float((g.means - e.table["means"]).detach().abs().max()) > 1e-5  # fine stage: deformed


def test_4dgs_regularization_on_constant_and_quadratic_grids():
    e = build(FourDGaussians)
    e.on_step(10**6)
    cfg = e.config
    grid = e.deformation_net.grid
    space, time = (0, 1, 3), (2, 4, 5)  # planes of (x,y),(x,z),(y,z) / (x,t),(y,t),(z,t)
    with torch.no_grad():
        for planes in grid.grids:
            for p in space:
                planes[p].fill_(0.3)
            for p in time:
                planes[p].fill_(1.0)
    assert float(e.regularization(10**6).detach()) == 0.0
    # time planes constant 2: smoothness still 0, mean |1 - 2| = 1 per time plane (3 x 2 scales)
    with torch.no_grad():
        for planes in grid.grids:
            for p in time:
                planes[p].fill_(2.0)
    assert float(e.regularization(10**6).detach()) == pytest.approx(cfg.l1_time_planes * 6, rel=1e-6)
    # space plane 0 of scale 0 quadratic along its rows (dim -2): second difference 2 -> square 4
    with torch.no_grad():
        for planes in grid.grids:
            for p in time:
                planes[p].fill_(1.0)
        p0 = grid.grids[0][0]
        rows = torch.arange(p0.shape[-2], dtype=torch.float32)
        p0.copy_((rows**2)[:, None].expand_as(p0[0, 0]).expand_as(p0))
    assert float(e.regularization(10**6).detach()) == pytest.approx(cfg.plane_tv_weight * 4.0, rel=1e-6)
    # the same values along the columns (dim -1) are not penalised: constant along the rows
    with torch.no_grad():
        cols = torch.arange(p0.shape[-1], dtype=torch.float32)
        p0.copy_((cols**2)[None, :].expand_as(p0[0, 0]).expand_as(p0))
    assert float(e.regularization(10**6).detach()) == 0.0


# ========================================================================================= E-D3DGS
def test_ed3dgs_temporal_embedding_endpoints_and_middle():
    for rows_cfg in (15, 16):
        e = build(ED3DGS, temporal_rows=rows_cfg)
        w = e.weight.detach().clone()
        assert w.shape[0] == rows_cfg
        with torch.no_grad():
            for rows in (rows_cfg, 7, 40):
                torch.testing.assert_close(e.temporal_embedding(torch.tensor(0.0), rows), w[0])
                torch.testing.assert_close(e.temporal_embedding(torch.tensor(1.0), rows), w[-1])
            mid = e.temporal_embedding(torch.tensor(0.5), rows_cfg)
            if rows_cfg % 2:
                expected = w[rows_cfg // 2]
            else:
                expected = (w[rows_cfg // 2 - 1] + w[rows_cfg // 2]) / 2
            torch.testing.assert_close(mid, expected)


@torch.no_grad()
def test_ed3dgs_resampling_is_linear_in_time():
    e = build(ED3DGS)
    w = e.weight.detach().double()
    r = w.shape[0]
    # own row count: identity (row k at t = k / (R - 1))
    for k in range(r):
        torch.testing.assert_close(e.temporal_embedding(torch.tensor(k / (r - 1)), r), e.weight[k])

    def ref(t: float) -> torch.Tensor:  # linear interpolation of the original table at t
        x = t * (r - 1)
        i = min(int(math.floor(x)), r - 2)
        a = x - i
        return (1 - a) * w[i] + a * w[i + 1]

    # another row count: at that table's own sample times, the value is the original table's
    for rows in (5, 9, 29):
        for m in range(rows):
            t = m / (rows - 1)
            got = e.temporal_embedding(torch.tensor(t), rows).double()
            torch.testing.assert_close(got, ref(t), atol=1e-6, rtol=1e-5)


def _ed3dgs_heads(e: ED3DGS):
    for tag in ("c", "f"):
        for a in ("pos", "scales", "rotations", "opacity", "rgb"):
            yield getattr(e, f"{a}_deform_{tag}")[3]


def test_ed3dgs_camera_time_offsets():
    e = build(ED3DGS)
    e.eval()
    with torch.no_grad():
        e.weight.copy_(torch.randn_like(e.weight))  # time visibly matters
        e.offsets.copy_(torch.tensor([[0.1], [0.0], [-0.3], [0.0]]))  # cameras 1, 2, 3, 4
        a, b = e.gaussians_at(0.2), e.gaussians_at(0.5)
        assert max_diff(a, b) > 1e-4
        # training camera 3: its offset -0.3 is added
        assert max_diff(e.gaussians_at(camera(0.5, 3)), a) < 1e-5
        assert max_diff(e.gaussians_at(camera(0.5, 1)), e.gaussians_at(0.6)) < 1e-5
        assert max_diff(e.gaussians_at(camera(0.5, 2)), b) < 1e-5  # a zero offset
        # unseen camera 9: the mean of the non-zero offsets, (0.1 - 0.3) / 2 = -0.1
        assert max_diff(e.gaussians_at(camera(0.5, 9)), e.gaussians_at(0.4)) < 1e-5
        # all offsets zero: an unseen camera gets no offset
        e.offsets.zero_()
        assert max_diff(e.gaussians_at(camera(0.5, 9)), b) < 1e-6


def test_ed3dgs_zero_heads_give_canonical_gaussians():
    e = build(ED3DGS)
    randomise_canonical(e)
    with torch.no_grad():
        e.table["embedding"].copy_(torch.randn_like(e.table["embedding"]))
        e.weight.copy_(torch.randn_like(e.weight))
        for lin in _ed3dgs_heads(e):
            lin.weight.zero_()
            lin.bias.zero_()
    e.eval()
    for t in (0.0, 0.45, 1.0):
        assert_canonical(e.gaussians_at(t), e)
    e.train()
    e.on_step(10**6)
    assert_canonical(e.gaussians_at(camera(0.3, 2)), e)


def test_ed3dgs_annealing_train_vs_eval():
    e = build(ED3DGS)
    randomise_canonical(e)
    with torch.no_grad():
        e.table["embedding"].copy_(torch.randn_like(e.table["embedding"]))
    # train mode, step 0: every factor is 0 -> canonical although the heads are not zero
    e.train()
    e.on_step(0)
    assert_canonical(e.gaussians_at(0.4), e)
    # eval mode: fully ramped in, the same as training long after every ramp
    e.eval()
    ev = e.gaussians_at(0.4)
    assert float((ev.means - e.table["means"]).detach().abs().max()) > 1e-5
    e.train()
    e.on_step(10**6)
    assert max_diff(e.gaussians_at(0.4), ev) < 1e-6
    # early training (before deform_from): positions move, scales / opacities / colours do not yet
    e.on_step(e.config.deform_from // 2)
    early = e.gaussians_at(0.4)
    tab = e.table
    assert float((early.means - tab["means"]).detach().abs().max()) > 1e-6
    torch.testing.assert_close(early.scales, torch.exp(tab["scales"]))
    torch.testing.assert_close(early.opacities, torch.sigmoid(tab["opacities"]))
    torch.testing.assert_close(early.colors, torch.cat([tab["sh_dc"], tab["sh_rest"]], 1))


# ========================================================================================== Ex4DGS
def test_catmull_rom_endpoints_linear_data_and_tangent():
    g = torch.Generator().manual_seed(3)
    y0, y1, y2, y3 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    torch.testing.assert_close(catmull_rom(y0, y1, y2, y3, 0.0), y1, rtol=0, atol=1e-15)
    torch.testing.assert_close(catmull_rom(y0, y1, y2, y3, 1.0), y2, rtol=0, atol=1e-15)
    a, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ys = [a + b * k for k in range(4)]
    for u in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
        torch.testing.assert_close(catmull_rom(*ys, u), a + b * (1 + u), rtol=0, atol=1e-12)
    h = 1e-6  # central difference around u = 0: tangent (y2 - y0) / 2 (keyframe units)
    d0 = (catmull_rom(y0, y1, y2, y3, h) - catmull_rom(y0, y1, y2, y3, -h)) / (2 * h)
    torch.testing.assert_close(d0, (y2 - y0) / 2, rtol=0, atol=1e-6)
    d1 = (catmull_rom(y0, y1, y2, y3, 1 + h) - catmull_rom(y0, y1, y2, y3, 1 - h)) / (2 * h)
    torch.testing.assert_close(d1, (y3 - y1) / 2, rtol=0, atol=1e-6)


def test_slerp_quarter_turn_about_z():
    q0 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    q1 = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)], dtype=torch.float64)  # 90 deg
    half = slerp(q0, q1, torch.tensor(0.5, dtype=torch.float64))
    expected = torch.tensor([math.cos(math.pi / 8), 0.0, 0.0, math.sin(math.pi / 8)], dtype=torch.float64)
    torch.testing.assert_close(half, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(slerp(q0, q1, torch.tensor(0.0, dtype=torch.float64)), q0, rtol=0, atol=1e-12)
    torch.testing.assert_close(slerp(q0, q1, torch.tensor(1.0, dtype=torch.float64)), q1, rtol=0, atol=1e-12)
    # un-normalised inputs: the same result; random inputs: unit norm
    torch.testing.assert_close(slerp(3 * q0, 0.5 * q1, torch.tensor(0.5, dtype=torch.float64)), expected,
                               rtol=0, atol=1e-12)
    a, b, u = torch.randn(100, 4), torch.randn(100, 4), torch.rand(100)
    torch.testing.assert_close(slerp(a, b, u).norm(dim=-1), torch.ones(100))


def test_temporal_window_flat_top_and_tails():
    center = torch.tensor([[2.0, 5.0]], dtype=torch.float64)
    log_var = torch.tensor([[math.log(0.5), math.log(1.5)]], dtype=torch.float64)
    var_min = 0.6
    w0, w1 = 0.5 + var_min / 2.36, 1.5 + var_min / 2.36
    for tau in (2.001, 3.0, 4.5, 4.999):
        assert float(temporal_window(tau, center, log_var, var_min)) == 1.0
    assert float(temporal_window(2.0 - w0, center, log_var, var_min)) == pytest.approx(math.exp(-1), rel=1e-12)
    assert float(temporal_window(5.0 + w1, center, log_var, var_min)) == pytest.approx(math.exp(-1), rel=1e-12)
    assert float(temporal_window(2.0 - 2 * w0, center, log_var, var_min)) == pytest.approx(math.exp(-4), rel=1e-12)
    assert float(temporal_window(5.0 + 0.5 * w1, center, log_var, var_min)) == pytest.approx(math.exp(-0.25),
                                                                                             rel=1e-12)


def _drifting_ex4dgs(tiny_others: bool) -> Ex4DGS:
    e = build(Ex4DGS)
    with torch.no_grad():
        disp = e.table["disp"]
        if tiny_others:
            disp.copy_(torch.randn_like(disp) * 1e-3)
        disp[0] = torch.tensor([1.0, 0.5, -0.2])
    return e


def test_ex4dgs_convert_picks_the_drifting_gaussians():
    e = _drifting_ex4dgs(tiny_others=True)
    tab = e.table
    n_dyn = e.convert_to_dynamic()
    dyn = tab["dynamic"].bool()
    assert n_dyn == int(dyn.sum()) == e.num_dynamic
    assert bool(dyn[0])
    assert 1 <= n_dyn <= N_POINTS // 5  # only the top few (extract_percentile 0.9 of 50)
    # every converted Gaussian drifts more, relative to its squared distance to the cameras'
    # centroid, than every one left static
    cams = make_init().camera_centres.double()
    score = tab["disp"].detach().double().norm(dim=-1) / (tab["means"].detach().double()
                                                          - cams.mean(0)).square().sum(-1)
    assert float(score[dyn].min()) > float(score[~dyn].max())
    # keyframes start on the static trajectory: means + disp * frame / duration
    frames = torch.arange(e.num_keyframes, dtype=torch.float64) * 5 - 7  # interval 5, shift 2 + 5
    expected = (tab["means"].detach().double()[0, None] + tab["disp"].detach().double()[0, None]
                * (frames[:, None] / 30))
    torch.testing.assert_close(tab["keyframes"][0].detach().double(), expected, atol=1e-6, rtol=0)
    # a second call does not convert the same Gaussians again
    before = dyn.clone()
    e.convert_to_dynamic()
    assert bool(tab["dynamic"].bool()[before].all())


def test_ex4dgs_convert_single_drifting_gaussian():
    e = _drifting_ex4dgs(tiny_others=False)
    assert e.convert_to_dynamic() == 1
    assert e.table["dynamic"].tolist() == [1.0] + [0.0] * (N_POINTS - 1)


def test_ex4dgs_dynamic_gaussian_hits_its_keyframes():
    e = _drifting_ex4dgs(tiny_others=True)
    e.convert_to_dynamic()
    assert bool(e.table["dynamic"][0])
    with torch.no_grad():  # hand-set keyframes, far from the linear initialisation
        e.table["keyframes"][0] = torch.randn(e.num_keyframes, 3) * 2
        e.table["keyframe_rots"][0] = torch.randn(e.num_keyframes, 4)
    frames = e.keyframe_frames()
    assert frames.tolist() == [5.0 * k - 7.0 for k in range(e.num_keyframes)]
    ks = [k for k in range(e.num_keyframes) if 0 <= float(frames[k]) < 30]
    assert ks == [2, 3, 4, 5, 6, 7]
    kf, kr = e.table["keyframes"].detach(), e.table["keyframe_rots"].detach()
    sig = torch.sigmoid(e.table["opacities"][0]).detach()
    for k in ks:
        g = e.gaussians_at(float(frames[k]) / 30)
        torch.testing.assert_close(g.means[0], kf[0, k], atol=1e-5, rtol=0)
        torch.testing.assert_close(F.normalize(g.quats[0], dim=-1), F.normalize(kr[0, k], dim=-1), atol=1e-5, rtol=0)
        torch.testing.assert_close(g.opacities[0], sig)  # the initial window spans the whole sequence
    # half-way between keyframes 3 and 4: the Catmull-Rom value of the float64 formula
    g = e.gaussians_at(float(frames[3] + 2.5) / 30)
    y = kf[0].double()
    ref = ((-0.5 * y[2] + 1.5 * y[3] - 1.5 * y[4] + 0.5 * y[5]) * 0.125
           + (y[2] - 2.5 * y[3] + 2 * y[4] - 0.5 * y[5]) * 0.25 + (-0.5 * y[2] + 0.5 * y[4]) * 0.5 + y[3])
    torch.testing.assert_close(g.means[0].double(), ref, atol=1e-5, rtol=0)


def test_ex4dgs_static_gaussians_move_linearly():
    e = build(Ex4DGS)
    with torch.no_grad():
        e.table["disp"].copy_(torch.randn_like(e.table["disp"]))
    m, d = e.table["means"].detach(), e.table["disp"].detach()
    for t in (0.0, 0.25, 0.5, 0.99, 1.0):
        g = e.gaussians_at(t)
        torch.testing.assert_close(g.means, m + d * t, atol=1e-6, rtol=0)
        torch.testing.assert_close(g.opacities, torch.sigmoid(e.table["opacities"]).detach())
        torch.testing.assert_close(g.quats, F.normalize(e.table["quats"], dim=-1).detach())


def test_ex4dgs_refuses_short_scenes():
    with pytest.raises(ExpertError, match="ex4dgs"):
        build(Ex4DGS, init=make_init(num_frames=9))  # tiny: interval 5 -> needs 10 frames
    build(Ex4DGS, init=make_init(num_frames=10))


def test_ex4dgs_storage_grows_with_dynamic_gaussians():
    e = _drifting_ex4dgs(tiny_others=True)
    static_bytes = e.storage_bytes()
    n = e.convert_to_dynamic()
    assert n >= 1
    k = e.num_keyframes
    per_dynamic_row = (k * 3 + k * 4 + 2 + 2) * 4  # keyframes, rotations, window centre and width (float32)
    assert e.storage_bytes() == static_bytes + n * per_dynamic_row
    assert static_bytes < e.storage_bytes()


# ============================================================================= Spacetime Gaussians
def test_stg_temporal_opacity_peaks_at_the_centre():
    e = build(SpacetimeGaussians)
    with torch.no_grad():
        e.table["opacities"][0] = 0.3
        e.table["trbf_center"][0] = 0.4
        e.table["trbf_scale"][0] = math.log(0.2)
    peak = 1 / (1 + math.exp(-0.3))
    op = lambda t: float(e.gaussians_at(t).opacities[0].detach())  # noqa: E731
    assert op(0.4) == pytest.approx(peak, rel=1e-6)
    for dt in (0.05, 0.1, 0.3):
        assert op(0.4 - dt) < op(0.4) and op(0.4 + dt) < op(0.4)
    assert op(0.6) == pytest.approx(peak * math.exp(-1), rel=1e-5)  # dt = exp(trbf_scale) = 0.2
    assert op(0.2) == pytest.approx(peak * math.exp(-1), rel=1e-5)
    assert op(0.0) == pytest.approx(peak * math.exp(-4), rel=1e-5)  # dt = -2 widths


def test_stg_polynomial_motion_and_linear_rotation():
    e = build(SpacetimeGaussians)
    with torch.no_grad():
        e.table["motion"][0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0])
        e.table["trbf_center"][0] = 0.25
        e.table["quats"][0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        e.table["omega"][0] = torch.tensor([0.0, 0.0, 0.0, 2.0])
    m0 = e.table["means"][0].detach()
    g = e.gaussians_at(0.75)  # dt = 0.5
    torch.testing.assert_close(g.means[0] - m0, torch.tensor([0.5, 0.5, 0.375]), atol=1e-6, rtol=0)
    torch.testing.assert_close(F.normalize(g.quats[0], dim=-1), torch.tensor([1.0, 0, 0, 1.0]) / math.sqrt(2))
    g = e.gaussians_at(0.0)  # dt = -0.25
    torch.testing.assert_close(g.means[0] - m0, torch.tensor([-0.25, 0.125, -0.046875]), atol=1e-6, rtol=0)
    torch.testing.assert_close(F.normalize(g.quats[0], dim=-1), torch.tensor([1.0, 0, 0, -0.5]) / math.sqrt(1.25))
    # other rows have no motion: they stay put
    torch.testing.assert_close(g.means[1:], e.table["means"][1:].detach())


# ================================================================================= every expert
def test_registry_lists_these_five():
    assert set(BUILTIN_EXPERTS) == {c.info.id for c in ALL_EXPERTS}


def _prepare(expert: Expert) -> None:
    """Switch on every part of the model (fine stage, ramps, dynamic Gaussians)."""
    expert.on_step(10**6)  # 4dgs: deformation on; e-d3dgs: step -> every ramp fully on
    if isinstance(expert, Ex4DGS):
        with torch.no_grad():
            expert.table["disp"].copy_(torch.randn_like(expert.table["disp"]) * 0.1)
        assert expert.convert_to_dynamic() > 0  # keyframes are used only by dynamic Gaussians


@pytest.fixture(scope="module")
def contract_scene(tmp_path_factory):
    return tiny_scene(tmp_path_factory.mktemp("contract") / "kitchen")


@pytest.mark.parametrize("cls", ALL_EXPERTS, ids=_ids)
def test_expert_passes_the_contract(cls, contract_scene):
    """The contract anyone can run (moegs_bench.adapters.testing): gradients reach every group,
    state_dict round trip across N, pruning of attached columns, determinism, gaussians_at
    conventions, a few trainer steps; with every part of the model switched on."""
    report = check_expert(cls, scene=contract_scene, prepare=_prepare)
    assert [r.name for r in report.results] == [name for name, _, _ in CHECKS]
    assert report.passed, report.summary()


@pytest.mark.parametrize("cls", ALL_EXPERTS, ids=_ids)
def test_colours_hold_every_sh_band(cls):
    """Beyond the contract (K >= the active degree's bands): ours keep all (max degree + 1)^2."""
    e = build(cls)
    _prepare(e)
    for deg in range(e.max_sh_degree + 1):
        e.active_sh_degree.fill_(deg)
        g = e.gaussians_at(camera(0.5, 2))
        assert g.sh_degree == deg and g.colors.shape == (N_POINTS, (e.max_sh_degree + 1) ** 2, 3)


_EXPECTED_STEP_FIELDS = {  # each expert's own step-counting fields, with hand-set values
    "4dgs": {"coarse_iterations": 300},
    "e-d3dgs": {"c2f_iterations": 600, "deform_from": 200, "anneal_steps": 100},
    "ex4dgs": {"convert_every": 100, "convert_from": 150, "convert_until": 1500},
    "stg": {},
    "static": {},
}


@pytest.mark.parametrize("cls", ALL_EXPERTS, ids=_ids)
def test_with_iterations_scales_step_fields(cls):
    own = _EXPECTED_STEP_FIELDS[cls.info.id]
    assert set(cls.config_class.STEP_FIELDS) == set(own)
    train = TrainConfig(iterations=2000, position_lr_max_steps=2000, sh_increase_every=500, densify_from=200,
                        densify_until=1500, densify_every=100, opacity_reset_every=0, checkpoint_every=500)
    cfg = dataclasses.replace(cls.profile("tiny"), train=train, **own)  # hand-set schedule
    half = cfg.with_iterations(1000)
    assert type(half) is type(cfg)
    assert half.train.iterations == 1000
    assert half.train.densify_until == 750
    assert half.train.densify_from == 100 and half.train.densify_every == 50
    assert half.train.position_lr_max_steps == 1000 and half.train.sh_increase_every == 250
    assert half.train.opacity_reset_every == 0  # 0 means 'never' and stays 0
    for k, v in own.items():
        assert getattr(half, k) == v // 2, k
    double = cfg.with_iterations(4000)
    assert double.train.densify_until == 3000
    for k, v in own.items():
        assert getattr(double, k) == 2 * v, k
    # everything that does not count steps is unchanged
    step_names = set(own) | {"train"}
    for f in dataclasses.fields(cfg):
        if f.name not in step_names:
            assert getattr(half, f.name) == getattr(cfg, f.name), f.name
    for f in dataclasses.fields(TrainConfig):
        if f.name not in TrainConfig.STEP_FIELDS and f.name != "iterations":
            assert getattr(half.train, f.name) == getattr(cfg.train, f.name), f.name
    assert cfg.train.iterations == 2000  # the original is untouched
    # the halved schedule still builds an expert that uses it
    e = cls(half, make_init())
    assert e.config is half


@pytest.mark.parametrize("cls", ALL_EXPERTS, ids=_ids)
@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_config_dict_round_trip(cls, profile):
    cfg = cls.profile(profile)
    data = cfg.to_dict()
    data = json.loads(json.dumps(data))  # plain JSON
    back = cls.config_class.from_dict(data)
    assert back == cfg
    assert type(back) is type(cfg)
    with pytest.raises(ExpertError, match="unknown"):
        cls.config_class.from_dict({**data, "no_such_field": 1})


def test_ed3dgs_neighbours_follow_row_edits():
    """The embedding-smoothness neighbours are recomputed after any row edit, even when N is
    unchanged (prune 5, add 5)."""
    from moegs_bench.geometry import knn

    e = build(ED3DGS)
    e.regularization(0)
    n = e.num_gaussians
    keep = torch.ones(n, dtype=torch.bool)
    keep[:5] = False
    rows = {k: v.detach()[:5] + 0.5 for k, v in e.table.items()}
    e.table.edit_rows(keep=keep, new_rows=rows)
    e.regularization(0)
    _, idx = knn(e.table["means"].detach(), e.config.reg_neighbours)
    assert torch.equal(e._neighbours[1], idx)


def test_ed3dgs_smoothness_gradient_is_bitwise_repeatable():
    """The embedding-smoothness term gathers neighbours with index_select: its backward sums in a
    fixed order (advanced indexing's accumulate sums in a thread-dependent order on CPU, which made
    e-d3dgs training differ run to run). 20,000 Gaussians: large enough for parallel accumulation."""
    expert = build(ED3DGS, make_init(n=20_000))
    assert expert.config.reg_coef > 0 and expert.config.reg_neighbours > 0
    with torch.no_grad():
        expert.table["embedding"].normal_()

    def grad() -> torch.Tensor:
        expert.zero_grad(set_to_none=True)
        expert.regularization(1).backward()
        return expert.table["embedding"].grad.clone()

    first = grad()
    assert first.abs().sum() > 0
    for _ in range(3):
        assert torch.equal(grad(), first)
