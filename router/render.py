"""Multi-expert rendering: K expert images and their router maps, four ways (DESIGN.md §5).

- ``reference``: what the authors' released code does: per expert one colour rasterization,
  then one router-weight rasterization (2K passes). The baseline of the paper's speed-up.
- ``separate``: one rasterization per expert, colour and router channels stacked (K passes).
- ``merged``: the paper's single pass (Eq. 9): one projection and one sort of the union of all
  experts' Gaussians, colour and router channels in one-hot expert slots, and *one* transmittance,
  so other experts' Gaussians occlude. Not equal to separate rendering where experts overlap.
- ``exact``: one projection and one sort of the union, one transmittance per expert (each tile
  keeps one list per expert): equal to ``separate`` and ``reference`` to float tolerance.

Router channels use the experts' geometry *detached* (the router must not move the experts), also
inside a stacked pass: the PyTorch rasterizer lets only the colour channels send gradients to the
geometry. gsplat (CUDA) cannot do that, so there, when the geometry needs gradients, the router
channels get a pass of their own; and ``exact`` falls back to ``separate`` on gsplat (no kernel
yet). ``info`` says what ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from moegs_bench._checks import InputError
from moegs_bench.gaussians import GaussianState
from moegs_bench.render._projection import project_gaussians
from moegs_bench.render._torch_raster import rasterize_to_pixels_grouped
from moegs_bench.render.sh import sh_to_rgb

RenderMode = Literal["reference", "separate", "merged", "exact"]
RENDER_MODES: tuple[str, ...] = ("reference", "separate", "merged", "exact")


@dataclass
class MultiRender:
    images: Tensor  # [K, H, W, 3] each expert's image (merged: its share of the one composite)
    router_maps: Tensor  # [K, H, W, R] splatted router vectors (R = 0 without router values)
    alphas: Tensor  # [K, H, W, 1] (merged: the shared alpha, repeated)
    info: dict[str, Any] = field(default_factory=dict)  # mode, backend, passes, fallback
    shares: Tensor | None = None  # merged only: [K, H, W, 1] each expert's part of the shared alpha


def expert_colors(state: GaussianState, campos: Tensor) -> Tensor:
    """``[N, C]`` colours of ``state`` seen from ``campos`` (SH evaluated as gsplat does)."""
    if state.sh_degree is None:
        return state.colors
    return sh_to_rgb(state.sh_degree, state.colors, state.means - campos)


def render_experts(
    states: Sequence[GaussianState],
    camera,
    *,
    router: Sequence[Tensor] | None = None,  # per expert [N_k, R]
    mode: RenderMode = "exact",
    background: Tensor | None = None,  # [3]
    backend: str = "auto",
    eps2d: float = 0.3,
) -> MultiRender:
    """Render K Gaussian sets (one per expert) at ``camera``: images, router maps and alphas."""
    if mode not in RENDER_MODES:
        raise InputError(f"render mode: expected one of {', '.join(RENDER_MODES)}, got {mode!r}")
    if len(states) < 1:
        raise InputError("render_experts: no Gaussian sets given")
    if router is not None and len(router) != len(states):
        raise InputError(f"render_experts: {len(states)} Gaussian sets but {len(router)} router tensors")
    dev = states[0].means.device
    if backend == "auto":
        backend = "gsplat" if dev.type == "cuda" else "torch"
    if backend not in ("torch", "gsplat"):
        raise InputError(f"backend: expected auto, torch or gsplat, got {backend!r}")
    if backend == "gsplat":
        from moegs_bench.render._gsplat_backend import require_gsplat

        require_gsplat(dev)
    campos = camera.campos.to(states[0].means)
    colors = [expert_colors(s, campos) for s in states]  # K x [N_k, C]
    C = colors[0].shape[1]
    for k, (s, c) in enumerate(zip(states, colors)):
        if c.shape[1] != C:
            raise InputError(f"render_experts: expert {k} has {c.shape[1]} colour channels, expert 0 has {C}")
        if router is not None and (router[k].dim() != 2 or router[k].shape[0] != s.means.shape[0]):
            raise InputError(f"render_experts: router[{k}] must be [{s.means.shape[0]}, R], got {tuple(router[k].shape)}")
    R = 0 if router is None else router[0].shape[1]
    bg = colors[0].new_zeros(C) if background is None else background.to(colors[0])
    feats = [c if router is None else torch.cat([c, r.to(c)], 1) for c, r in zip(colors, router or colors)]
    bg_feats = torch.cat([bg, bg.new_zeros(R)])  # router maps composite over 0
    splat = _Splatter(camera, backend, eps2d)
    info: dict[str, Any] = {"mode": mode, "backend": backend}

    if mode == "exact" and backend == "gsplat":
        mode = "separate"
        info["fallback"] = "exact needs one transmittance per expert; gsplat has no such kernel, ran separate"
    if mode == "reference":
        outs = []
        for s, c, k in zip(states, colors, range(len(states))):
            img, alpha = splat(_geometry(s), c, bg)
            if router is not None:
                maps, _ = splat(_geometry(s, detach=True), router[k].to(c), None)
                img = torch.cat([img, maps], -1)
            outs.append((img[0], alpha[0]))
        info["rasterizations"] = len(states) * (2 if router is not None else 1)
        return _result(outs, C, info)
    if mode == "separate":
        outs = [tuple(x[0] for x in splat.stacked(_geometry(s), f, bg_feats, C)) for s, f in zip(states, feats)]
        info["rasterizations"] = splat.passes
        return _result(outs, C, info)

    K = len(states)
    geom = [torch.cat(parts) for parts in zip(*(_geometry(s) for s in states))]
    ids = torch.cat([torch.full((s.means.shape[0],), k, dtype=torch.long, device=dev) for k, s in enumerate(states)])
    if mode == "exact":
        img, alpha = splat.stacked(geom, torch.cat(feats), bg_feats, C, ids, K)  # [K, H, W, C + R], [K, H, W, 1]
        info["rasterizations"] = 1
        return MultiRender(img[..., :C], img[..., C:], alpha, info)
    # merged: one composite, channels in one-hot expert slots: [K*C colour | K shares | K*R router]
    onehot = torch.nn.functional.one_hot(ids, K).to(bg)  # [M, K]
    slots = [(onehot[:, :, None] * torch.cat(colors)[:, None, :]).flatten(1), onehot]
    if router is not None:
        slots.append((onehot[:, :, None] * torch.cat(list(router)).to(bg)[:, None, :]).flatten(1))
    bg_slots = torch.cat([bg.repeat(K), bg.new_zeros(K + K * R)])
    img, alpha = splat.stacked(geom, torch.cat(slots, 1), bg_slots, K * C + K)
    H, W = img.shape[1:3]
    images = img[0, ..., : K * C].view(H, W, K, C).permute(2, 0, 1, 3)
    shares = img[0, ..., K * C: K * C + K].permute(2, 0, 1)[..., None]  # [K, H, W, 1]
    maps = img[0, ..., K * C + K:].view(H, W, K, R).permute(2, 0, 1, 3)
    info["rasterizations"] = splat.passes
    return MultiRender(images, maps, alpha.expand(K, H, W, 1), info, shares)


def _geometry(s: GaussianState, detach: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = (s.means, s.quats, s.scales, s.opacities)
    return tuple(t.detach() for t in g) if detach else g  # type: ignore[return-value]


def _result(outs: list[tuple[Tensor, Tensor]], C: int, info: dict[str, Any]) -> MultiRender:
    img = torch.stack([o[0] for o in outs])  # [K, H, W, C + R]
    return MultiRender(img[..., :C], img[..., C:], torch.stack([o[1] for o in outs]), info)


class _Splatter:
    """Projection + compositing on one backend, counting the rasterization passes."""

    def __init__(self, camera, backend: str, eps2d: float) -> None:
        self.camera, self.backend, self.eps2d, self.passes = camera, backend, eps2d, 0

    def __call__(self, geom, feats: Tensor, bg: Tensor | None, group: Tensor | None = None, groups: int = 1,
                 geo_channels: int | None = None) -> tuple[Tensor, Tensor]:
        """``[G, H, W, D]`` images and ``[G, H, W, 1]`` alphas of ``feats [N, D]``."""
        cam = self.camera
        means, quats, scales, opacities = geom
        viewmat, K = cam.viewmat.to(means), cam.K.to(means)
        self.passes += 1
        if self.backend == "gsplat":
            from moegs_bench.render._gsplat_backend import rasterize_gsplat

            img, alpha, _ = rasterize_gsplat(
                means, quats, scales, opacities, feats, viewmat, K, cam.width, cam.height, backgrounds=bg,
                near_plane=cam.near, far_plane=cam.far, eps2d=self.eps2d, sh_degree=None, render_mode="RGB")
            return img[None], alpha[None]
        proj = project_gaussians(means, quats, scales, opacities, viewmat, K, cam.width, cam.height,
                                 near_plane=cam.near, far_plane=cam.far, eps2d=self.eps2d)
        if group is None:
            group = torch.zeros(means.shape[0], dtype=torch.long, device=means.device)
        return rasterize_to_pixels_grouped(proj.means2d, proj.conics, feats, opacities, proj.radii, proj.depths,
                                           group, groups, cam.width, cam.height, bg, geo_channels)

    def stacked(self, geom, feats: Tensor, bg: Tensor, geo_channels: int, group: Tensor | None = None,
                groups: int = 1) -> tuple[Tensor, Tensor]:
        """One pass where only the first ``geo_channels`` channels move the geometry; on gsplat
        (which cannot) the other channels get a second pass with detached geometry if needed."""
        if geo_channels == feats.shape[1] or self.backend == "torch" or not any(t.requires_grad for t in geom):
            return self(geom, feats, bg, group, groups, geo_channels)
        img, alpha = self(geom, feats[:, :geo_channels], bg[:geo_channels])
        rest, _ = self(tuple(t.detach() for t in geom), feats[:, geo_channels:], bg[geo_channels:])
        return torch.cat([img, rest], -1), alpha
