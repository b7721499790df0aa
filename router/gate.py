"""The Volume-aware Pixel Router and its ablation variants (MoE-GS, Jin et al., arXiv 2510.19210, §3.2).

Every Gaussian of every expert carries three router scalars ``w``, ``w_dir`` (initialised 0.9)
and ``w_time`` (initialised 0). Its router vector at time t, ``v(t) = [w, w_dir, t * w_time]``,
is alpha-composited with the expert's own (detached) geometry into maps ``W``, ``W_dir``,
``W_time`` (see :mod:`moegs_bench.router.render`). From those maps:

- ``volume-aware`` (the paper's router): ``R_k = W_k + Phi(W_dir_k, W_time_k, ray)``, with
  ``Phi`` a per-pixel MLP shared by the experts (1x1 convolutions 8 -> 6 -> 3 -> 1, ReLU, no bias),
  then ``G = softmax_k(R / T)``;
- ``volume``: the splatted per-Gaussian weights alone, ``G_k = W_k``, no pixel MLP and no softmax
  across experts (the paper's "volume router", Table 4);
- ``pixel``: 2D weights only, no per-Gaussian weights: a per-pixel MLP of the ray and t gives the
  K logits, ``G = softmax(R / T)`` (our reading of the paper's "pixel router", Table 4).

The blend is ``I = sum_k G_k I_k`` (``merged`` rendering: see :mod:`moegs_bench.router.render`).
Each variant is one :class:`PixelRouter` subclass registered in :mod:`moegs_bench.router.catalog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from moegs_bench.errors import InputError
from moegs_bench.router.catalog import ROUTER_VARIANTS

if TYPE_CHECKING:
    from moegs_bench.cameras import Camera

#: The router variants by name (the registry of :mod:`moegs_bench.router.catalog`; reads as the
#: tuple of valid names).
VARIANTS = ROUTER_VARIANTS

#: Attached per-Gaussian columns and their initial values (paper §3.2).
ROUTER_COLUMNS: tuple[str, ...] = ("router_w", "router_w_dir", "router_w_time")
ROUTER_INIT: tuple[float, ...] = (0.9, 0.9, 0.0)


def attach_router(expert, *, trainable: bool = True) -> None:
    """Attach the three router columns to ``expert`` (an ``adapters.base.Expert``), initialised
    to (0.9, 0.9, 0); they follow the expert's densification and pruning from then on."""
    for name, value in zip(ROUTER_COLUMNS, ROUTER_INIT):
        if name not in expert.attached():
            expert.attach(name, torch.full((expert.num_gaussians,), value), trainable=trainable)


def router_vectors(extras: dict[str, Tensor], t: float) -> Tensor:
    """``[N, 3]`` router vectors ``[w, w_dir, t * w_time]`` from a GaussianState's extras."""
    missing = [c for c in ROUTER_COLUMNS if c not in extras]
    if missing:
        raise InputError(f"router: the Gaussian state has no {', '.join(missing)} (call attach_router first)")
    w, w_dir, w_time = (extras[c] for c in ROUTER_COLUMNS)
    return torch.stack([w, w_dir, t * w_time], dim=-1)


def ray_features(camera) -> Tensor:
    """``[6, H, W]``: the world-frame ray origin and unit direction of every pixel centre."""
    origins, dirs = camera.rays()  # [H, W, 3] each
    return torch.cat([origins, dirs], dim=-1).permute(2, 0, 1)


def pixel_mlp(widths: Sequence[int]) -> nn.Sequential:
    """1x1 convolutions of the given widths, ReLU between, no bias (the paper's Phi)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(a, b, kernel_size=1, bias=False))
    return nn.Sequential(*layers)


class PixelRouter(nn.Module):
    """Base of the router variants: gates ``G [K, H, W]`` from the router maps of K experts.

    A variant is a subclass registered in :mod:`moegs_bench.router.catalog` (built as
    ``cls(num_experts, temperature)``): it implements :meth:`compute_logits` and, if its gate is
    not ``softmax_k(R / T)``, :meth:`gates`; ``uses_gaussian_weights = False`` when it ignores the
    splatted router maps (then the experts render no router channels).
    """

    uses_gaussian_weights: ClassVar[bool] = True

    def __init__(self, num_experts: int, temperature: float = 1.0) -> None:
        super().__init__()
        if num_experts < 2:
            raise InputError(f"router: a mixture needs at least two experts, got {num_experts}")
        if not temperature > 0:
            raise InputError(f"router temperature: expected > 0, got {temperature}")
        self.num_experts, self.temperature = num_experts, float(temperature)

    def compute_logits(self, maps: Tensor, camera: Camera) -> Tensor:
        """``R [K, H, W]`` from checked maps ``[K, H, W, 3]``; what a variant defines."""
        raise NotImplementedError(f"{type(self).__name__} does not define compute_logits")

    def logits(self, maps: Tensor, camera: Camera) -> Tensor:
        """``R [K, H, W]`` from the router maps ``[K, H, W, 3]`` (W, W_dir, W_time) seen by
        ``camera`` at time ``camera.time``."""
        if maps.shape[0] != self.num_experts:
            raise InputError(f"router: built for {self.num_experts} experts, got maps of {maps.shape[0]}")
        return self.compute_logits(maps, camera)

    def gates(self, maps: Tensor, camera: Camera, temperature: float | None = None) -> Tensor:
        """``G [K, H, W]``: softmax over experts of ``R / T`` (``T``: ``temperature``, else the
        constructor's)."""
        r = self.logits(maps, camera)
        return torch.softmax(r / (self.temperature if temperature is None else temperature), dim=0)


class VolumeAwareRouter(PixelRouter):
    """The paper's router: ``R_k = W_k + Phi(W_dir_k, W_time_k, ray)``, ``G = softmax(R / T)``."""

    def __init__(self, num_experts: int, temperature: float = 1.0) -> None:
        super().__init__(num_experts, temperature)
        self.phi = pixel_mlp((8, 6, 3, 1))  # (W_dir, W_time, origin, direction) -> logit offset

    def compute_logits(self, maps: Tensor, camera: Camera) -> Tensor:
        K, H, W, _ = maps.shape
        rays = ray_features(camera).to(maps)  # [6, H, W]
        x = torch.cat([maps[..., 1:].permute(0, 3, 1, 2), rays.expand(K, 6, H, W)], dim=1)  # [K, 8, H, W]
        return maps[..., 0] + self.phi(x)[:, 0]  # [K, H, W]


class VolumeRouter(PixelRouter):
    """The "volume router" (Table 4): ``G_k = W_k``, no pixel MLP, no softmax, no temperature."""

    def __init__(self, num_experts: int, temperature: float = 1.0) -> None:
        super().__init__(num_experts, temperature)
        self.phi = None

    def compute_logits(self, maps: Tensor, camera: Camera) -> Tensor:
        return maps[..., 0]

    def gates(self, maps: Tensor, camera: Camera, temperature: float | None = None) -> Tensor:
        return self.logits(maps, camera)


class PixelOnlyRouter(PixelRouter):
    """The "pixel router" (Table 4, our reading): K logits from a per-pixel MLP of the ray and t,
    no per-Gaussian weights; ``G = softmax(R / T)``."""

    uses_gaussian_weights = False

    def __init__(self, num_experts: int, temperature: float = 1.0) -> None:
        super().__init__(num_experts, temperature)
        self.phi = pixel_mlp((7, 16, 16, num_experts))  # (origin, direction, t) -> K logits

    def compute_logits(self, maps: Tensor, camera: Camera) -> Tensor:
        _, H, W, _ = maps.shape
        rays = ray_features(camera).to(maps)  # [6, H, W]
        x = torch.cat([rays, rays.new_full((1, H, W), camera.time)])[None]  # [1, 7, H, W]
        return self.phi(x)[0]  # [K, H, W]


def build_router(variant: str, num_experts: int, temperature: float = 1.0) -> PixelRouter:
    """The router of the variant registered as ``variant`` (:data:`VARIANTS`) for K experts."""
    cls = VARIANTS.load(variant)
    return cls(num_experts, temperature)


def blend(images: Tensor, gates: Tensor) -> Tensor:
    """``sum_k G_k I_k``: images ``[K, H, W, C]``, gates ``[K, H, W]`` -> ``[H, W, C]``."""
    if images.shape[:3] != gates.shape:
        raise InputError(f"blend: images {tuple(images.shape)} and gates {tuple(gates.shape)} disagree on [K, H, W]")
    return (gates[..., None] * images).sum(0)
