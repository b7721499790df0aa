"""A mixture of trained experts and the router that blends them (MoE-GS, arXiv 2510.19210, §3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from moegs_bench._checks import InputError
from moegs_bench.router.gate import ROUTER_COLUMNS, VARIANTS, PixelRouter, attach_router, blend, router_vectors
from moegs_bench.router.render import RENDER_MODES, MultiRender, render_experts


@dataclass(frozen=True)
class RouterConfig:
    """Router training (paper §4, N3V): RAdam, 0.5 for w and w_dir decaying to 1% over 10k
    steps, 0.05 for w_time and Phi, ``0.8 L1 + 0.2 D-SSIM`` on the blend, one view per step."""

    variant: str = "volume-aware"
    iterations: int = 5000
    temperature: float = 1.0  # T of the softmax in training
    eval_temperature: float | None = None  # None: the training T (the reference code: 1.0)
    lr_w: float = 0.5  # w and w_dir
    lr_w_final: float = 0.005
    lr_decay_steps: int = 10000
    lr_w_time: float = 0.05
    lr_phi: float = 0.05
    lambda_dssim: float = 0.2
    render_mode: str = "exact"
    finetune_experts: bool = False
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"router variant: expected one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.render_mode not in RENDER_MODES:
            raise InputError(f"render mode: expected one of {', '.join(RENDER_MODES)}, got {self.render_mode!r}")
        if self.iterations < 1:
            raise InputError(f"router iterations: expected >= 1, got {self.iterations}")
        for name in ("temperature", "eval_temperature"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"router {name}: expected > 0, got {value}")

    @property
    def test_temperature(self) -> float:
        return self.temperature if self.eval_temperature is None else self.eval_temperature

    def with_reference_temperature(self) -> RouterConfig:
        """What the authors' code does: train with T = 0.01, evaluate with T = 1."""
        return replace(self, temperature=0.01, eval_temperature=1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouterConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"router config: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


#: ``paper``: the paper's N3V schedule. ``tiny``: a CPU budget with the same shape (the w rate
#: decays to 10% by the end, as 5k of 10k decay steps do in the paper).
ROUTER_PROFILES: dict[str, RouterConfig] = {
    "paper": RouterConfig(),
    "tiny": RouterConfig(iterations=300, lr_decay_steps=600, checkpoint_every=100),
}


@dataclass
class MixtureRender:
    image: Tensor  # [H, W, 3] the blend
    gates: Tensor  # [K, H, W]
    experts: MultiRender  # the K expert images and router maps


def blend_shares(multi: MultiRender, gates: Tensor, background: Tensor, eps: float = 1e-6) -> Tensor:
    """The blend for ``merged`` rendering: ``I = A sum_k G_k C_k / A_k + (1 - A) bg``.

    Eq. 9 gives each expert's share ``C_k`` of one composite with alpha ``A``; ``C_k / A_k`` is the
    expert's colour over its own visible fragments (``A_k`` its share of the alpha), and the gates
    are renormalised over the experts present at the pixel. (Blending the raw shares would darken
    the image about K-fold; the paper leaves this step open.) ``[H, W, 3]``.
    """
    alpha = multi.alphas[0]  # [H, W, 1] shared
    shares = multi.shares  # [K, H, W, 1]
    own = (multi.images - (1.0 - alpha) * background) / shares.clamp_min(eps)  # [K, H, W, 3]
    g = gates[..., None] * (shares > eps).to(gates)  # [K, H, W, 1]
    g = g / g.sum(0).clamp_min(1e-12)
    return alpha * (g * own).sum(0) + (1.0 - alpha) * background


class Mixture(nn.Module):
    """K experts (``adapters.base.Expert``) and a :class:`PixelRouter`; the router columns are
    attached to every expert's Gaussians."""

    def __init__(self, experts: Sequence[nn.Module], config: RouterConfig) -> None:
        super().__init__()
        ids = [e.info.id for e in experts]
        if len(experts) < 2:
            raise InputError(f"a mixture needs at least two experts, got {len(experts)} ({', '.join(ids)})")
        if len(set(ids)) != len(ids):
            raise InputError(f"a mixture's experts must differ, got {', '.join(ids)}")
        self.config = config
        self.experts = nn.ModuleList(experts)
        for e in experts:
            attach_router(e)
        self.router = PixelRouter(len(experts), config.variant, config.temperature)

    @property
    def expert_ids(self) -> list[str]:
        return [e.info.id for e in self.experts]

    def freeze_experts(self, frozen: bool = True) -> None:
        """Experts' own parameters stop (or resume) taking gradients; router columns always do."""
        for e in self.experts:
            for name, p in e.named_parameters():
                p.requires_grad_(not frozen or name.split(".")[-1] in ROUTER_COLUMNS)

    def forward(self, camera, background: Tensor | None = None, *, mode: str | None = None,
                temperature: float | None = None) -> MixtureRender:
        """Render every expert and blend them at ``camera`` (time ``camera.time``)."""
        frozen = not any(p.requires_grad for e in self.experts for n, p in e.named_parameters()
                         if n.split(".")[-1] not in ROUTER_COLUMNS)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            states = [e.gaussians_at(camera) for e in self.experts]  # the router columns stay leaves
        vectors = [router_vectors(s.extras, camera.time) for s in states] if self.router.uses_gaussian_weights else None
        multi = render_experts(states, camera, router=vectors, mode=mode or self.config.render_mode,
                               background=background)
        gates = self.router.gates(multi.router_maps, camera, camera.time, temperature)
        if multi.shares is not None:  # merged: each image is a share of one composite
            bg = multi.images.new_zeros(3) if background is None else background.to(multi.images)
            return MixtureRender(blend_shares(multi, gates, bg), gates, multi)
        return MixtureRender(blend(multi.images, gates), gates, multi)

    def router_parameters(self) -> dict[str, list[nn.Parameter]]:
        """``w`` (w and w_dir of every expert), ``w_time`` and ``phi`` parameters."""
        cols = [e.table[c] for e in self.experts for c in ROUTER_COLUMNS]
        return {
            "w": [c for c, n in zip(cols, ROUTER_COLUMNS * len(self.experts)) if n != "router_w_time"],
            "w_time": [c for c, n in zip(cols, ROUTER_COLUMNS * len(self.experts)) if n == "router_w_time"],
            "phi": list(self.router.parameters()),
        }

    def router_state(self) -> dict[str, Any]:
        """What router training learns: the router columns per expert and the pixel MLP (with
        ``finetune_experts``, the experts' full state as well)."""
        state: dict[str, Any] = {
            "columns": {e.info.id: {c: e.table[c].detach().clone() for c in ROUTER_COLUMNS} for e in self.experts},
            "router": self.router.state_dict(),
        }
        if self.config.finetune_experts:
            state["experts"] = {e.info.id: e.state_dict() for e in self.experts}
        return state

    def load_router_state(self, state: dict[str, Any]) -> None:
        if sorted(state["columns"]) != sorted(self.expert_ids):
            raise InputError(f"router state is for experts {sorted(state['columns'])}, not {sorted(self.expert_ids)}")
        for e in self.experts:
            if "experts" in state:
                e.load_state_dict(state["experts"][e.info.id])
            for c, value in state["columns"][e.info.id].items():
                if value.shape != e.table[c].shape:
                    raise InputError(f"router state: {e.info.id}.{c} has {tuple(value.shape)} rows, the expert "
                                     f"{tuple(e.table[c].shape)}")
                with torch.no_grad():
                    e.table[c].copy_(value)
        self.router.load_state_dict(state["router"])
