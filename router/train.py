"""Router training: experts frozen (or fine-tuned), RAdam, one random training view per step.

The loop is :func:`moegs_bench.training.engine.run_training`; this module configures it for the
router (MoE-GS, arXiv 2510.19210, §4): ``(1 - l) * L1 + l * D-SSIM`` on the blend, the view of
step s drawn from a generator seeded by (seed, s), periodic atomic checkpoints of kind
``"router"``, so a killed run resumes and ends as an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moegs_bench.data.scene import Frame, Scene
from moegs_bench.metrics import photometric_loss
from moegs_bench.router.config import RouterConfig
from moegs_bench.router.mixture import Mixture
from moegs_bench.training.engine import CheckpointPaths, LoopSpec, StepLoss, TrainingHooks, run_training
from moegs_bench.training.schedule import ParamGroup
from moegs_bench.training.views import OneViewPerStep, view_at

__all__ = ["RouterHooks", "continued", "param_groups", "router_loop", "train_router", "view_at"]


def param_groups(mixture: Mixture) -> list[ParamGroup]:
    """Optimiser groups with their schedules: w and w_dir decay exponentially from ``lr_w`` to
    ``lr_w_final`` over ``lr_decay_steps``; w_time and Phi keep their rates; fine-tuned experts'
    groups keep the rate each ended its own training with."""
    cfg, params = mixture.config, mixture.router_parameters()
    groups = [
        _w_schedule(cfg, params["w"]),
        ParamGroup("w_time", params["w_time"], cfg.lr_w_time),
    ]
    if params["phi"]:
        groups.append(ParamGroup("phi", params["phi"], cfg.lr_phi))
    if cfg.finetune_experts:
        for e in mixture.experts:
            steps = max(e.config.train.iterations, 1)
            groups += [ParamGroup(f"{e.info.id}.{g.name}", g.params, g.lr_at(steps)) for g in e.param_groups()]
    return groups


def _w_schedule(config: RouterConfig, params: list) -> ParamGroup:
    """w and w_dir: exponential decay from ``lr_w`` to ``lr_w_final`` over ``lr_decay_steps``."""
    return ParamGroup("w", params, config.lr_w, lr_final=config.lr_w_final, max_steps=config.lr_decay_steps)


class RouterHooks(TrainingHooks):
    """The router's side of the training loop: experts frozen (or fine-tuned) while it runs, the
    photometric loss on the mixture's blend, checkpoint component ``"router"``."""

    def __init__(self, mixture: Mixture, background: Tensor | None) -> None:
        self.mixture, self.background = mixture, background

    def param_groups(self) -> list[ParamGroup]:
        return param_groups(self.mixture)

    def begin(self) -> None:
        finetune = self.mixture.config.finetune_experts
        self.mixture.train()  # the router trains (and its gate uses the training temperature)
        self.mixture.freeze_experts(not finetune)
        for e in self.mixture.experts:
            e.train(finetune)  # frozen experts render as they do at test time

    def loss(self, step: int, frame: Frame, target: Tensor) -> StepLoss:
        out = self.mixture(frame.camera, self.background)
        return StepLoss(photometric_loss(out.image, target, self.mixture.config.lambda_dssim), out.image)

    def end(self) -> None:
        for e in self.mixture.experts:
            e.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"router": self.mixture.router_state()}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        self.mixture.load_router_state(states["router"])


def continued(config: RouterConfig, steps: int) -> RouterConfig:
    """``config`` for ``steps`` more steps of a finished training (e.g. after pruning): every
    rate stays where the schedule of ``config.iterations`` steps ended (w and w_dir: their decayed
    rate), nothing decays further."""
    end = _w_schedule(config, []).lr_at(config.iterations)
    return replace(config, iterations=steps, lr_w=end, lr_decay_steps=0,
                   checkpoint_every=min(config.checkpoint_every, steps))


def router_loop(mixture: Mixture, seed: int) -> LoopSpec:
    """The loop policies of router training (checkpoint identity: the experts; config: the router's)."""
    cfg = mixture.config
    return LoopSpec(
        kind="router", label="router", iterations=cfg.iterations, checkpoint_every=cfg.checkpoint_every,
        views=OneViewPerStep(seed, view_at), optimizer=torch.optim.RAdam,
        identity={"experts": mixture.expert_ids}, config=cfg.to_dict(), final_optimizer=False,
    )


def train_router(
    mixture: Mixture, scene: Scene, ckpt_path: Path, *, final: Path | None = None, seed: int = 0,
    progress: bool = True, log: Callable[[str], None] = print,
) -> float:
    """Train ``mixture``'s router on ``scene``'s training views; returns the training seconds.

    Resumes from the periodic checkpoint ``ckpt_path`` when it exists (same experts and config)
    and saves it every ``checkpoint_every`` steps. With ``final``, the trained router is written
    there (and ``ckpt_path`` removed); a ``final`` that exists already is loaded instead of
    training. The trained router is left in ``mixture``.
    """
    outcome = run_training(router_loop(mixture, seed), RouterHooks(mixture, scene.background), scene,
                           CheckpointPaths(latest=Path(ckpt_path), final=final), progress=progress, log=log)
    if outcome.already_finished:
        log(f"router already trained ({final})")
    return outcome.elapsed
