"""The one training loop: expert training, router training (and distillation) are configurations.

In the spirit of gsplat's strategies (``gsplat/strategy``): the loop owns the mechanics every
training shares and calls hooks; what differs is data (:class:`LoopSpec`: iterations, view
policy, optimiser, checkpoint identity) and a small hooks object (:class:`TrainingHooks`: the
loss of a view, what happens before and after a step, the state a checkpoint holds).

One step::

    set every group's learning rate from its ParamGroup schedule
    hooks.before_step(step)
    for each view the view policy picks for the step (batch of B):
        out = hooks.loss(step, frame, target)            # target: the training image
        (out.loss / B).backward()
        hooks.after_backward(step, frame, out)           # e.g. densification statistics
    optimizer.step(); optimizer.zero_grad(set_to_none=True)
    hooks.after_step(step, optimizer)                    # e.g. densify, prune, refine
    progress bar: EMA of loss and PSNR; every checkpoint_every steps: latest checkpoint

Checkpoints (:mod:`moegs_bench.training.checkpoint`) are written atomically; a training with a
finished final checkpoint is loaded instead of run, one with a periodic checkpoint resumes from
it and ends exactly as an uninterrupted one would (the view policies and the hooks draw their
randomness from per-step generators, never from a global stream).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from moegs_bench.data.images import ImageSource
from moegs_bench.data.scene import DatasetError, Frame, Scene
from moegs_bench.errors import InputError, UserInputError
from moegs_bench.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from moegs_bench.training.schedule import ParamGroup, optimizer_groups, set_learning_rates
from moegs_bench.training.views import ViewPolicy

OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


@dataclass
class StepLoss:
    """The loss of one training view and what the loop and the hooks need from its render."""

    loss: Tensor  # 0-d; the loop backpropagates loss / (views of the step)
    image: Tensor  # [H, W, 3] the render compared with the target (for the running PSNR)
    aux: dict[str, Any] = field(default_factory=dict)  # for after_backward (e.g. the rasterizer's meta)


class TargetSource(Protocol):
    def get(self, frame: Frame) -> Tensor:
        """The image a training view is compared with, ``[H, W, 3]``."""
        ...


@dataclass(frozen=True)
class LoopSpec:
    """The policies of one training, as data."""

    kind: str  # checkpoint kind: "expert", "router", "distill"
    label: str  # names the training in the progress bar and the log ("4dgs", "router")
    iterations: int
    checkpoint_every: int  # steps between periodic checkpoints; 0: none
    views: ViewPolicy  # which training views each step uses
    optimizer: OptimizerFactory  # torch.optim parameter groups -> optimiser
    identity: dict[str, Any]  # plain data naming what the checkpoints belong to (checked on load)
    config: dict[str, Any]  # plain data: the training configuration (checked on load)
    #: The configuration's defaults (plain data like ``config``): a key a checkpoint lacks (a
    #: setting added since it was written) counts as its default, the behaviour it was trained with.
    config_defaults: dict[str, Any] | None = None
    final_optimizer: bool = True  # keep the optimiser state in the final checkpoint
    targets: TargetSource | None = None  # None: the training images (ImageSource)


class TrainingHooks(Protocol):
    """What a kind of training plugs into :func:`run_training`. Subclass it to inherit the no-op
    defaults of the optional hooks."""

    def param_groups(self) -> list[ParamGroup]:
        """The optimiser groups with their schedules (called after a resumed state is loaded)."""
        ...

    def loss(self, step: int, frame: Frame, target: Tensor) -> StepLoss:
        """Render ``frame`` and compare it with ``target`` ``[H, W, 3]``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint components: name -> state (tensors and plain data)."""
        ...

    def load_state_dict(self, states: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...

    def begin(self) -> None:
        """Before the first step of this attempt (train modes, freezing)."""

    def before_step(self, step: int) -> None:
        """Before the views of ``step`` are rendered (learning rates are already set)."""

    def after_backward(self, step: int, frame: Frame, out: StepLoss) -> None:
        """After the backward pass of one view."""

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """After the optimiser step (densification, pruning, refinement)."""

    def end(self) -> None:
        """After the last step (before the final checkpoint is written)."""

    def postfix(self) -> dict[str, Any]:
        """Extra progress-bar fields."""
        return {}


@dataclass(frozen=True)
class CheckpointPaths:
    latest: Path  # the periodic checkpoint (removed once the final one is written)
    final: Path | None = None  # the finished training; None: the caller keeps the result itself


@dataclass(frozen=True)
class TrainingOutcome:
    elapsed: float  # seconds of training, over every attempt
    resumed_from: int  # the step a periodic checkpoint gave (0: started fresh)
    already_finished: bool  # the final checkpoint existed: its state was loaded, nothing was trained


def run_training(
    spec: LoopSpec, hooks: TrainingHooks, scene: Scene, paths: CheckpointPaths, *, progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainingOutcome:
    """Train (or resume, or load the finished) ``hooks``' model on ``scene``'s training views."""
    if paths.final is not None and paths.final.is_file():
        ckpt = _load(paths.final, spec)
        _restore(paths.final, spec, lambda: hooks.load_state_dict(ckpt.states))
        return TrainingOutcome(ckpt.elapsed, ckpt.step, already_finished=True)
    views = list(scene.train)
    if not views:
        raise DatasetError(f"scene {scene.name}: no training views")

    start, elapsed, resumed = 0, 0.0, None
    if paths.latest.is_file():
        resumed = _load(paths.latest, spec)
        states = resumed.states  # restored first: the optimiser takes the loaded parameters
        _restore(paths.latest, spec, lambda: hooks.load_state_dict(states))
        start, elapsed = resumed.step, resumed.elapsed
        log(f"resuming {spec.label} training from step {start} ({paths.latest})")
    schedules = hooks.param_groups()
    optimizer = spec.optimizer(optimizer_groups(schedules))
    if resumed is not None and resumed.optimizer is not None:
        state = resumed.optimizer
        _restore(paths.latest, spec, lambda: optimizer.load_state_dict(state))
    targets = spec.targets if spec.targets is not None else ImageSource(scene, views)
    t0 = time.perf_counter()

    def save(path: Path, step: int, seconds: float, finished: bool, with_optimizer: bool = True) -> None:
        save_checkpoint(path, Checkpoint(
            kind=spec.kind, identity=spec.identity, config=spec.config, step=step, finished=finished,
            elapsed=seconds, states=hooks.state_dict(), optimizer=optimizer.state_dict() if with_optimizer else None))

    hooks.begin()
    bar = tqdm(total=spec.iterations, initial=start, desc=f"train {spec.label}", disable=not progress,
               mininterval=1.0, dynamic_ncols=True, unit="step")
    ema_loss = ema_psnr = None
    try:
        for step in range(start + 1, spec.iterations + 1):
            set_learning_rates(optimizer, schedules, step)
            hooks.before_step(step)
            frames = [views[i] for i in spec.views(step, len(views))]
            loss_value, psnr_value = _accumulate(hooks, step, frames, targets)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            hooks.after_step(step, optimizer)
            ema_loss = loss_value if ema_loss is None else 0.9 * ema_loss + 0.1 * loss_value
            ema_psnr = psnr_value if ema_psnr is None else 0.9 * ema_psnr + 0.1 * psnr_value
            bar.update(1)
            if step % 10 == 0 or step == spec.iterations:
                bar.set_postfix(loss=f"{ema_loss:.4f}", psnr=f"{ema_psnr:.2f}", **hooks.postfix(), refresh=False)
            if spec.checkpoint_every and step % spec.checkpoint_every == 0 and step < spec.iterations:
                save(paths.latest, step, elapsed + time.perf_counter() - t0, finished=False)
    finally:  # a killed training resumes from the last periodic checkpoint
        bar.close()
    hooks.end()
    total = elapsed + time.perf_counter() - t0
    if paths.final is not None:
        save(paths.final, spec.iterations, total, finished=True, with_optimizer=spec.final_optimizer)
        remove_periodic(paths.latest)
    return TrainingOutcome(total, start, already_finished=False)


def _accumulate(hooks: TrainingHooks, step: int, frames: Sequence[Frame], targets: TargetSource) -> tuple[float, float]:
    """Forward and backward of the step's views; their mean loss and PSNR (for the progress bar)."""
    batch = len(frames)
    loss_value = psnr_value = 0.0
    for frame in frames:
        target = targets.get(frame)  # [H, W, 3]
        out = hooks.loss(step, frame, target)
        (out.loss / batch).backward()
        hooks.after_backward(step, frame, out)
        loss_value += float(out.loss.detach()) / batch
        with torch.no_grad():
            mse = float(((out.image - target) ** 2).mean())
        psnr_value += (-10 * math.log10(max(mse, 1e-10))) / batch
    return loss_value, psnr_value


def _load(path: Path, spec: LoopSpec) -> Checkpoint:
    return load_checkpoint(path, kind=spec.kind, identity=spec.identity, config=spec.config,
                           config_defaults=spec.config_defaults)


def _restore(path: Path, spec: LoopSpec, load: Callable[[], object]) -> None:
    """Run ``load`` (a state restore); a checkpoint whose state does not fit is a one-line error."""
    try:
        load()
    except UserInputError:
        raise
    except (InputError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: the {spec.kind} checkpoint's state does not fit this {spec.label} "
                              f"({type(e).__name__}: {reason})") from None


def remove_periodic(latest: Path) -> None:
    """Remove the periodic checkpoint, and its folder when that is left empty."""
    latest.unlink(missing_ok=True)
    try:
        latest.parent.rmdir()
    except OSError:  # not empty (router/ holds the final file) or already gone
        pass
