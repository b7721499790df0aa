"""A mixture of trained experts and the router that blends them (MoE-GS, arXiv 2510.19210, §3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from moegs_bench.errors import InputError
from moegs_bench.cameras import Camera
from moegs_bench.router.config import ROUTER_PROFILES, RouterConfig  # noqa: F401 (re-exported)
from moegs_bench.router.gate import ROUTER_COLUMNS, attach_router, build_router, router_vectors
from moegs_bench.router.render import MultiRender, render_experts


@dataclass
class MixtureRender:
    image: Tensor  # [H, W, 3] the blend
    gates: Tensor  # [K, H, W]
    experts: MultiRender  # the K expert images and router maps


class Mixture(nn.Module):
    """K experts (``adapters.base.Expert``) and a router (a ``router.gate.PixelRouter`` of the
    configured variant); the router columns are attached to every expert's Gaussians.

    The gate's temperature follows the router's training flag: ``config.temperature`` while the
    router trains, ``config.test_temperature`` after ``mixture.eval()`` (or ``mixture.router.eval()``).
    """

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
        self.router = build_router(config.variant, len(experts), config.temperature)

    @property
    def expert_ids(self) -> list[str]:
        return [e.info.id for e in self.experts]

    def freeze_experts(self, frozen: bool = True) -> None:
        """Experts' own parameters stop (or resume) taking gradients; router columns always do."""
        for e in self.experts:
            for name, p in e.named_parameters():
                p.requires_grad_(not frozen or name.split(".")[-1] in ROUTER_COLUMNS)

    @property
    def temperature(self) -> float:
        """T of the gate's softmax: the training T while ``self.router.training``, else the evaluation T."""
        return self.config.temperature if self.router.training else self.config.test_temperature

    def storage_bytes(self) -> int:
        """Bytes the router adds to its experts: three float32 router columns per Gaussian of
        every expert, plus the router's own parameters (the pixel MLP)."""
        n = sum(e.num_gaussians for e in self.experts)
        return 4 * len(ROUTER_COLUMNS) * n + sum(p.numel() * p.element_size() for p in self.router.parameters())

    def total_storage_bytes(self) -> int:
        """Bytes of the whole mixture: every expert's own (``storage_bytes``) plus the router's."""
        return sum(e.storage_bytes() for e in self.experts) + self.storage_bytes()

    def forward(self, camera: Camera, background: Tensor | None = None, *, mode: str | None = None) -> MixtureRender:
        """Render every expert and blend them at ``camera`` (at time ``camera.time``), with the
        render mode of the config (or ``mode``) and the temperature of :attr:`temperature`."""
        multi = self.render_experts(camera, background, mode=mode)
        gates = self.router.gates(multi.router_maps, camera, self.temperature)
        return MixtureRender(multi.blend(gates, background), gates, multi)

    def render_experts(self, camera: Camera, background: Tensor | None = None, *,
                       mode: str | None = None) -> MultiRender:
        """The K expert images and their splatted router maps ``[K, H, W, 3]`` at ``camera`` (what
        the gates are computed from); gradients reach the router columns, and the experts' own
        parameters unless they are frozen."""
        frozen = not any(p.requires_grad for e in self.experts for n, p in e.named_parameters()
                         if n.split(".")[-1] not in ROUTER_COLUMNS)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            states = [e.gaussians_at(camera) for e in self.experts]  # the router columns stay leaves
        vectors = [router_vectors(s.extras, camera.time) for s in states] if self.router.uses_gaussian_weights else None
        return render_experts(states, camera, router=vectors, mode=mode or self.config.render_mode,
                              background=background)

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
