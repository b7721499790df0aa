"""``rasterize`` input validation (InputError naming the argument) and graceful edge cases."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.render import rasterize
from reference_raster import reference_rasterize

N, D, W, H = 5, 3, 12, 10
POSITIONAL = ["means", "quats", "scales", "opacities", "colors", "viewmat", "K", "width", "height"]
TENSORS = ["means", "quats", "scales", "opacities", "colors", "viewmat", "K", "backgrounds"]


def _K(width=W, height=H, f=None):
    f = f if f is not None else width / (2 * math.tan(math.radians(30)))
    return torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.2], [0, 0, 1.0]])


def _viewmat(z=3.0):
    vm = torch.eye(4)
    vm[:3, 3] = torch.tensor([0.05, -0.02, z])
    return vm


def _valid(n=N, sh_degree=None, seed=0) -> dict:
    """Valid arguments of a small scene in front of the camera (keyword form)."""
    g = torch.Generator().manual_seed(seed)
    if sh_degree is None:
        colors = torch.rand(n, D, generator=g)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    return dict(
        means=torch.rand(n, 3, generator=g) - 0.5,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.empty(n, 3).uniform_(0.05, 0.2, generator=g),
        opacities=torch.empty(n).uniform_(0.2, 0.9, generator=g),
        colors=colors,
        viewmat=_viewmat(),
        K=_K(),
        width=W,
        height=H,
        backgrounds=torch.tensor([0.1, 0.4, 0.7]),
        sh_degree=sh_degree,
    )


def _render(args: dict):
    args = dict(args)
    pos = [args.pop(k) for k in POSITIONAL]
    return rasterize(*pos, **args)


def _expect_error(args: dict, name: str) -> str:
    with pytest.raises(InputError) as info:
        _render(args)
    msg = str(info.value)
    assert re.match(rf"{re.escape(name)}\b", msg), f"message does not start with {name!r}: {msg!r}"
    assert isinstance(info.value, ValueError)
    return msg


def test_valid_inputs_render():
    """The base case of every test below is itself valid (so each error is due to the one change)."""
    for sh_degree in (None, 0, 2):
        img, alpha, meta = _render(_valid(sh_degree=sh_degree))
        assert img.shape == (H, W, 3) and alpha.shape == (H, W, 1)
        assert alpha.max() > 0.1 and meta["backend"] == "torch"


# --------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", TENSORS)
@pytest.mark.parametrize("where", ["first", "last"])
def test_non_finite(name, bad, where):
    args = _valid()
    t = args[name].clone()
    t.view(-1)[0 if where == "first" else -1] = bad
    args[name] = t
    msg = _expect_error(args, name)
    assert "nan" in msg.lower() or "inf" in msg.lower()


@pytest.mark.parametrize("name", ["means", "opacities", "colors"])
def test_non_finite_single_gaussian(name):
    """One Gaussian: ``opacities`` has a single element, which must still be checked."""
    args = _valid(n=1)
    args[name].view(-1)[-1] = float("nan")
    _expect_error(args, name)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_sh_coefficients(bad):
    args = _valid(sh_degree=2)
    args["colors"][3, 7, 1] = bad
    _expect_error(args, "colors")


# --------------------------------------------------------------------------- shapes and types

SHAPES = [
    ("means", (N, 2)), ("means", (N, 4)), ("means", (N, 3, 1)), ("means", (3,)), ("means", (1, N, 3)),
    ("quats", (N + 1, 4)), ("quats", (N - 1, 4)), ("quats", (1, 4)), ("quats", (N, 3)), ("quats", (N, 4, 1)),
    ("scales", (N + 1, 3)), ("scales", (1, 3)), ("scales", (N, 1)), ("scales", (N,)),
    ("opacities", (N + 1,)), ("opacities", (1,)), ("opacities", (N, 1)), ("opacities", ()),
    ("colors", (N - 1, D)), ("colors", (1, D)), ("colors", (N,)), ("colors", (N, D, 1)),
    ("viewmat", (3, 4)), ("viewmat", (1, 4, 4)), ("viewmat", (16,)), ("viewmat", (4, 3)),
    ("K", (2, 3)), ("K", (4, 4)), ("K", (1, 3, 3)), ("K", (9,)),
    ("backgrounds", (D + 1,)), ("backgrounds", (1,)), ("backgrounds", (1, D)), ("backgrounds", ()),
]


@pytest.mark.parametrize("name,shape", SHAPES, ids=[f"{n}-{list(s)}" for n, s in SHAPES])
def test_wrong_shape(name, shape):
    args = _valid()
    args[name] = torch.full(shape, 0.5)
    msg = _expect_error(args, name)
    assert str(tuple(shape)) in msg  # says what it got


@pytest.mark.parametrize("name", TENSORS)
@pytest.mark.parametrize("kind", ["list", "numpy", "int_dtype", "bool_dtype"])
def test_not_a_float_tensor(name, kind):
    args = _valid()
    t = args[name]
    args[name] = {
        "list": lambda: t.tolist(),
        "numpy": lambda: t.numpy(),
        "int_dtype": lambda: (t * 10).round().long(),
        "bool_dtype": lambda: t > 0.3,
    }[kind]()
    _expect_error(args, name)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("value", [0.0, -0.0, -0.1, -1e-30], ids=["zero", "negzero", "negative", "tiny_negative"])
def test_non_positive_scales(value):
    args = _valid()
    args["scales"][2, 1] = value
    _expect_error(args, "scales")


def test_all_zero_scales():
    args = _valid()
    args["scales"] = torch.zeros(N, 3)
    _expect_error(args, "scales")


@pytest.mark.parametrize("value", [-0.01, -1e-7, 1.0001, 2.0, 255.0])
def test_opacities_outside_unit_interval(value):
    args = _valid()
    args["opacities"][1] = value
    _expect_error(args, "opacities")


def test_opacities_at_the_bounds_are_fine():
    args = _valid()
    args["opacities"][:2] = torch.tensor([0.0, 1.0])
    _, alpha, _ = _render(args)
    assert torch.isfinite(alpha).all()


@pytest.mark.parametrize("rows", [[0], [2, 4], list(range(N))])
def test_zero_norm_quats(rows):
    args = _valid()
    args["quats"][rows] = 0.0
    _expect_error(args, "quats")


def test_quat_norm_does_not_matter():
    args = _valid()
    img, alpha, _ = _render(args)
    args["quats"] = args["quats"] * torch.tensor([0.01, 1.0, 3.0, 70.0, 1e3])[:, None]
    img2, alpha2, _ = _render(args)
    assert torch.allclose(img, img2, atol=1e-6) and torch.allclose(alpha, alpha2, atol=1e-6)


@pytest.mark.parametrize("fx,fy", [(0.0, 20.0), (20.0, 0.0), (-20.0, 20.0), (20.0, -1.0)])
def test_non_positive_focal_length(fx, fy):
    args = _valid()
    args["K"][0, 0], args["K"][1, 1] = fx, fy
    _expect_error(args, "K")


@pytest.mark.parametrize("name", ["width", "height"])
@pytest.mark.parametrize("value", [0, -1, -12, 12.0, 1.5, True, "12", None, np.int64(0)], ids=repr)
def test_bad_image_size(name, value):
    args = _valid()
    args[name] = value
    _expect_error(args, name)


# --------------------------------------------------------------------------- SH options


@pytest.mark.parametrize("sh_degree", [-1, 4, 10])
def test_sh_degree_out_of_range(sh_degree):
    args = _valid(sh_degree=3)
    args["sh_degree"] = sh_degree
    _expect_error(args, "sh_degree")


@pytest.mark.parametrize("sh_degree", [1.5, "1", True])
def test_sh_degree_not_an_int(sh_degree):
    args = _valid(sh_degree=3)
    args["sh_degree"] = sh_degree
    _expect_error(args, "sh_degree")


SH_SHAPES = [
    (None, (N, 4, 3)),  # SH coefficients without sh_degree
    (1, (N, 3, 3)),  # too few coefficients for the degree
    (3, (N, 9, 3)),
    (2, (N, 0, 3)),
    (1, (N, 4)),  # plain features with sh_degree
    (1, (N, 4, 4)),  # not RGB
    (1, (N, 4, 1)),
    (0, (N + 1, 1, 3)),  # N mismatch
    (0, (N, 1, 3, 1)),
]


@pytest.mark.parametrize("sh_degree,shape", SH_SHAPES, ids=[f"deg{d}-{list(s)}" for d, s in SH_SHAPES])
def test_wrong_sh_shape(sh_degree, shape):
    args = _valid()
    args["sh_degree"], args["colors"] = sh_degree, torch.full(shape, 0.1)
    _expect_error(args, "colors")


def test_sh_backgrounds_must_be_rgb():
    args = _valid(sh_degree=1)
    args["backgrounds"] = torch.zeros(4)
    _expect_error(args, "backgrounds")


# --------------------------------------------------------------------------- modes and backends


@pytest.mark.parametrize("mode", ["rgb", "RGBD", "RGB+ED ", "", "depth", None])
def test_unknown_render_mode(mode):
    args = _valid()
    args["render_mode"] = mode
    _expect_error(args, "render_mode")


@pytest.mark.parametrize("backend", ["cuda", "Torch", "", "gsplat ", None])
def test_unknown_backend(backend):
    args = _valid()
    args["backend"] = backend
    msg = _expect_error(args, "backend")
    assert "torch" in msg and "gsplat" in msg  # lists the valid choices


def test_gsplat_backend_on_cpu_tensors_says_why():
    from moegs_bench.render._gsplat_backend import gsplat_status

    args = _valid()
    args["backend"] = "gsplat"
    msg = _expect_error(args, "backend")
    assert "unavailable" in msg
    ok, detail = gsplat_status()
    reason = detail if not ok else "not on a CUDA device"
    assert reason in msg
    assert "CUDA" in msg or "importable" in msg


@pytest.mark.parametrize("name", ["means", "viewmat", "opacities"])
def test_mixed_dtypes_are_rejected(name):
    args = _valid()
    args[name] = args[name].double()
    _expect_error(args, name)


@pytest.mark.parametrize(
    "option,value", [("near_plane", float("nan")), ("near_plane", -1.0), ("far_plane", 0.001), ("eps2d", -0.1), ("eps2d", float("inf"))]
)
def test_bad_plane_and_blur_options(option, value):
    args = _valid()
    args[option] = value
    _expect_error(args, option)


# --------------------------------------------------------------------------- graceful edge cases


def _with_grad(args: dict, names=TENSORS) -> dict:
    return {k: (v.clone().requires_grad_(True) if k in names and torch.is_tensor(v) else v) for k, v in args.items()}


@pytest.mark.parametrize("sh_degree", [None, 2])
@pytest.mark.parametrize("mode", ["RGB", "D", "RGB+ED"])
def test_empty_scene(sh_degree, mode):
    args = _with_grad(_valid(n=0, sh_degree=sh_degree))
    args["render_mode"] = mode
    img, alpha, meta = _render(args)
    channels = {"RGB": 3, "D": 1, "RGB+ED": 4}[mode]
    assert img.shape == (H, W, channels) and alpha.shape == (H, W, 1)
    assert torch.all(alpha == 0) and meta["radii"].shape == (0, 2)
    bg = {"RGB": [0.1, 0.4, 0.7], "D": [0.0], "RGB+ED": [0.1, 0.4, 0.7, 0.0]}[mode]
    assert torch.equal(img, torch.tensor(bg).expand(H, W, channels))
    img.sum().backward()
    for name in TENSORS:
        grad = args[name].grad
        assert grad is None or (grad.shape == args[name].shape and torch.all(torch.isfinite(grad))), name
    for name in ("means", "quats", "scales", "opacities", "colors", "viewmat", "K"):
        assert args[name].grad is None or torch.all(args[name].grad == 0), name


@pytest.mark.parametrize("sh_degree", [None, 1])
@pytest.mark.parametrize("mode", ["RGB", "RGB+ED"])
def test_camera_facing_away(sh_degree, mode):
    args = _with_grad({**_valid(n=30, sh_degree=sh_degree), "viewmat": _viewmat(z=-4.0), "render_mode": mode})
    img, alpha, meta = _render(args)
    assert torch.all(alpha == 0) and torch.all(meta["radii"] == 0)
    want = torch.tensor([0.1, 0.4, 0.7] + ([0.0] if mode == "RGB+ED" else []))
    assert torch.equal(img, want.expand_as(img))
    (img.sum() + alpha.sum()).backward()
    for name in ("means", "quats", "scales", "opacities", "colors", "viewmat", "K"):
        g = args[name].grad
        assert g is None or torch.all(g == 0), name
    assert torch.equal(args["backgrounds"].grad, torch.full((3,), float(H * W)))


def _grad_err(a, b):
    """Relative error with an absolute floor: tiny gradients (e.g. the background's through a transmittance
    of ~1e-4) carry float32 rounding of the (1 - alpha) products, about 1e-7 absolute."""
    return float((a.double() - b.double()).norm() / (b.double().norm() + 1e-2))


@pytest.mark.parametrize("width,height", [(1, 1), (13, 7), (7, 13), (5, 3), (2, 9), (17, 1)])
def test_odd_image_sizes_match_reference(width, height):
    g = torch.Generator().manual_seed(width * 100 + height)
    n = 30
    scene = (
        torch.rand(n, 3, generator=g) * 2 - 1,
        torch.randn(n, 4, generator=g),
        torch.empty(n, 3).uniform_(0.05, 0.3, generator=g),
        torch.empty(n).uniform_(0.1, 0.95, generator=g),
        torch.rand(n, 3, generator=g),
        _viewmat(),
        _K(width, height),
    )
    bg = torch.tensor([0.2, 0.5, 0.8])
    ours = [t.clone().requires_grad_(True) for t in (*scene, bg)]
    ref = [t.clone().requires_grad_(True) for t in (*scene, bg)]
    img, alpha, _ = rasterize(*ours[:7], width, height, backgrounds=ours[7])
    img_r, alpha_r = reference_rasterize(*ref[:7], width, height, backgrounds=ref[7])
    assert img.shape == (height, width, 3) and alpha.shape == (height, width, 1)
    assert alpha_r.max() > 0.2, "scene does not cover the image"
    assert (img.double() - img_r).abs().max() <= 1e-5
    assert (alpha.double() - alpha_r).abs().max() <= 1e-5
    wc, wa = torch.randn(height, width, 3, generator=g), torch.randn(height, width, 1, generator=g)
    ((img * wc).sum() + (alpha * wa).sum()).backward()
    ((img_r * wc.double()).sum() + (alpha_r * wa.double()).sum()).backward()
    for name, a, b in zip(TENSORS, ours, ref):
        assert torch.isfinite(a.grad).all(), name
        assert b.grad.norm() > 0, f"{name}: reference gradient is zero, the check would be vacuous"
        assert _grad_err(a.grad, b.grad) <= 1e-4, f"{name}: gradient error {_grad_err(a.grad, b.grad):.2e}"


@pytest.mark.parametrize("sh_degree", [None, 1])
def test_gaussians_at_the_camera_or_behind_the_near_plane(sh_degree):
    """Culled Gaussians leave the image untouched and get zero (finite) gradients."""
    base = _valid(n=8, sh_degree=sh_degree, seed=3)
    campos = torch.linalg.inv(base["viewmat"])[:3, 3]
    means = base["means"].clone()
    means[0] = campos  # exactly at the camera centre (z = 0; SH direction is the zero vector)
    means[1] = campos + torch.tensor([0.0, 0.0, 0.005])  # in front of the camera, inside the near plane
    means[2] = campos + torch.tensor([0.1, 0.0, -1.0])  # behind the camera
    means[3] = campos + torch.tensor([0.0, 0.0, -1e-6])
    args = _with_grad({**base, "means": means})
    img, alpha, meta = _render(args)
    assert torch.all(meta["radii"][:4] == 0) and torch.any(meta["radii"][4:] > 0)
    rest = {k: (v[4:] if k in ("means", "quats", "scales", "opacities", "colors") else v) for k, v in base.items()}
    img2, alpha2, _ = _render(rest)
    assert torch.equal(img, img2) and torch.equal(alpha, alpha2)
    assert alpha.max() > 0.1
    (img.sum() + alpha.sum()).backward()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        grad = args[name].grad
        assert torch.isfinite(grad).all(), name
        assert torch.all(grad[:4] == 0), name
    for name in ("viewmat", "K", "backgrounds"):
        assert torch.isfinite(args[name].grad).all(), name


def test_many_tiny_gaussians_outside_the_image():
    n = 20_000
    g = torch.Generator().manual_seed(0)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    means[: n // 2, 0] += 40.0 * side[: n // 2]  # far left / right
    means[n // 2 :, 1] += 40.0 * side[n // 2 :]  # far above / below
    args = _with_grad(
        {
            **_valid(),
            "means": means,
            "quats": torch.randn(n, 4, generator=g),
            "scales": torch.full((n, 3), 1e-3),
            "opacities": torch.full((n,), 0.9),
            "colors": torch.rand(n, 3, generator=g),
            "width": 24,
            "height": 20,
            "K": _K(24, 20),
        }
    )
    img, alpha, meta = _render(args)
    (img.sum() + alpha.sum()).backward()
    assert torch.all(alpha == 0) and torch.all(meta["radii"] == 0)
    assert torch.equal(img, torch.tensor([0.1, 0.4, 0.7]).expand(20, 24, 3))
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.all(args[name].grad == 0), name
