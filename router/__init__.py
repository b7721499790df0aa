"""MoE-GS's router: gates (``gate``), multi-expert rendering (``render``), the mixture
(``mixture``), router training (``train``) and the registries of variants and render modes
(``catalog``, torch-free).

The names below are loaded on first use (PEP 562), so ``moegs_bench.router.catalog`` can be
imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ROUTER_COLUMNS": "moegs_bench.router.gate",
    "VARIANTS": "moegs_bench.router.gate",
    "PixelRouter": "moegs_bench.router.gate",
    "attach_router": "moegs_bench.router.gate",
    "blend": "moegs_bench.router.gate",
    "build_router": "moegs_bench.router.gate",
    "router_vectors": "moegs_bench.router.gate",
    "ROUTER_PROFILES": "moegs_bench.router.config",
    "RouterConfig": "moegs_bench.router.config",
    "Mixture": "moegs_bench.router.mixture",
    "MixtureRender": "moegs_bench.router.mixture",
    "RENDER_MODES": "moegs_bench.router.render",
    "MultiRender": "moegs_bench.router.render",
    "render_experts": "moegs_bench.router.render",
    "ROUTER_VARIANTS": "moegs_bench.router.catalog",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
