"""The registries of router variants and render modes (router/catalog.py).

A variant and a render mode registered here, through the registry API alone, must work in a
``Mixture`` with nothing else changed. Oracles: a uniform gate blends to the plain mean of the
expert images of ``render_experts``; a mode whose result keeps expert 0 blends to that image.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.adapters.base import SceneInit
from moegs_bench.adapters.registry import Registry as ExpertRegistry
from moegs_bench.cameras import Camera
from moegs_bench.router.catalog import RENDER_MODES, ROUTER_VARIANTS, Registry
from moegs_bench.router.config import RouterConfig
from moegs_bench.router.gate import VARIANTS, PixelRouter, build_router, router_vectors
from moegs_bench.router.mixture import Mixture
from moegs_bench.router.render import RENDER_MODES as RENDER_MODES_OF_RENDER
from moegs_bench.router.render import ExpertInputs, MultiRender, render_experts, render_separate

W, H = 20, 14


def scene_init(seed: int) -> SceneInit:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([-1.0, -0.8, -0.5]), torch.tensor([1.0, 0.8, 0.5])
    pts = lo + (hi - lo) * torch.rand(40, 3, generator=g)
    return SceneInit(points=pts, colors=torch.rand(40, 3, generator=g), bounds=(lo, hi), extent=2.0, num_frames=10,
                     num_train_views=4, train_camera_ids=(0, 1, 2, 3), camera_centres=torch.randn(4, 3, generator=g) * 3)


def experts():
    """Two experts with different Gaussians (so their images differ)."""
    reg = ExpertRegistry.discover()
    return [reg.get(i)(reg.get(i).profile("tiny"), scene_init(k)) for k, i in enumerate(("static", "stg"))]


def camera() -> Camera:
    return Camera.look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0), width=W, height=H, fov_x_deg=60.0, time=0.4)


# ------------------------------------------------------------------------------ test-only entries
class UniformRouter(PixelRouter):
    """Every expert gets 1/K everywhere: zero logits, softmax."""

    def compute_logits(self, maps: torch.Tensor, camera: Camera) -> torch.Tensor:
        return maps.new_zeros(maps.shape[:3])


class FirstExpertRender(MultiRender):
    def blend(self, gates: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        return self.images[0]


def render_first(x: ExpertInputs) -> MultiRender:
    """``separate`` rendering whose result blends to expert 0's image whatever the gates."""
    out = render_separate(x)
    return FirstExpertRender(out.images, out.router_maps, out.alphas, out.info)


def test_a_registered_variant_is_usable_by_the_mixture():
    assert "uniform-test" not in VARIANTS
    with ROUTER_VARIANTS.registered("uniform-test", UniformRouter, "test only"):
        assert "uniform-test" in VARIANTS  # what RouterConfig checks
        mix = Mixture(experts(), RouterConfig(variant="uniform-test", render_mode="separate"))
        assert isinstance(mix.router, UniformRouter)
        cam = camera()
        with torch.no_grad():
            out = mix(cam)
            states = [e.gaussians_at(cam) for e in mix.experts]
            multi = render_experts(states, cam, router=[router_vectors(s.extras, cam.time) for s in states],
                                   mode="separate")
        torch.testing.assert_close(out.gates, torch.full((2, H, W), 0.5), rtol=0, atol=1e-7)
        torch.testing.assert_close(out.image, multi.images.mean(0), rtol=0, atol=1e-6)
        assert float(multi.alphas.max()) > 0.5 and float((multi.images[0] - multi.images[1]).abs().max()) > 0.05
    assert "uniform-test" not in VARIANTS
    with pytest.raises(InputError, match="expected one of volume-aware, volume, pixel, got .uniform-test."):
        RouterConfig(variant="uniform-test")


def test_a_registered_render_mode_is_usable_by_the_mixture():
    with RENDER_MODES.registered("first-test", render_first, "test only"):
        assert "first-test" in RENDER_MODES_OF_RENDER
        mix = Mixture(experts(), RouterConfig(render_mode="first-test"))
        cam = camera()
        with torch.no_grad():
            out = mix(cam, torch.tensor([0.2, 0.4, 0.6]))
            states = [e.gaussians_at(cam) for e in mix.experts]
            sep = render_experts(states, cam, mode="separate", background=torch.tensor([0.2, 0.4, 0.6]))
        assert out.experts.info["mode"] == "first-test" and isinstance(out.experts, FirstExpertRender)
        assert torch.equal(out.image, out.experts.images[0])
        torch.testing.assert_close(out.image, sep.images[0], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="render mode: expected one of reference, separate, merged, exact"):
        render_experts(states, cam, mode="first-test")


def test_builtin_entries_load_and_are_what_the_cli_offers():
    from moegs_bench.cli import MultiRenderMode, RouterVariant

    assert ROUTER_VARIANTS.names() == ("volume-aware", "volume", "pixel")
    assert RENDER_MODES.names() == ("reference", "separate", "merged", "exact")
    assert [v.value for v in RouterVariant] == list(ROUTER_VARIANTS) and [m.value for m in MultiRenderMode] == list(RENDER_MODES)
    for name in ROUTER_VARIANTS:
        cls = ROUTER_VARIANTS.load(name)
        assert issubclass(cls, PixelRouter) and type(build_router(name, 3)) is cls
    for name in RENDER_MODES:
        assert callable(RENDER_MODES.load(name))
    assert build_router("pixel", 2).uses_gaussian_weights is False


def test_catalog_imports_without_torch():
    code = ("import sys; import moegs_bench.router.catalog as c; c.ROUTER_VARIANTS.help_text(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_registry_api():
    reg = Registry("thing", [])
    reg.register("a", "math:sqrt", "square root")
    reg.register("b", len, "length")
    assert list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg and reg[1] == "b" and ", ".join(reg) == "a, b"
    import math

    assert reg.load("a") is math.sqrt and reg.load("b") is len
    assert reg.help_text() == "[b]a[/b] (square root) or [b]b[/b] (length)."
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", len, "again")
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register(" c", len, "blank")
    with pytest.raises(InputError, match=r"^thing: expected one of a, b, got 'z'$"):
        reg.load("z")
    with reg.registered("c", abs, "absolute"):
        assert reg.names() == ("a", "b", "c")
    assert reg.names() == ("a", "b")
    reg.unregister("a")
    assert reg.names() == ("b",)
