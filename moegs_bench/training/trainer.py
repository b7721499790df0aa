"""Expert training (``moegs-bench train-expert``): one expert on one scene into a run folder.

The loop is :func:`moegs_bench.training.engine.run_training`; this module configures it for an
expert: Adam (eps 1e-15) with the expert's per-attribute learning rates, ``batch_size`` views per
step from per-epoch permutations, ``(1 - l) * L1 + l * (1 - SSIM)`` plus the expert's own
regulariser, the 3DGS SH ramp and adaptive density control (densification noise from per-step
generators), then writes a results record at the end. Deterministic on CPU for a seed, so a
resumed run ends exactly as an uninterrupted one.

Run folder: ``run.json``, ``checkpoints/latest.pt`` while training, ``expert.pt`` (the final
checkpoint), ``results.json`` and ``renders/test/``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moegs_bench.cameras import Camera
from moegs_bench.data.scene import Frame, Scene
from moegs_bench.metrics import LpipsMetric, photometric_loss, storage_mb
from moegs_bench.render import render
from moegs_bench.results import ResultRecord, collect_provenance, read_record, write_record
from moegs_bench.run_folder import EXPERT_RUN, RunFolderError, read_identity, working_in
from moegs_bench.training.config import TrainConfig
from moegs_bench.training.contracts import ExpertClass, TrainableConfig, TrainableExpert
from moegs_bench.training.densify import Densifier
from moegs_bench.training.engine import (CheckpointPaths, LoopSpec, StepLoss, TrainingHooks, remove_periodic,
                                         run_training)
from moegs_bench.training.evaluate import evaluate, with_lpips
from moegs_bench.training.guard import HealthGuard
from moegs_bench.training.schedule import ParamGroup
from moegs_bench.training.views import EpochPermutations

RESULTS_FILE = "results.json"
FINAL_CKPT = "expert.pt"
LATEST_CKPT = "checkpoints/latest.pt"

__all__ = ["FINAL_CKPT", "LATEST_CKPT", "RESULTS_FILE", "ExpertHooks", "RunFolderError", "TrainedExpert",
           "build_expert", "expert_loop", "expert_record", "open_trained_expert", "render_expert", "train_expert"]


@dataclass
class TrainedExpert:
    expert: TrainableExpert
    record: ResultRecord
    out_dir: Path
    reused: bool  # True: a finished run was found and reported, nothing recomputed

    def with_lpips(self, scene: Scene, lpips: LpipsMetric) -> TrainedExpert:
        """The same training with its record's LPIPS that of ``lpips`` (computed again only when the
        record holds another variant or none; the folder's own record is not rewritten)."""
        self.expert.eval()
        bg = scene.background.to(self.expert.device)
        draw = lambda f: render_expert(self.expert, f.camera, bg)[0]  # noqa: E731
        metrics = with_lpips(self.record.metrics, draw, scene, lpips)
        if metrics is self.record.metrics:
            return self
        return replace(self, record=replace(self.record, metrics=metrics))


def render_expert(expert: TrainableExpert, camera: Camera, background: Tensor | None = None):
    """Render ``expert`` at ``camera``: ``(image [H,W,3], alpha [H,W,1], meta, GaussianState)``."""
    gs = expert.gaussians_at(camera)
    img, alpha, meta = render(gs, camera, background=background)
    return img, alpha, meta, gs


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + 17)


class ExpertHooks(TrainingHooks):
    """The expert's side of the training loop: SH ramp and ``on_step`` before a step, the
    photometric loss (:meth:`image_loss`) plus the expert's regulariser per view, densification
    statistics after each backward pass, densification and the expert's ``refine`` after the
    optimiser step."""

    def __init__(self, expert: TrainableExpert, background: Tensor | None, seed: int,
                 log: Callable[[str], None] = print) -> None:
        self.expert, self.background, self.seed = expert, background, seed
        self.tc: TrainConfig = expert.config.train
        self.densifier = Densifier(self.tc, expert.spatial_lr_scale)
        self.guard = HealthGuard(expert.info.id, stop=self.tc.on_failure == "stop", log=log)
        self._losses: list[float] = []  # the losses of the current step's views
        self._coverage: list[float] = []  # ... and the mean opacity of their renders

    def param_groups(self) -> list[ParamGroup]:
        return self.expert.param_groups()

    def begin(self) -> None:
        self.expert.train()

    def before_step(self, step: int) -> None:
        e = self.expert
        e.active_sh_degree.fill_(min(e.max_sh_degree, step // max(self.tc.sh_increase_every, 1)))
        e.on_step(step)

    def loss(self, step: int, frame: Frame, target: Tensor) -> StepLoss:
        img, alpha, meta, _ = render_expert(self.expert, frame.camera, self.background)
        means2d = meta["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        loss = self.image_loss(frame, img, target)
        reg = self.expert.regularization(step)
        if reg is not None:
            loss = loss + reg
        return StepLoss(loss, img, {"meta": meta, "coverage": float(alpha.detach().mean())})

    def image_loss(self, frame: Frame, image: Tensor, target: Tensor) -> Tensor:
        """The loss of the render ``image`` ``[H, W, 3]`` of ``frame``: the photometric loss
        against the training image (distillation replaces this)."""
        return photometric_loss(image, target, self.tc.lambda_dssim)

    def after_backward(self, step: int, frame: Frame, out: StepLoss) -> None:
        self._losses.append(float(out.loss.detach()))
        self._coverage.append(out.aux["coverage"])
        if step <= self.tc.densify_until:
            meta = out.aux["meta"]
            self.densifier.observe(meta["means2d"], meta["radii"], frame.camera.width, frame.camera.height)

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        report = self.densifier.step(step, self.expert.table, [optimizer], _step_generator(self.seed, step))
        self.expert.refine(step, self.densifier, [optimizer])
        loss, self._losses = sum(self._losses) / max(len(self._losses), 1), []
        coverage, self._coverage = sum(self._coverage) / max(len(self._coverage), 1), []
        self.guard.after_step(step, loss, self.expert.num_gaussians, report, coverage=coverage)

    def postfix(self) -> dict[str, Any]:
        return {"N": self.expert.num_gaussians}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.expert.state_dict(), "densifier": self.densifier.state_dict(),
                "guard": self.guard.state_dict()}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        self.expert.load_state_dict(states["model"])  # first: the table takes the checkpoint's row count
        if states.get("densifier") is not None:
            self.densifier.load_state_dict(states["densifier"])
        if states.get("guard") is not None:
            self.guard.load_state_dict(states["guard"])


def expert_loop(expert_cls: ExpertClass, config: TrainableConfig, seed: int) -> LoopSpec:
    """The loop policies of an expert training (checkpoint identity: expert id and state version)."""
    tc = config.train
    return LoopSpec(
        kind="expert", label=expert_cls.info.id, iterations=tc.iterations, checkpoint_every=tc.checkpoint_every,
        views=EpochPermutations(seed, tc.batch_size), optimizer=functools.partial(torch.optim.Adam, eps=1e-15),
        identity={"expert": expert_cls.info.id, "state_version": expert_cls.state_version},
        config=config.to_dict(), config_defaults=type(config)().to_dict(),
    )


def train_expert(
    expert_cls: ExpertClass, scene: Scene, out_dir: Path, *, scene_spec: str, config: TrainableConfig,
    profile: str, seed: int = 0, resume: bool = False, force: bool = False, progress: bool = True,
    log: Callable[[str], None] = print, wait: bool = False, lpips: LpipsMetric | None = None,
) -> TrainedExpert:
    """Train (or resume, or reuse) one expert on ``scene`` into ``out_dir``; see the module doc.

    The folder is locked while this runs (:func:`moegs_bench.run_folder.working_in`): another
    process working there is refused, or waited for with ``wait`` (a shared cache entry). A
    finished run in a folder this process cannot write (a colleague's, a read-only mount) is read
    without the lock. ``lpips``: the LPIPS of a new evaluation (default: AlexNet when installed); a
    finished run's record is returned as it was written (see :meth:`TrainedExpert.with_lpips`)."""
    out_dir = Path(out_dir)
    expert_id = expert_cls.info.id
    identity = {"kind": EXPERT_RUN, "expert": expert_id, "state_version": expert_cls.state_version,
                "profile": profile, "config": config.to_dict(), "scene": scene_spec, "dataset": scene.state.digest,
                "seed": seed}
    finished = (out_dir / FINAL_CKPT).is_file() and (out_dir / RESULTS_FILE).is_file()
    if finished and not force and not os.access(out_dir, os.W_OK) and read_identity(out_dir) == identity:
        log(f"{out_dir}: finished run of {expert_id} found (read-only folder); reporting it")
        return open_trained_expert(expert_cls, scene, out_dir, config=config, seed=seed)
    expert = build_expert(expert_cls, config, scene, seed)
    spec, hooks = expert_loop(expert_cls, config, seed), ExpertHooks(expert, scene.background, seed, log=log)
    paths = CheckpointPaths(latest=out_dir / LATEST_CKPT, final=out_dir / FINAL_CKPT)
    with working_in(out_dir, identity, what="expert run", owned=(RESULTS_FILE, FINAL_CKPT, "checkpoints", "renders"),
                    force=force, wait=wait, on_wait=log,
                    check=lambda: _check_resume(out_dir, identity, resume=resume, force=force)):
        outcome = run_training(spec, hooks, scene, paths, progress=progress, log=log)
        remove_periodic(paths.latest)  # (and an emptied checkpoints/ folder)
        if outcome.already_finished:
            if (out_dir / RESULTS_FILE).is_file():
                log(f"{out_dir}: finished run of {expert_id} found; reporting it (pass --force to retrain)")
                return TrainedExpert(expert, read_record(out_dir / RESULTS_FILE), out_dir, reused=True)
            log(f"{out_dir}: {expert_id} finished training; evaluating it")
        return _finish(expert, scene, scene_spec, out_dir, config, profile, seed, outcome.elapsed, lpips,
                       hooks.guard.problems)


def open_trained_expert(expert_cls: ExpertClass, scene: Scene, folder: Path, *, config: TrainableConfig,
                        seed: int) -> TrainedExpert:
    """The finished training in ``folder`` (its final checkpoint and results record), read without
    a lock and without writing anything: an ``--expert-run`` folder, a colleague's or read-only
    folder, a distilled student (``moegs-bench distill``). ``config`` and ``seed`` are the
    training's (its ``run.json``); a checkpoint of another expert or configuration is a
    :class:`~moegs_bench.training.checkpoint.CheckpointError`."""
    folder = Path(folder)
    if not (folder / FINAL_CKPT).is_file() or not (folder / RESULTS_FILE).is_file():
        raise RunFolderError(f"{folder}: training is not finished (no {FINAL_CKPT} / {RESULTS_FILE})")
    expert = build_expert(expert_cls, config, scene, seed)
    paths = CheckpointPaths(latest=folder / LATEST_CKPT, final=folder / FINAL_CKPT)
    run_training(expert_loop(expert_cls, config, seed), ExpertHooks(expert, scene.background, seed), scene, paths,
                 progress=False)  # (the final checkpoint exists: loaded, nothing trained or written)
    return TrainedExpert(expert, read_record(folder / RESULTS_FILE), folder, reused=True)


def _finish(expert: TrainableExpert, scene: Scene, scene_spec: str, out_dir: Path, config: TrainableConfig,
            profile: str, seed: int, train_seconds: float, lpips: LpipsMetric | None,
            problems: list[str]) -> TrainedExpert:
    record = expert_record(expert, scene, scene_spec, out_dir, config, profile, seed, train_seconds, lpips=lpips)
    if problems:  # what the training guard reported (moegs_bench.training.guard)
        record = replace(record, extra={**record.extra, "health": list(problems)})
    write_record(out_dir / RESULTS_FILE, record)
    return TrainedExpert(expert, record, out_dir, reused=False)


def expert_record(expert: TrainableExpert, scene: Scene, scene_spec: str, out_dir: Path, config: TrainableConfig,
                  profile: str, seed: int, train_seconds: float, *, lpips: LpipsMetric | None = None) -> ResultRecord:
    """Evaluate a trained ``expert`` on the test views (renders into ``out_dir/renders/test``; LPIPS
    of ``lpips``, default AlexNet when installed) and make its results record."""
    expert.eval()
    bg = scene.background.to(expert.device)
    ev = evaluate(lambda f: render_expert(expert, f.camera, bg)[0], scene,
                  out_dir=out_dir / "renders" / "test", lpips=lpips)
    nbytes = expert.storage_bytes()
    return ResultRecord(
        kind="expert", name=expert.info.id, scene=scene_spec, config={"profile": profile, **config.to_dict()},
        seed=seed, num_gaussians=expert.num_gaussians, storage_bytes=nbytes, storage_mb=storage_mb(nbytes),
        metrics=ev.metrics, timing=ev.timing(train_seconds), provenance=collect_provenance(expert.device),
        extra={"method": expert.info.method, "paper": expert.info.paper, "repo": expert.info.repo,
               "dataset": scene.state.to_dict()},
    )


def build_expert(expert_cls: ExpertClass, config: TrainableConfig, scene: Scene, seed: int) -> TrainableExpert:
    """A new ``expert_cls`` initialised from ``scene`` (its random draws seeded by ``seed``)."""
    torch.manual_seed(seed)
    return expert_cls.from_scene(scene, config)


def _check_resume(out_dir: Path, identity: dict, *, resume: bool, force: bool) -> None:
    """An unfinished run of the same identity continues only with ``resume`` (or restarts with ``force``)."""
    unfinished = (out_dir / LATEST_CKPT).is_file() and not (out_dir / FINAL_CKPT).is_file()
    if unfinished and not resume and not force and read_identity(out_dir) == identity:
        raise RunFolderError(f"{out_dir}: holds an unfinished run ({LATEST_CKPT}); pass --resume to continue "
                             "it or --force to start over")
