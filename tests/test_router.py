"""The MoE-GS router: multi-expert rendering (router/render.py), the gates (router/gate.py) and the
mixture (router/mixture.py), against independent oracles.

Oracles: the public single-set ``moegs_bench.render.rasterize`` (one call per expert, router values
rendered as plain colour channels over *detached* geometry), the same call on the union of all
experts (the merged pass, Eq. 9), the float64 dense reference rasterizer of tests/reference_raster.py,
and hand-written float64 formulas for the gates (softmax, Phi as plain matmuls, rays via K^-1).
Scenes are tiny (3 experts x 40-80 Gaussians, 32x24 pixels) and mostly float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.adapters.base import SceneInit
from moegs_bench.adapters.registry import Registry
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.render import rasterize, sh_to_rgb
from moegs_bench.router.gate import (
    ROUTER_COLUMNS,
    ROUTER_INIT,
    attach_router,
    blend,
    build_router,
    pixel_mlp,
    ray_features,
    router_vectors,
)
from moegs_bench.router.config import ROUTER_PROFILES, RouterConfig
from moegs_bench.router.mixture import Mixture
from moegs_bench.router.render import RENDER_MODES, render_experts
from reference_raster import reference_rasterize

W, H = 32, 24
K_EXPERTS = 3
R_CH = 3  # router channels (w, w_dir, t * w_time)
GEOMETRY = ("means", "quats", "scales", "opacities")
FIELDS = GEOMETRY + ("colors",)
COVER = 0.5 / 255  # any composited fragment has alpha >= 1/255, so alpha > COVER means "covered"


# ---------------------------------------------------------------------------------------------- scenes
def make_camera(dtype=torch.float64, eye=(0.0, 0.0, -4.0), target=(0.0, 0.0, 0.0), time=0.0) -> Camera:
    """A look-at camera; ``dtype`` float64 keeps K, viewmat (and so campos) exact for the oracles."""
    cam = Camera.look_at(eye, target, width=W, height=H, fov_x_deg=60.0, time=time)
    return Camera(K=cam.K.to(dtype), viewmat=cam.viewmat.to(dtype), width=W, height=H, time=time)


def random_expert(n: int, seed: int, *, x_range=(-1.3, 1.3), y_range=(-0.9, 0.9), scale=(0.05, 0.25),
                  sh: bool = False, opaque: bool = False, dtype=torch.float64) -> dict[str, torch.Tensor | int | None]:
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi, *shape: lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)  # noqa: E731
    means = torch.stack([u(*x_range, n), u(*y_range, n), u(-0.8, 0.8, n)], 1)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.exp(u(math.log(scale[0]), math.log(scale[1]), n, 3))
    opac = u(0.9, 1.0, n) if opaque else u(0.15, 0.95, n)
    if opaque:
        opac[:4] = 1.0  # alpha clamped to 0.999 at the centre
    colors = torch.randn(n, 4, 3, generator=g, dtype=dtype) * 0.4 if sh else u(0.0, 1.0, n, 3)
    router = torch.randn(n, R_CH, generator=g, dtype=dtype)
    return {"means": means, "quats": quats, "scales": scales, "opacities": opac, "colors": colors,
            "sh_degree": 1 if sh else None, "router": router}


def overlapping_scene(seed: int, opaque: bool = False) -> list[dict]:
    """Three experts spread over the whole image (they overlap); expert 0 has SH colours.
    ``opaque``: nearly opaque, larger Gaussians, so every expert reaches the transmittance stop."""
    if opaque:
        return [random_expert(80, 100 * seed + k, sh=(k == 0), opaque=True, scale=(0.15, 0.4))
                for k in range(K_EXPERTS)]
    return [random_expert(60, 100 * seed + k, sh=(k == 0)) for k in range(K_EXPERTS)]


def disjoint_scene(seed: int) -> list[dict]:
    """Three experts, each in its own vertical third of the image, far from the others, small."""
    # the image spans about x in [-2.3, 2.3] at depth 4; thirds centred at -1.5, 0, 1.5
    return [random_expert(40, 100 * seed + k, x_range=(c - 0.35, c + 0.35), y_range=(-0.8, 0.8), scale=(0.02, 0.06))
            for k, c in enumerate((-1.5, 0.0, 1.5))]


def leaves(scene: list[dict]) -> list[dict]:
    """Fresh leaf copies of every tensor (geometry, colours, router) requiring grad."""
    return [{k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v) for k, v in e.items()}
            for e in scene]


def states_of(experts: list[dict]) -> list[GaussianState]:
    return [GaussianState(e["means"], e["quats"], e["scales"], e["opacities"], e["colors"], sh_degree=e["sh_degree"])
            for e in experts]


def single(e: dict, cam: Camera, colors=None, bg=None, detach: bool = False):
    """The public single-set API on one Gaussian set: (image, alpha); ``colors`` replaces the
    expert's own (SH) colours, e.g. by its router values."""
    geo = [e[k].detach() if detach else e[k] for k in GEOMETRY]
    img, alpha, _ = rasterize(*geo, e["colors"] if colors is None else colors, cam.viewmat, cam.K, W, H,
                              backgrounds=bg, sh_degree=e["sh_degree"] if colors is None else None, backend="torch")
    return img, alpha


def union(experts: list[dict]) -> dict:
    """All experts' Gaussians (geometry and router values) as one set."""
    return {k: torch.cat([e[k] for e in experts]) for k in GEOMETRY + ("router",)}


def rgb_of(e: dict, cam: Camera) -> torch.Tensor:
    """The expert's colours as RGB at ``cam`` (its SH evaluated, as the renderers do)."""
    if e["sh_degree"] is None:
        return e["colors"]
    return sh_to_rgb(e["sh_degree"], e["colors"], e["means"] - cam.campos.to(e["means"]))


def loss_weights(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(10_000 + seed)
    return (torch.randn(K_EXPERTS, H, W, 3, generator=g, dtype=dtype),
            torch.randn(K_EXPERTS, H, W, R_CH, generator=g, dtype=dtype),
            torch.randn(K_EXPERTS, H, W, 1, generator=g, dtype=dtype))


def mixed_loss(images, maps, alphas, weights) -> torch.Tensor:
    wi, wr, wa = weights
    return (images * wi).sum() + (maps * wr).sum() + (alphas * wa).sum()


def grads(experts: list[dict], names=FIELDS + ("router",)) -> list[dict]:
    return [{k: e[k].grad for k in names} for e in experts]


def assert_close(a, b, atol, what=""):
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    err = float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3e} > {atol:.1e}"


def background(use_bg: bool, dtype=torch.float64):
    return torch.tensor([0.2, 0.5, 0.9], dtype=dtype) if use_bg else None


# ------------------------------------------------------------------------- 1. exact == separate == reference
def oracle_outputs(experts: list[dict], cam: Camera, bg):
    """Per expert, via ``rasterize`` alone: image (with bg), router maps (detached geometry, over 0), alpha."""
    imgs, maps, alphas = [], [], []
    for e in experts:
        img, alpha = single(e, cam, bg=bg)
        m, _ = single(e, cam, colors=e["router"], detach=True)
        imgs.append(img), maps.append(m), alphas.append(alpha)
    return torch.stack(imgs), torch.stack(maps), torch.stack(alphas)


@pytest.mark.parametrize("use_bg", [False, True], ids=["no-bg", "bg"])
@pytest.mark.parametrize("seed,opaque", [(0, False), (1, False), (2, True)], ids=["seed0", "seed1", "opaque"])
def test_exact_separate_reference_agree_with_rasterize_float64(seed, opaque, use_bg):
    cam, scene, weights = make_camera(), overlapping_scene(seed, opaque), loss_weights(seed)
    bg = background(use_bg)

    oracle = leaves(scene)
    o_img, o_map, o_alpha = oracle_outputs(oracle, cam, bg)
    assert float(o_alpha.detach().amin(0).max()) > 0.5, "experts do not overlap: the test would be weak"
    if opaque:  # every expert stops on its own transmittance somewhere (1 - alpha <= 1e-4)
        assert (o_alpha.detach().flatten(1).amax(1) > 1 - 1.5e-4).all()
    mixed_loss(o_img, o_map, o_alpha, weights).backward()
    want = grads(oracle)

    for mode in ("reference", "separate", "exact"):
        ex = leaves(scene)
        out = render_experts(states_of(ex), cam, router=[e["router"] for e in ex], mode=mode, background=bg,
                             backend="torch")
        assert out.info["mode"] == mode and out.images.dtype == torch.float64
        assert out.images.shape == (K_EXPERTS, H, W, 3) and out.router_maps.shape == (K_EXPERTS, H, W, R_CH)
        assert out.alphas.shape == (K_EXPERTS, H, W, 1)
        assert_close(out.images, o_img, 1e-12, f"{mode} images")
        assert_close(out.router_maps, o_map, 1e-12, f"{mode} router maps")
        assert_close(out.alphas, o_alpha, 1e-12, f"{mode} alphas")
        mixed_loss(out.images, out.router_maps, out.alphas, weights).backward()
        for k, (got, ref) in enumerate(zip(grads(ex), want)):
            for name in FIELDS + ("router",):
                assert got[name] is not None, f"{mode} expert {k} {name}: no gradient"
                assert float(ref[name].abs().max()) > 0, f"expert {k} {name}: oracle gradient is zero"
                scale = float(ref[name].abs().max())
                assert_close(got[name], ref[name], 1e-9 * max(1.0, scale), f"{mode} expert {k} d/d{name}")


@pytest.mark.parametrize("use_bg", [False, True], ids=["no-bg", "bg"])
@pytest.mark.parametrize("seed", [3, 4])
def test_modes_agree_in_float32(seed, use_bg):
    """The float32 path: exact == separate == reference to 1e-5 (images, maps, alphas, gradients)."""
    cam = make_camera(torch.float32)
    scene = [{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in e.items()}
             for e in overlapping_scene(seed)]
    weights = loss_weights(seed, torch.float32)
    bg = background(use_bg, torch.float32)
    outs, gs = {}, {}
    for mode in ("reference", "separate", "exact"):
        ex = leaves(scene)
        out = render_experts(states_of(ex), cam, router=[e["router"] for e in ex], mode=mode, background=bg,
                             backend="torch")
        mixed_loss(out.images, out.router_maps, out.alphas, weights).backward()
        outs[mode], gs[mode] = out, grads(ex)
    for mode in ("separate", "exact"):
        for field in ("images", "router_maps", "alphas"):
            assert_close(getattr(outs[mode], field), getattr(outs["reference"], field), 1e-5, f"{mode} {field}")
        for k in range(K_EXPERTS):
            for name, ref in gs["reference"][k].items():
                scale = float(ref.abs().max())
                assert scale > 0
                assert_close(gs[mode][k][name], ref, 1e-4 * max(1.0, scale), f"{mode} expert {k} d/d{name}")


def test_exact_matches_dense_float64_reference():
    """Exact mode against the dense, tile-free reference rasterizer of the tests (no shared code)."""
    cam, scene = make_camera(), overlapping_scene(5)
    out = render_experts(states_of(scene), cam, router=[e["router"] for e in scene], mode="exact", backend="torch")
    for k, e in enumerate(scene):
        rgb = rgb_of(e, cam)
        img, alpha = reference_rasterize(e["means"], e["quats"], e["scales"], e["opacities"],
                                         torch.cat([rgb, e["router"]], 1), cam.viewmat, cam.K, W, H)
        assert_close(out.images[k], img[..., :3], 1e-9, f"expert {k} image")
        assert_close(out.router_maps[k], img[..., 3:], 1e-9, f"expert {k} router maps")
        assert_close(out.alphas[k], alpha, 1e-9, f"expert {k} alpha")


@pytest.mark.parametrize("case", ["invisible", "empty"])
def test_expert_with_nothing_on_screen(case):
    """An expert behind the camera, or with no Gaussians at all: zero image share, zero gradients,
    the others unchanged, in every mode that composites experts on their own."""
    cam, scene, weights = make_camera(), overlapping_scene(12), loss_weights(12)
    odd = dict(scene[1])
    if case == "invisible":
        odd["means"] = odd["means"] + torch.tensor([0.0, 0.0, -10.0], dtype=torch.float64)
    else:
        odd = {k: (v[:0] if isinstance(v, torch.Tensor) else v) for k, v in odd.items()}
    scene = [scene[0], odd, scene[2]]
    bg = background(True)
    oracle = leaves(scene)
    o_img, o_map, o_alpha = oracle_outputs(oracle, cam, bg)
    assert not o_alpha[1].any()
    mixed_loss(o_img, o_map, o_alpha, weights).backward()
    for mode in ("reference", "separate", "exact"):
        ex = leaves(scene)
        out = render_experts(states_of(ex), cam, router=[e["router"] for e in ex], mode=mode, background=bg,
                             backend="torch")
        assert_close(out.images, o_img, 1e-12, f"{mode} images")
        assert_close(out.router_maps, o_map, 1e-12, f"{mode} router maps")
        assert_close(out.alphas, o_alpha, 1e-12, f"{mode} alphas")
        mixed_loss(out.images, out.router_maps, out.alphas, weights).backward()
        for k in range(K_EXPERTS):
            for name in FIELDS + ("router",):
                got, ref = ex[k][name].grad, oracle[k][name].grad
                got = torch.zeros_like(ex[k][name]) if got is None else got
                assert_close(got, ref, 1e-9 * max(1.0, float(ref.abs().max()) if ref.numel() else 1.0),
                             f"{mode} expert {k} d/d{name}")


def test_without_router_values():
    cam, scene = make_camera(), overlapping_scene(6)
    o_img, _, o_alpha = oracle_outputs(scene, cam, None)
    for mode in ("reference", "separate", "exact"):
        out = render_experts(states_of(scene), cam, mode=mode, backend="torch")
        assert out.router_maps.shape == (K_EXPERTS, H, W, 0)
        assert_close(out.images, o_img, 1e-12, f"{mode} images")
        assert_close(out.alphas, o_alpha, 1e-12, f"{mode} alphas")


def test_pass_counts_and_bad_inputs():
    cam, scene = make_camera(), overlapping_scene(7)
    router = [e["router"] for e in scene]
    counts = {m: render_experts(states_of(scene), cam, router=router, mode=m, backend="torch").info["rasterizations"]
              for m in RENDER_MODES}
    assert counts == {"reference": 2 * K_EXPERTS, "separate": K_EXPERTS, "merged": 1, "exact": 1}
    with pytest.raises(InputError):
        render_experts(states_of(scene), cam, mode="fast")
    with pytest.raises(InputError):
        render_experts(states_of(scene), cam, router=router[:2])
    with pytest.raises(InputError):
        render_experts(states_of(scene), cam, router=[r[:-1] for r in router])
    with pytest.raises(InputError):
        render_experts([], cam)


# ------------------------------------------------------------------------- 2. router maps use detached geometry
@pytest.mark.parametrize("mode", RENDER_MODES)
def test_router_maps_do_not_move_geometry(mode):
    cam, scene = make_camera(), overlapping_scene(8)
    ex = leaves(scene)
    out = render_experts(states_of(ex), cam, router=[e["router"] for e in ex], mode=mode,
                         background=background(True), backend="torch")
    g = torch.Generator().manual_seed(3)
    (out.router_maps * torch.randn(out.router_maps.shape, generator=g, dtype=torch.float64)).sum().backward()
    for k, e in enumerate(ex):
        for name in FIELDS:
            assert e[name].grad is None or not e[name].grad.any(), f"{mode}: router maps move expert {k}'s {name}"
        assert e["router"].grad is not None and e["router"].grad.abs().max() > 0, f"{mode}: router values get no grad"


@pytest.mark.parametrize("mode", ["reference", "separate", "exact"])
def test_image_loss_gives_single_set_geometry_gradients(mode):
    cam, scene = make_camera(), overlapping_scene(9)
    bg = background(True)
    wi = torch.randn(K_EXPERTS, H, W, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ex = leaves(scene)
    out = render_experts(states_of(ex), cam, router=[e["router"] for e in ex], mode=mode, background=bg,
                         backend="torch")
    (out.images * wi).sum().backward()
    for k, e in enumerate(scene):
        ref = leaves([e])[0]
        img, _ = single(ref, cam, bg=bg)
        (img * wi[k]).sum().backward()
        for name in FIELDS:
            scale = float(ref[name].grad.abs().max())
            assert scale > 0
            assert_close(ex[k][name].grad, ref[name].grad, 1e-9 * max(1.0, scale), f"{mode} expert {k} d/d{name}")
        assert ex[k]["router"].grad is None or not ex[k]["router"].grad.any()


# ------------------------------------------------------------------------- 3. merged: one shared transmittance
def merged_oracle(experts: list[dict], cam: Camera, bg):
    """Eq. 9 with ``rasterize`` alone: the union of all Gaussians, colours (and router values) in
    one-hot expert slots, one transmittance; router slots over detached geometry."""
    u = union(experts)
    n = [e["means"].shape[0] for e in experts]
    onehot = torch.block_diag(*[torch.ones(m, 1, dtype=torch.float64) for m in n])  # [M, K]
    rgb = torch.cat([rgb_of(e, cam) for e in experts])
    col = (onehot[:, :, None] * rgb[:, None, :]).flatten(1)  # [M, K*3]
    rt = (onehot[:, :, None] * u["router"][:, None, :]).flatten(1)
    img, alpha, _ = rasterize(*(u[k] for k in GEOMETRY), col, cam.viewmat, cam.K, W, H,
                              backgrounds=None if bg is None else bg.repeat(K_EXPERTS), backend="torch")
    maps, _, _ = rasterize(*(u[k].detach() for k in GEOMETRY), rt, cam.viewmat, cam.K, W, H, backend="torch")
    images = img.view(H, W, K_EXPERTS, 3).permute(2, 0, 1, 3)
    maps = maps.view(H, W, K_EXPERTS, R_CH).permute(2, 0, 1, 3)
    return images, maps, alpha.expand(K_EXPERTS, H, W, 1)


@pytest.mark.parametrize("use_bg", [False, True], ids=["no-bg", "bg"])
def test_merged_matches_union_oracle_with_gradients(use_bg):
    cam, scene, weights = make_camera(), overlapping_scene(10), loss_weights(10)
    bg = background(use_bg)
    oracle = leaves(scene)
    mixed_loss(*merged_oracle(oracle, cam, bg), weights).backward()
    ex = leaves(scene)
    out = render_experts(states_of(ex), cam, router=[e["router"] for e in ex], mode="merged", background=bg,
                         backend="torch")
    o_img, o_map, o_alpha = merged_oracle(scene, cam, bg)
    assert_close(out.images, o_img, 1e-12, "merged images")
    assert_close(out.router_maps, o_map, 1e-12, "merged router maps")
    assert_close(out.alphas, o_alpha, 1e-12, "merged alphas")
    mixed_loss(out.images, out.router_maps, out.alphas, weights).backward()
    for k in range(K_EXPERTS):
        for name in FIELDS + ("router",):
            ref = oracle[k][name].grad
            scale = float(ref.abs().max())
            assert scale > 0
            assert_close(ex[k][name].grad, ref, 1e-9 * max(1.0, scale), f"merged expert {k} d/d{name}")


def test_merged_composite_is_one_rasterization_of_the_union():
    """Eq. 9: sum_k of the merged images (background 0) == rasterize(union of all Gaussians)."""
    cam, scene = make_camera(), overlapping_scene(11)
    out = render_experts(states_of(scene), cam, router=[e["router"] for e in scene], mode="merged", backend="torch")
    u = union(scene)
    rgb = torch.cat([rgb_of(e, cam) for e in scene])
    img, alpha, _ = rasterize(*(u[k] for k in GEOMETRY), rgb, cam.viewmat, cam.K, W, H, backend="torch")
    maps, _, _ = rasterize(*(u[k] for k in GEOMETRY), u["router"], cam.viewmat, cam.K, W, H, backend="torch")
    assert float(alpha.max()) > 0.9
    assert_close(out.images.sum(0), img, 1e-12, "sum of merged images")
    assert_close(out.router_maps.sum(0), maps, 1e-12, "sum of merged router maps")
    for k in range(K_EXPERTS):
        assert_close(out.alphas[k], alpha, 1e-12, f"merged alpha of expert {k}")
    # with a background every expert's share gets the shared (1 - alpha) * bg
    bg = background(True)
    with_bg = render_experts(states_of(scene), cam, mode="merged", background=bg, backend="torch")
    assert_close(with_bg.images, out.images + (1 - alpha) * bg, 1e-12, "merged images with background")


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_equals_separate_for_disjoint_experts(seed):
    """Without a background (with one, merged gives every expert's share the *shared*
    ``(1 - alpha) * bg``, also over the other experts' regions: see the composite test above)."""
    cam, scene = make_camera(), disjoint_scene(seed)
    router = [e["router"] for e in scene]
    sep = render_experts(states_of(scene), cam, router=router, mode="separate", backend="torch")
    mer = render_experts(states_of(scene), cam, router=router, mode="merged", backend="torch")
    covered = sep.alphas[..., 0] > COVER  # [K, H, W]
    assert covered.any(dim=(1, 2)).all(), "an expert is not visible: the test would be vacuous"
    assert int(covered.sum(0).max()) == 1, "the 'disjoint' experts overlap on screen"
    assert_close(mer.images, sep.images, 1e-12, "images")
    assert_close(mer.router_maps, sep.router_maps, 1e-12, "router maps")
    # merged alphas are the shared one: the sum of the disjoint experts' alphas
    assert_close(mer.alphas[0], sep.alphas.sum(0), 1e-12, "alphas")


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_differs_from_separate_only_where_experts_overlap(seed):
    cam, scene = make_camera(), overlapping_scene(20 + seed)
    router = [e["router"] for e in scene]
    sep = render_experts(states_of(scene), cam, router=router, mode="separate", backend="torch")
    mer = render_experts(states_of(scene), cam, router=router, mode="merged", backend="torch")
    overlap = (sep.alphas[..., 0] > COVER).sum(0) >= 2  # [H, W]
    assert overlap.any() and (~overlap).any(), "need pixels with and without overlap"
    diff = torch.cat([(mer.images - sep.images).abs(), (mer.router_maps - sep.router_maps).abs()], -1).amax((0, 3))
    assert float(diff[~overlap].max()) <= 1e-12, "merged differs from separate where at most one expert covers"
    assert float(diff[overlap].max()) > 1e-3, "merged never differs from separate: occlusion is not shared"


# ------------------------------------------------------------------------- 4. router maths on hand-made maps
def hand_maps() -> torch.Tensor:
    """K=3 experts, 2x3 pixels, channels (W, W_dir, W_time)."""
    Wc = torch.tensor([[[0.9, 0.1, 0.5], [0.0, 2.0, -1.0]],
                       [[0.2, 0.1, 0.5], [0.3, 1.0, -1.0]],
                       [[0.4, 0.7, 0.0], [0.6, -0.5, -3.0]]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    return torch.stack([Wc, torch.rand(3, 2, 3, generator=g, dtype=torch.float64),
                        torch.rand(3, 2, 3, generator=g, dtype=torch.float64)], -1)


def small_camera(time=0.3) -> Camera:
    cam = Camera.look_at((0.7, -0.4, -2.5), (0.1, 0.2, 0.3), width=3, height=2, fov_x_deg=50.0, time=time)
    return cam


def hand_softmax(x: list[float]) -> list[float]:
    e = [math.exp(v - max(x)) for v in x]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("T", [1.0, 0.1])
def test_volume_aware_gates_with_zero_phi_are_softmax_of_W_over_T(T):
    maps, cam = hand_maps(), small_camera()
    router = build_router("volume-aware", 3, temperature=T).double()
    with torch.no_grad():
        for p in router.phi.parameters():
            p.zero_()
    gates = router.gates(maps, cam).detach()
    assert gates.shape == (3, 2, 3)
    for i in range(2):
        for j in range(3):
            want = hand_softmax([float(maps[k, i, j, 0]) / T for k in range(3)])
            for k in range(3):
                assert abs(float(gates[k, i, j]) - want[k]) <= 1e-12, (T, i, j, k)
    torch.testing.assert_close(gates.sum(0), torch.ones(2, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    # the temperature argument overrides the constructor's
    torch.testing.assert_close(router.gates(maps, cam, temperature=1.0),
                               torch.softmax(maps[..., 0], 0), rtol=0, atol=1e-12)


def test_lower_temperature_sharpens_the_gate():
    maps, cam = hand_maps(), small_camera()
    torch.manual_seed(4)
    router = build_router("volume-aware", 3).double()
    sharp = router.gates(maps, cam, temperature=0.1).amax(0)
    soft = router.gates(maps, cam, temperature=1.0).amax(0)
    assert (sharp >= soft - 1e-12).all() and (sharp > soft + 1e-3).any()
    torch.testing.assert_close(router.gates(maps, cam, temperature=0.1).sum(0),
                               torch.ones(2, 3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_phi_layers():
    router = build_router("volume-aware", 4)
    convs = [m for m in router.phi if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(6, 8, 1, 1), (3, 6, 1, 1), (1, 3, 1, 1)]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.ReLU) for m in router.phi) == 2
    assert sum(p.numel() for p in router.parameters()) == 6 * 8 + 3 * 6 + 3
    assert build_router("volume", 2).phi is None and not list(build_router("volume", 2).parameters())
    mlp = pixel_mlp((5, 7, 2))
    assert [type(m).__name__ for m in mlp] == ["Conv2d", "ReLU", "Conv2d"]


def hand_rays(cam: Camera, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray of pixel (row i, column j) by hand: d = R^T K^-1 (j + .5, i + .5, 1), origin = -R^T t."""
    Kd, V = cam.K.double(), cam.viewmat.double()
    Rm, t = V[:3, :3], V[:3, 3]
    d = Rm.T @ torch.linalg.solve(Kd, torch.tensor([j + 0.5, i + 0.5, 1.0], dtype=torch.float64))
    return -Rm.T @ t, d / d.norm()


def test_volume_aware_logits_are_W_plus_phi_by_hand():
    maps, cam = hand_maps(), small_camera()
    torch.manual_seed(5)
    router = build_router("volume-aware", 3).double()
    with torch.no_grad():  # random weights with both signs, so the ReLUs cut somewhere
        for p in router.phi.parameters():
            p.normal_()
    W1, W2, W3 = (c.weight[:, :, 0, 0].detach() for c in router.phi if isinstance(c, torch.nn.Conv2d))
    logits = router.logits(maps, cam).detach()
    assert logits.shape == (3, 2, 3)
    relu_cut = False
    for i in range(2):
        for j in range(3):
            o, d = hand_rays(cam, i, j)
            for k in range(3):
                x = torch.cat([maps[k, i, j, 1:], o, d])  # 8 inputs
                h1 = W1 @ x
                relu_cut |= bool((h1 < 0).any())
                phi = W3 @ torch.relu(W2 @ torch.relu(h1))
                want = float(maps[k, i, j, 0] + phi[0])
                assert abs(float(logits[k, i, j]) - want) <= 1e-5, (i, j, k)  # rays are float32
    assert relu_cut, "no ReLU was active: the check would not see a missing nonlinearity"
    torch.testing.assert_close(router.gates(maps, cam), torch.softmax(logits, 0), rtol=0, atol=1e-12)


def test_volume_gate_is_the_W_channel():
    maps, cam = hand_maps(), small_camera()
    router = build_router("volume", 3, temperature=0.1)
    gates = router.gates(maps, cam)
    assert torch.equal(gates, maps[..., 0])  # no softmax, no temperature
    assert router.uses_gaussian_weights


def test_pixel_gate_ignores_maps_and_sums_to_one():
    maps, cam = hand_maps(), small_camera()
    torch.manual_seed(2)
    router = build_router("pixel", 3).double()
    assert not router.uses_gaussian_weights
    g1 = router.gates(maps, cam)
    g2 = router.gates(torch.randn_like(maps) * 10, cam)
    assert g1.shape == (3, 2, 3)
    assert torch.equal(g1, g2)
    torch.testing.assert_close(g1.sum(0), torch.ones(2, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (g1 > 0).all()
    assert not torch.allclose(g1, router.gates(maps, small_camera(0.9))), "the pixel gate ignores t"


def test_router_rejects_bad_arguments():
    with pytest.raises(InputError):
        build_router("volume-aware", 1)
    with pytest.raises(InputError):
        build_router("banana", 3)
    with pytest.raises(InputError):
        build_router("volume-aware", 3, temperature=0.0)
    with pytest.raises(InputError):
        build_router("volume-aware", 2).logits(hand_maps(), small_camera(0.0))  # 3 maps for a 2-expert router
    with pytest.raises(InputError):
        blend(torch.zeros(2, 2, 3, 3), torch.zeros(2, 2, 2))


def test_ray_features_by_hand():
    cam = make_camera(torch.float32, eye=(0.8, -0.6, -3.0), target=(0.2, 0.1, 0.5))
    rays = ray_features(cam)
    assert rays.shape == (6, H, W)
    origins, dirs = rays[:3].permute(1, 2, 0), rays[3:].permute(1, 2, 0)
    torch.testing.assert_close(origins, torch.tensor([0.8, -0.6, -3.0]).expand(H, W, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(H, W), rtol=0, atol=1e-6)
    for i, j in ((0, 0), (7, 19), (H - 1, W - 1)):
        o, d = hand_rays(cam, i, j)
        torch.testing.assert_close(origins[i, j].double(), o, rtol=0, atol=1e-5)
        torch.testing.assert_close(dirs[i, j].double(), d, rtol=0, atol=1e-6)
        # projecting a point on the ray lands on the pixel centre
        uv, depth = cam.project((o + 2.0 * d).float()[None])
        assert float(depth[0]) > 0
        torch.testing.assert_close(uv[0], torch.tensor([j + 0.5, i + 0.5]), rtol=0, atol=1e-3)


def test_blend_by_hand():
    images = torch.tensor([[[[1.0, 0.0, 0.5]], [[0.2, 0.4, 0.6]]],
                           [[[0.0, 1.0, 0.5]], [[1.0, 1.0, 1.0]]]])  # [K=2, H=2, W=1, 3]
    gates = torch.tensor([[[0.25], [1.0]], [[0.75], [0.0]]])  # [2, 2, 1]
    want = torch.tensor([[[0.25, 0.75, 0.5]], [[0.2, 0.4, 0.6]]])
    torch.testing.assert_close(blend(images, gates), want, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------- 5. router columns on a real expert
def scene_init(n: int = 40, seed: int = 0) -> SceneInit:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([-1.0, -0.8, -0.5]), torch.tensor([1.0, 0.8, 0.5])
    pts = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    return SceneInit(points=pts, colors=torch.rand(n, 3, generator=g), bounds=(lo, hi), extent=2.0,
                     num_frames=10, num_train_views=4, train_camera_ids=(0, 1, 2, 3),
                     camera_centres=torch.randn(4, 3, generator=g) * 3)


def build_expert(expert_id: str, seed: int = 0):
    cls = Registry.discover().get(expert_id)
    return cls(cls.profile("tiny"), scene_init(seed=seed))


def test_attach_router_columns_follow_the_expert():
    expert = build_expert("static")
    n = expert.num_gaussians
    attach_router(expert)
    state = expert.gaussians_at(0.5)
    for name, value in zip(ROUTER_COLUMNS, ROUTER_INIT):
        assert name in state.extras and state.extras[name].shape == (n,)
        assert torch.equal(state.extras[name], torch.full((n,), value))
        assert expert.table[name].requires_grad
    assert ROUTER_INIT == (0.9, 0.9, 0.0)
    # attaching again keeps trained values
    with torch.no_grad():
        expert.table["router_w_time"].copy_(torch.linspace(-1.0, 2.0, n))
        expert.table["router_w"].copy_(torch.linspace(0.0, 1.0, n))
    attach_router(expert)
    state = expert.gaussians_at(0.5)
    v = router_vectors(state.extras, 0.25)
    assert v.shape == (n, 3)
    torch.testing.assert_close(v[:, 0], torch.linspace(0.0, 1.0, n), rtol=0, atol=0)
    torch.testing.assert_close(v[:, 1], torch.full((n,), 0.9), rtol=0, atol=0)
    torch.testing.assert_close(v[:, 2], 0.25 * torch.linspace(-1.0, 2.0, n), rtol=0, atol=1e-7)
    # pruning removes router rows together with the Gaussians
    remove = torch.zeros(n, dtype=torch.bool)
    remove[::3] = True
    keep_w_time = expert.table["router_w_time"].detach()[~remove].clone()
    expert.prune(remove)
    state = expert.gaussians_at(0.5)
    assert expert.num_gaussians == n - int(remove.sum())
    for name in ROUTER_COLUMNS:
        assert state.extras[name].shape == (expert.num_gaussians,)
    torch.testing.assert_close(state.extras["router_w_time"], keep_w_time, rtol=0, atol=0)
    with pytest.raises(InputError):
        router_vectors({"router_w": torch.zeros(3)}, 0.0)


# ------------------------------------------------------------------------- 6. the mixture
def test_mixture_rejects_too_few_or_duplicate_experts():
    cfg = ROUTER_PROFILES["tiny"]
    with pytest.raises(InputError):
        Mixture([build_expert("static")], cfg)
    with pytest.raises(InputError):
        Mixture([build_expert("static", 0), build_expert("static", 1)], cfg)
    with pytest.raises(InputError):
        RouterConfig(variant="banana")
    with pytest.raises(InputError):
        RouterConfig(render_mode="fast")


def mixture_camera() -> Camera:
    return Camera.look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0), width=W, height=H, fov_x_deg=60.0, time=0.5)


@pytest.mark.parametrize("mode", ["exact", "merged"])
def test_frozen_mixture_trains_only_the_router(mode):
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    torch.manual_seed(0)  # Phi's init: without biases about 8% of random inits are dead ReLUs (no gradient)
    mix = Mixture(experts, RouterConfig(render_mode=mode))
    mix.freeze_experts()
    trainable = {n for n, p in mix.named_parameters() if p.requires_grad}
    columns = {f"experts.{k}.table.{c}" for k in range(2) for c in ROUTER_COLUMNS}
    phi = {f"router.{n}" for n, _ in mix.router.named_parameters()}
    assert len(phi) == 3
    assert trainable == columns | phi
    out = mix(mixture_camera(), background=torch.tensor([0.1, 0.2, 0.3]))
    assert out.image.shape == (H, W, 3) and out.gates.shape == (2, H, W)
    torch.testing.assert_close(out.gates.sum(0), torch.ones(H, W), rtol=0, atol=1e-5)
    assert out.experts.info["mode"] == mode
    target = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0))
    (out.image - target).abs().mean().backward()
    for n, p in mix.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().max() > 0, f"{n}: no gradient"
        else:
            assert p.grad is None, f"{n}: a frozen expert parameter got a gradient"
    # unfreezing gives the experts' own geometry gradients again
    mix.zero_grad(set_to_none=True)
    mix.freeze_experts(False)
    out = mix(mixture_camera())
    (out.image - target).abs().mean().backward()
    for k in range(2):
        assert mix.experts[k].table["means"].grad is not None and mix.experts[k].table["means"].grad.abs().max() > 0


def test_mixture_blend_matches_its_parts():
    """The mixture's image is blend(render_experts(...), gates(router maps)) recomputed here."""
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    torch.manual_seed(1)
    mix = Mixture(experts, RouterConfig(render_mode="separate"))
    cam = mixture_camera()
    with torch.no_grad():
        experts[0].table["router_w"].fill_(2.0)
        experts[1].table["router_w_time"].normal_()
        out = mix(cam)
        states = [e.gaussians_at(cam) for e in experts]
        multi = render_experts(states, cam, router=[router_vectors(s.extras, 0.5) for s in states], mode="exact")
        torch.testing.assert_close(out.experts.router_maps, multi.router_maps, rtol=0, atol=1e-5)
        gates = mix.router.gates(multi.router_maps, cam, mix.temperature)
        torch.testing.assert_close(out.gates, gates, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.image, (gates[..., None] * multi.images).sum(0), rtol=0, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal of the gsplat backend")
def test_gsplat_backend_without_cuda_is_refused():
    experts = overlapping_scene(0)
    with pytest.raises(InputError, match="backend='gsplat' unavailable"):
        render_experts(states_of(experts), make_camera(), backend="gsplat")


def test_merged_shares_split_the_shared_alpha():
    """Each expert's share A_k of the merged composite == rasterize(union) with one-hot 'ones' colours."""
    cam, scene = make_camera(), overlapping_scene(12)
    out = render_experts(states_of(scene), cam, router=[e["router"] for e in scene], mode="merged", backend="torch")
    u = union(scene)
    n = [e["means"].shape[0] for e in scene]
    onehot = torch.block_diag(*[torch.ones(m, 1, dtype=torch.float64) for m in n])  # [M, K]
    want, alpha, _ = rasterize(*(u[k] for k in GEOMETRY), onehot, cam.viewmat, cam.K, W, H, backend="torch")
    assert_close(out.shares[..., 0], want.permute(2, 0, 1), 1e-12, "shares")
    assert_close(out.shares.sum(0), alpha, 1e-12, "sum of shares")
    assert float(out.shares.min()) >= 0 and (out.shares > 0.05).sum(0).max() >= 2  # experts do overlap
    assert render_experts(states_of(scene), cam, mode="separate", backend="torch").shares is None


@pytest.mark.parametrize("use_bg", [False, True], ids=["no-bg", "bg"])
def test_merged_blend_of_disjoint_experts_is_the_covering_experts_image(use_bg):
    """Where one expert alone covers a pixel, blend_shares gives its separate image whatever the
    gates; where none does, the background."""
    from moegs_bench.router.render import blend_shares

    cam, scene, bg = make_camera(), disjoint_scene(3), background(use_bg)
    bg = torch.zeros(3, dtype=torch.float64) if bg is None else bg
    sep = render_experts(states_of(scene), cam, mode="separate", background=bg, backend="torch")
    mer = render_experts(states_of(scene), cam, mode="merged", background=bg, backend="torch")
    gates = torch.softmax(torch.randn(K_EXPERTS, H, W, generator=torch.Generator().manual_seed(0),
                                      dtype=torch.float64) * 3, 0)
    image = blend_shares(mer, gates, bg)
    covered = sep.alphas[..., 0] > 1e-9  # [K, H, W]
    assert int(covered.sum(0).max()) == 1
    owner = covered.to(torch.float64).argmax(0)  # [H, W]
    want = torch.gather(sep.images, 0, owner[None, :, :, None].expand(1, H, W, 3))[0]
    want = torch.where(covered.any(0)[..., None], want, bg)
    assert_close(image, want, 1e-9, "merged blend")


def test_mixture_temperature_follows_the_routers_training_flag():
    """Training T while the router trains, the evaluation T after eval(): gates are
    softmax(logits / T) with the T of the mode, by hand; the experts' flags are left alone."""
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    torch.manual_seed(3)
    mix = Mixture(experts, RouterConfig(temperature=0.25, eval_temperature=4.0))
    cam = mixture_camera()
    for e in mix.experts:
        e.train(False)  # router training with frozen experts
    with torch.no_grad():
        assert mix.router.training and mix.temperature == 0.25
        train = mix(cam)
        logits = mix.router.logits(train.experts.router_maps, cam)
        assert float(logits.std()) > 0.05, "flat logits: the temperature would not show"
        torch.testing.assert_close(train.gates, torch.softmax(logits / 0.25, 0), rtol=0, atol=1e-6)
        mix.router.eval()
        assert [e.training for e in mix.experts] == [False, False]
        assert mix.temperature == 4.0
        test = mix(cam)
        torch.testing.assert_close(test.gates, torch.softmax(logits / 4.0, 0), rtol=0, atol=1e-6)
        assert float((test.gates - train.gates).abs().max()) > 1e-2
        mix.train()
        assert mix.temperature == 0.25 and torch.equal(mix(cam).gates, train.gates)
        mix.eval()
        assert torch.equal(mix(cam).gates, test.gates)
    # no evaluation T given: the training T in both modes (the reference code's choice is explicit)
    same = Mixture([build_expert("static", 0), build_expert("stg", 1)], RouterConfig(temperature=0.5))
    assert same.temperature == 0.5 and same.eval().temperature == 0.5


def test_mixture_takes_the_time_from_the_camera():
    """The router vectors and the gates see camera.time: the same camera at two times gives the
    gates of the router maps splatted at each time."""
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    torch.manual_seed(4)
    mix = Mixture(experts, RouterConfig(render_mode="exact")).eval()
    with torch.no_grad():
        experts[1].table["router_w_time"].normal_()
        outs = {t: mix(Camera.look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0), width=W, height=H, fov_x_deg=60.0, time=t))
                for t in (0.1, 0.9)}
        for t, out in outs.items():
            cam = Camera.look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0), width=W, height=H, fov_x_deg=60.0, time=t)
            states = [e.gaussians_at(t) for e in experts]
            multi = render_experts(states, cam, router=[router_vectors(s.extras, t) for s in states], mode="exact")
            torch.testing.assert_close(out.experts.router_maps, multi.router_maps, rtol=0, atol=1e-6)
        assert float((outs[0.1].gates - outs[0.9].gates).abs().max()) > 1e-3


def test_mixture_storage_bytes_by_hand():
    """Three float32 router columns per Gaussian of every expert, plus Phi's float32 weights."""
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    n = sum(e.num_gaussians for e in experts)
    assert Mixture(experts, RouterConfig()).storage_bytes() == 12 * n + 4 * (6 * 8 + 3 * 6 + 1 * 3)
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    assert Mixture(experts, RouterConfig(variant="volume")).storage_bytes() == 12 * n
    experts = [build_expert("static", 0), build_expert("stg", 1)]
    assert Mixture(experts, RouterConfig(variant="pixel")).storage_bytes() == 12 * n + 4 * (16 * 7 + 16 * 16 + 2 * 16)
