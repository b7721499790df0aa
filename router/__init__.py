"""MoE-GS's router: gates (``gate``), multi-expert rendering (``render``), the mixture and its
configuration (``mixture``) and router training (``train``)."""

from moegs_bench.router.gate import ROUTER_COLUMNS, VARIANTS, PixelRouter, attach_router, blend, router_vectors
from moegs_bench.router.mixture import ROUTER_PROFILES, Mixture, MixtureRender, RouterConfig
from moegs_bench.router.render import RENDER_MODES, MultiRender, render_experts

__all__ = [
    "RENDER_MODES", "ROUTER_COLUMNS", "ROUTER_PROFILES", "VARIANTS", "Mixture", "MixtureRender", "MultiRender",
    "PixelRouter", "RouterConfig", "attach_router", "blend", "render_experts", "router_vectors",
]
