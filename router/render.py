"""Multi-expert rendering: K expert images and their router maps, in one of the render modes
registered in :mod:`moegs_bench.router.catalog` (MoE-GS, arXiv 2510.19210, §3.3):

- ``reference``: what the authors' released code does: per expert one colour rasterization,
  then one router-weight rasterization (2K passes). The baseline of the paper's speed-up.
- ``separate``: one rasterization per expert, colour and router channels stacked (K passes).
- ``merged``: the paper's single pass (Eq. 9): one projection and one sort of the union of all
  experts' Gaussians, colour and router channels in one-hot expert slots, and *one* transmittance,
  so other experts' Gaussians occlude. Not equal to separate rendering where experts overlap.
- ``exact``: one projection and one sort of the union, one transmittance per expert (each tile
  keeps one list per expert): equal to ``separate`` and ``reference`` to float tolerance.

A mode is a function ``(ExpertInputs) -> MultiRender``; the result knows its own blend
(:meth:`MultiRender.blend`). Every pass goes through ``moegs_bench.render.rasterize_grouped``,
which validates each expert's tensors and owns the backend choice and gsplat's fallbacks. Router
channels use the experts' geometry *detached* (the router must not move the experts): stacked
passes give ``geo_channels = C``. ``info`` says what ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.render import SplatGroup, colors_at, rasterize_grouped, resolve_backend
from moegs_bench.router.catalog import RENDER_MODES
from moegs_bench.router.gate import blend

__all__ = ["RENDER_MODES", "ExpertInputs", "MergedRender", "MultiRender", "blend_shares", "render_experts"]


@dataclass
class MultiRender:
    images: Tensor  # [K, H, W, 3] each expert's image (merged: its share of the one composite)
    router_maps: Tensor  # [K, H, W, R] splatted router vectors (R = 0 without router values)
    alphas: Tensor  # [K, H, W, 1] (merged: the shared alpha, repeated)
    info: dict[str, Any] = field(default_factory=dict)  # mode, backend, rasterizations, fallback
    shares: Tensor | None = None  # merged only: [K, H, W, 1] each expert's part of the shared alpha

    def blend(self, gates: Tensor, background: Tensor | None = None) -> Tensor:
        """The mixture's image ``[H, W, 3]`` for gates ``[K, H, W]``: ``sum_k G_k I_k`` (each
        image already holds its background)."""
        return blend(self.images, gates)


@dataclass
class MergedRender(MultiRender):
    """``merged``: each image is an expert's share of one composite, blended by :func:`blend_shares`."""

    def blend(self, gates: Tensor, background: Tensor | None = None) -> Tensor:
        bg = self.images.new_zeros(3) if background is None else background.to(self.images)
        return blend_shares(self, gates, bg)


def blend_shares(multi: MultiRender, gates: Tensor, background: Tensor, eps: float = 1e-6) -> Tensor:
    """The blend for ``merged`` rendering: ``I = A sum_k G_k C_k / A_k + (1 - A) bg``.

    Eq. 9 gives each expert's share ``C_k`` of one composite with alpha ``A``; ``C_k / A_k`` is the
    expert's colour over its own visible fragments (``A_k`` its share of the alpha), and the gates
    are renormalised over the experts present at the pixel. (Blending the raw shares would darken
    the image about K-fold; the paper leaves this step open.) ``[H, W, 3]``.
    """
    alpha = multi.alphas[0]  # [H, W, 1] shared
    shares = multi.shares  # [K, H, W, 1]
    if shares is None:
        raise InputError("blend_shares: the render has no shares (not a merged render)")
    own = (multi.images - (1.0 - alpha) * background) / shares.clamp_min(eps)  # [K, H, W, 3]
    g = gates[..., None] * (shares > eps).to(gates)  # [K, H, W, 1]
    g = g / g.sum(0).clamp_min(1e-12)
    return alpha * (g * own).sum(0) + (1.0 - alpha) * background


@dataclass(frozen=True, eq=False)
class ExpertInputs:
    """What a render mode gets: K experts' states, their colours at the camera, router values."""

    states: Sequence[GaussianState]
    colors: list[Tensor]  # K x [N_k, C] RGB at the camera (SH evaluated)
    router: Sequence[Tensor] | None  # K x [N_k, R], or None
    background: Tensor  # [C] (zeros when none was given)
    camera: Camera
    backend: str  # resolved: torch or gsplat
    eps2d: float

    @property
    def num_experts(self) -> int:
        return len(self.states)

    @property
    def channels(self) -> int:  # C
        return self.colors[0].shape[1]

    @property
    def router_channels(self) -> int:  # R
        return 0 if self.router is None else self.router[0].shape[1]

    def features(self, k: int) -> Tensor:
        """``[N_k, C + R]``: expert k's colours, then its router values."""
        c = self.colors[k]
        return c if self.router is None else torch.cat([c, self.router[k].to(c)], 1)

    def background_features(self) -> Tensor:
        """``[C + R]``: the background, router channels over 0."""
        return torch.cat([self.background, self.background.new_zeros(self.router_channels)])

    def group(self, k: int, features: Tensor, *, detach: bool = False) -> SplatGroup:
        return SplatGroup.of(self.states[k], features, f"expert {k}", detach=detach)

    def rasterize(self, groups: Sequence[SplatGroup], **options: Any) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """``rasterize_grouped`` at this camera, on this backend."""
        return rasterize_grouped(groups, self.camera, backend=self.backend, eps2d=self.eps2d, **options)  # type: ignore[arg-type]


def render_experts(
    states: Sequence[GaussianState],
    camera: Camera,
    *,
    router: Sequence[Tensor] | None = None,  # per expert [N_k, R]
    mode: str = "exact",
    background: Tensor | None = None,  # [3]
    backend: str = "auto",
    eps2d: float = 0.3,
) -> MultiRender:
    """Render K Gaussian sets (one per expert) at ``camera``: images, router maps and alphas."""
    render_mode = RENDER_MODES.load(mode)  # InputError naming the modes for an unknown one
    if len(states) < 1:
        raise InputError("render_experts: no Gaussian sets given")
    if router is not None and len(router) != len(states):
        raise InputError(f"render_experts: {len(states)} Gaussian sets but {len(router)} router tensors")
    backend = resolve_backend(backend, states[0].means.device)
    campos = camera.campos.to(states[0].means)
    colors = [colors_at(s.colors, s.sh_degree, s.means, campos) for s in states]  # K x [N_k, C]
    C = colors[0].shape[1]
    for k, (s, c) in enumerate(zip(states, colors)):
        if c.shape[1] != C:
            raise InputError(f"render_experts: expert {k} has {c.shape[1]} colour channels, expert 0 has {C}")
        if router is not None and (router[k].dim() != 2 or router[k].shape[0] != s.means.shape[0]):
            raise InputError(f"render_experts: router[{k}] must be [{s.means.shape[0]}, R], got {tuple(router[k].shape)}")
    bg = colors[0].new_zeros(C) if background is None else background.to(colors[0])
    out = render_mode(ExpertInputs(states, colors, router, bg, camera, backend, eps2d))
    out.info = {"mode": mode, "backend": backend, **out.info}
    return out


# ------------------------------------------------------------------------------------- the modes
def render_reference(x: ExpertInputs) -> MultiRender:
    """Per expert a colour pass, then a router pass over its detached geometry (2K passes)."""
    outs, passes = [], 0
    for k, c in enumerate(x.colors):
        img, alpha, meta = x.rasterize([x.group(k, c)], background=x.background)
        passes += meta["rasterizations"]
        if x.router is not None:
            maps, _, meta = x.rasterize([x.group(k, x.router[k].to(c), detach=True)], background=None)
            passes += meta["rasterizations"]
            img = torch.cat([img, maps], -1)
        outs.append((img[0], alpha[0]))
    return _stacked(outs, x.channels, {"rasterizations": passes})


def render_separate(x: ExpertInputs) -> MultiRender:
    """One pass per expert, colour and router channels stacked (K passes)."""
    outs, passes = [], 0
    for k in range(x.num_experts):
        img, alpha, meta = x.rasterize([x.group(k, x.features(k))], background=x.background_features(),
                                       geo_channels=x.channels)
        passes += meta["rasterizations"]
        outs.append((img[0], alpha[0]))
    return _stacked(outs, x.channels, {"rasterizations": passes})


def render_exact(x: ExpertInputs) -> MultiRender:
    """One pass over the union, one transmittance per expert."""
    C = x.channels
    img, alpha, meta = x.rasterize([x.group(k, x.features(k)) for k in range(x.num_experts)],
                                   background=x.background_features(), geo_channels=C)  # [K, H, W, C + R]
    return MultiRender(img[..., :C], img[..., C:], alpha, _pass_info(meta))


def render_merged(x: ExpertInputs) -> MergedRender:
    """Eq. 9: one pass over the union, one transmittance, channels in one-hot expert slots:
    ``[K*C colour | K shares | K*R router]``."""
    K, C, R, bg = x.num_experts, x.channels, x.router_channels, x.background
    groups = []
    for k, (s, c) in enumerate(zip(x.states, x.colors)):
        ids = torch.full((s.means.shape[0],), k, dtype=torch.long, device=s.means.device)
        onehot = torch.nn.functional.one_hot(ids, K).to(bg)  # [N_k, K]
        slots = [(onehot[:, :, None] * c[:, None, :]).flatten(1), onehot]
        if x.router is not None:
            slots.append((onehot[:, :, None] * x.router[k].to(bg)[:, None, :]).flatten(1))
        groups.append(x.group(k, torch.cat(slots, 1)))
    bg_slots = torch.cat([bg.repeat(K), bg.new_zeros(K + K * R)])
    img, alpha, meta = x.rasterize(groups, background=bg_slots, geo_channels=K * C + K, shared=True)
    H, W = img.shape[1:3]
    images = img[0, ..., : K * C].view(H, W, K, C).permute(2, 0, 1, 3)
    shares = img[0, ..., K * C: K * C + K].permute(2, 0, 1)[..., None]  # [K, H, W, 1]
    maps = img[0, ..., K * C + K:].view(H, W, K, R).permute(2, 0, 1, 3)
    return MergedRender(images, maps, alpha.expand(K, H, W, 1), _pass_info(meta), shares)


def _pass_info(meta: dict[str, Any]) -> dict[str, Any]:
    info = {"fallback": meta["fallback"]} if "fallback" in meta else {}
    info["rasterizations"] = meta["rasterizations"]
    return info


def _stacked(outs: list[tuple[Tensor, Tensor]], C: int, info: dict[str, Any]) -> MultiRender:
    img = torch.stack([o[0] for o in outs])  # [K, H, W, C + R]
    return MultiRender(img[..., :C], img[..., C:], torch.stack([o[1] for o in outs]), info)
