"""The doors into rendering: ``render(state, camera)``, ``rasterize_grouped`` and the backend policy.

Oracles: ``rasterize`` itself (``render`` must be exactly it on the state's and camera's tensors;
each group of ``rasterize_grouped`` must equal ``rasterize`` of that group alone, the shared
composite ``rasterize`` of the union) and hand-written expectations for the policy and errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.render import (
    BackendUnavailable,
    SplatGroup,
    colors_at,
    rasterize,
    rasterize_grouped,
    render,
    resolve_backend,
    sh_to_rgb,
)

W, H = 24, 18


def camera(dtype=torch.float32, time: float = 0.0) -> Camera:
    cam = Camera.look_at((0.3, -0.2, -3.5), (0.0, 0.0, 0.0), width=W, height=H, fov_x_deg=55.0, time=time,
                         near=0.05, far=40.0)
    return Camera(K=cam.K.to(dtype), viewmat=cam.viewmat.to(dtype), width=W, height=H, time=time, near=0.05, far=40.0)


def state(n: int, seed: int, *, sh_degree: int | None = None, dtype=torch.float32, shift: float = 0.0) -> GaussianState:
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi, *shape: lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)  # noqa: E731
    means = torch.stack([u(-1.2, 1.2, n) + shift, u(-0.9, 0.9, n), u(-0.6, 0.6, n)], 1)
    colors = (torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.4 if sh_degree is not None
              else u(0.0, 1.0, n, 3))
    return GaussianState(means, torch.randn(n, 4, generator=g, dtype=dtype),
                         torch.exp(u(math.log(0.05), math.log(0.3), n, 3)), u(0.2, 0.95, n), colors,
                         sh_degree=sh_degree)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


# ------------------------------------------------------------------------------------------- render
@pytest.mark.parametrize("sh_degree", [None, 0, 2])
@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED", "D"])
def test_render_is_rasterize_of_the_state_and_camera_bitwise(sh_degree, render_mode):
    """What training's render_expert calls: images, alphas, meta and gradients bit for bit."""
    cam, bg = camera(), torch.tensor([0.1, 0.5, 0.8])
    base = state(120, 1, sh_degree=sh_degree)
    outs = []
    for use_render in (True, False):
        leaves = [t.detach().clone().requires_grad_(True) for t in (base.means, base.quats, base.scales,
                                                                     base.opacities, base.colors)]
        gs = GaussianState(*leaves, sh_degree=sh_degree)
        if use_render:
            img, alpha, meta = render(gs, cam, background=bg, render_mode=render_mode)
        else:
            img, alpha, meta = rasterize(gs.means, gs.quats, gs.scales, gs.opacities, gs.colors, cam.viewmat, cam.K,
                                         cam.width, cam.height, backgrounds=bg, sh_degree=gs.sh_degree,
                                         near_plane=cam.near, far_plane=cam.far, render_mode=render_mode)
        w = torch.randn(img.shape, generator=torch.Generator().manual_seed(0))
        ((img * w).sum() + alpha.sum()).backward()
        outs.append((img, alpha, meta, [t.grad for t in leaves]))
    (img_a, alpha_a, meta_a, grads_a), (img_b, alpha_b, meta_b, grads_b) = outs
    assert float(alpha_a.detach().max()) > 0.5, "nothing on screen: the comparison would be vacuous"
    assert same(img_a, img_b) and same(alpha_a, alpha_b)
    assert meta_a["backend"] == meta_b["backend"] == "torch"
    for key in ("radii", "means2d", "depths"):
        assert same(meta_a[key], meta_b[key]), key
    assert grads_a[0] is not None and float(grads_a[0].abs().max()) > 0
    for ga, gb in zip(grads_a, grads_b):  # colours get none in depth-only mode, in both
        assert (ga is None and gb is None) or same(ga, gb)


def test_render_uses_the_camera_planes_and_options():
    """near/far come from the camera (a Gaussian in front of ``near`` is culled), eps2d is passed on."""
    gs = state(60, 2)
    near = Camera(K=camera().K, viewmat=camera().viewmat, width=W, height=H, near=3.4, far=40.0)
    _, alpha_all, _ = render(gs, camera())
    _, alpha_near, meta = render(gs, near)
    assert float(alpha_all.sum()) > float(alpha_near.sum())
    assert int((meta["radii"] > 0).any(-1).sum()) < gs.num_gaussians
    img_a, _, _ = render(gs, camera(), eps2d=0.0)
    img_b, _, _ = rasterize(gs.means, gs.quats, gs.scales, gs.opacities, gs.colors, camera().viewmat, camera().K,
                            W, H, near_plane=0.05, far_plane=40.0, eps2d=0.0)
    assert same(img_a, img_b)


def test_colors_at_is_the_sh_path_of_rasterize():
    gs, cam = state(30, 3, sh_degree=1), camera()
    campos = cam.campos
    assert same(colors_at(gs.colors, 1, gs.means, campos), sh_to_rgb(1, gs.colors, gs.means - campos))
    plain = state(30, 3)
    assert colors_at(plain.colors, None, plain.means, campos) is plain.colors


# ----------------------------------------------------------------------------------- backend policy
def test_backend_policy():
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(InputError, match="backend: expected auto, torch or gsplat, got 'nope'"):
        resolve_backend("nope", "cpu")
    with pytest.raises(BackendUnavailable, match="backend='gsplat' unavailable") as info:
        resolve_backend("gsplat", "cpu")  # never usable on CPU tensors
    assert info.value.reason


# ---------------------------------------------------------------------------------- rasterize_grouped
def groups_of(states: list[GaussianState], feats: list[torch.Tensor] | None = None) -> list[SplatGroup]:
    feats = feats or [s.colors for s in states]
    return [SplatGroup.of(s, f, f"expert {k}") for k, (s, f) in enumerate(zip(states, feats))]


def test_grouped_images_are_each_group_alone_and_shared_is_the_union():
    """float64: group g's image == rasterize(group g); shared == rasterize(union)."""
    cam = camera(torch.float64)
    states = [state(50, 10 + k, dtype=torch.float64, shift=0.4 * (k - 1)) for k in range(3)]
    bg = torch.tensor([0.3, 0.2, 0.7], dtype=torch.float64)
    imgs, alphas, meta = rasterize_grouped(groups_of(states), cam, background=bg, backend="torch")
    assert imgs.shape == (3, H, W, 3) and alphas.shape == (3, H, W, 1)
    assert meta == {"backend": "torch", "rasterizations": 1}

    def alone(s: GaussianState, colors: torch.Tensor, background) -> tuple[torch.Tensor, torch.Tensor]:
        img, alpha, _ = rasterize(s.means, s.quats, s.scales, s.opacities, colors, cam.viewmat, cam.K, W, H,
                                  backgrounds=background, near_plane=cam.near, far_plane=cam.far, backend="torch")
        return img, alpha

    for k, s in enumerate(states):
        img, alpha = alone(s, s.colors, bg)
        assert float(alpha.max()) > 0.5
        assert float((imgs[k] - img).abs().max()) <= 1e-12 and float((alphas[k] - alpha).abs().max()) <= 1e-12
    union = GaussianState.cat(states)
    img, alpha = alone(union, union.colors, bg)
    shared, shared_alpha, meta = rasterize_grouped(groups_of(states), cam, background=bg, shared=True, backend="torch")
    assert shared.shape == (1, H, W, 3) and meta["rasterizations"] == 1
    assert float((shared[0] - img).abs().max()) <= 1e-12 and float((shared_alpha[0] - alpha).abs().max()) <= 1e-12


def test_geo_channels_keep_the_other_channels_off_the_geometry():
    """A loss on channels past ``geo_channels`` moves the features but not the geometry."""
    cam = camera(torch.float64)
    s = state(40, 4, dtype=torch.float64)
    leaves = [t.detach().clone().requires_grad_(True) for t in (s.means, s.quats, s.scales, s.opacities)]
    feats = torch.rand(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    img, _, _ = rasterize_grouped([SplatGroup(*leaves, feats)], cam, geo_channels=3, backend="torch")
    img[..., 3:].sum().backward()
    assert feats.grad is not None and float(feats.grad[:, 3:].abs().max()) > 0
    for t in leaves:
        assert t.grad is None or not t.grad.any()


@pytest.mark.parametrize("field", ["means", "quats", "scales", "opacities", "features"])
def test_grouped_refuses_nan_naming_the_expert_and_tensor(field):
    states = [state(20, 20 + k) for k in range(3)]
    groups = groups_of(states)
    bad = getattr(groups[1], field).detach().clone()
    bad.view(-1)[5] = float("nan")
    groups[1] = SplatGroup(**{**{f: getattr(groups[1], f) for f in ("means", "quats", "scales", "opacities",
                                                                      "features", "name")}, field: bad})
    with pytest.raises(InputError, match=rf"^expert 1: {field}: contains 1 NaN/Inf value\(s\)$"):
        rasterize_grouped(groups, camera())


def test_grouped_names_unnamed_groups_by_position_and_checks_values():
    states = [state(20, 30 + k) for k in range(2)]
    groups = [SplatGroup.of(s, s.colors) for s in states]
    bad = groups[1].scales.clone()
    bad[0, 0] = -1.0
    groups[1] = SplatGroup(groups[1].means, groups[1].quats, bad, groups[1].opacities, groups[1].features)
    with pytest.raises(InputError, match=r"^groups\[1\]: scales: 1 value\(s\) <= 0"):
        rasterize_grouped(groups, camera())


def test_render_experts_refuses_nan_in_an_experts_state():
    """The mixture's path validates like ``rasterize``: a state changed in place after it was built
    (an optimiser step gone wrong) is caught, naming the expert."""
    from moegs_bench.router.render import render_experts

    states = [state(20, 40 + k) for k in range(3)]
    with torch.no_grad():
        states[2].opacities[3] = float("nan")
    with pytest.raises(InputError, match=r"^expert 2: opacities: contains 1 NaN/Inf"):
        render_experts(states, camera(), backend="torch")
    router = [torch.zeros(20, 3) for _ in range(3)]
    router[0][7, 1] = float("inf")
    with pytest.raises(InputError, match=r"^expert 0: features: contains 1 NaN/Inf"):
        render_experts(states[:2], camera(), router=router[:2], mode="reference", backend="torch")


@pytest.mark.parametrize(
    "case,needle",
    [
        ("empty", "no groups"),
        ("width", "expert 1: features: 2 channels, the first group has 3"),
        ("background", "background: expected shape [3]"),
        ("geo", "geo_channels: expected None or an int in [0, 3]"),
        ("camera", "camera: expected a moegs_bench.cameras.Camera"),
        ("dtype", "expert 1: means: torch.float64"),
        ("eps2d", "eps2d: expected a finite value >= 0"),
        ("backend", "backend: expected auto, torch or gsplat"),
    ],
)
def test_grouped_bad_inputs(case, needle):
    states = [state(10, 50 + k) for k in range(2)]
    groups = groups_of(states)
    kwargs: dict = {}
    cam: object = camera()
    if case == "empty":
        groups = []
    elif case == "width":
        groups[1] = SplatGroup.of(states[1], states[1].colors[:, :2], "expert 1")
    elif case == "background":
        kwargs["background"] = torch.zeros(4)
    elif case == "geo":
        kwargs["geo_channels"] = 4
    elif case == "camera":
        cam = (camera().viewmat, camera().K)
    elif case == "dtype":
        groups[1] = SplatGroup.of(states[1].to(dtype=torch.float64), states[1].colors.double(), "expert 1")
    elif case == "eps2d":
        kwargs["eps2d"] = -1.0
    else:
        kwargs["backend"] = "vulkan"
    with pytest.raises(InputError) as info:
        rasterize_grouped(groups, cam, **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal of the gsplat backend")
def test_grouped_gsplat_without_cuda_is_refused():
    states = [state(10, 60 + k) for k in range(2)]
    with pytest.raises(BackendUnavailable):
        rasterize_grouped(groups_of(states), camera(), backend="gsplat")
