"""The one training loop every expert shares (``moegs-bench train-expert``).

Adam with the expert's per-attribute learning rates, ``(1 - l) * L1 + l * (1 - SSIM)`` plus the
expert's own regulariser, the 3DGS SH ramp and adaptive density control, periodic atomic
checkpoints, ``resume``, and a results record at the end. Deterministic on CPU for a seed: views
are drawn from per-epoch permutations and densification noise from per-step generators, both
derived from the seed, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from moegs_bench._checks import InputError
from moegs_bench.cameras import Camera
from moegs_bench.data.scene import Frame, Scene
from moegs_bench.metrics import LpipsMetric, dssim, storage_mb
from moegs_bench.render import rasterize
from moegs_bench.results import ResultRecord, collect_provenance, read_record, write_record
from moegs_bench.run_folder import RunFolderError, claim_folder, read_identity
from moegs_bench.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from moegs_bench.training.densify import Densifier
from moegs_bench.training.evaluate import evaluate

RESULTS_FILE = "results.json"
FINAL_CKPT = "expert.pt"
LATEST_CKPT = "checkpoints/latest.pt"


@dataclass
class TrainedExpert:
    expert: Any  # adapters.base.Expert
    record: ResultRecord
    out_dir: Path
    reused: bool  # True: a finished run was found and reported, nothing recomputed


def render_expert(expert: Any, camera: Camera, background: Tensor | None = None):
    """Rasterize ``expert`` at ``camera``: ``(image [H,W,3], alpha [H,W,1], meta, GaussianState)``."""
    gs = expert.gaussians_at(camera)
    img, alpha, meta = rasterize(
        gs.means, gs.quats, gs.scales, gs.opacities, gs.colors, camera.viewmat, camera.K,
        camera.width, camera.height, backgrounds=background, sh_degree=gs.sh_degree,
        near_plane=camera.near, far_plane=camera.far,
    )
    return img, alpha, meta, gs


def view_order(seed: int, epoch: int, n: int) -> Tensor:
    """The training views of one epoch: a permutation fixed by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class _ViewOrder:
    """:func:`view_order` of the current epoch, drawn once per epoch rather than once per view."""

    def __init__(self, seed: int, n: int) -> None:
        self.seed, self.n, self._epoch, self._perm = seed, n, -1, torch.empty(0, dtype=torch.long)

    def epoch(self, e: int) -> Tensor:
        if e != self._epoch:
            self._epoch, self._perm = e, view_order(self.seed, e, self.n)
        return self._perm


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + 17)


def train_expert(
    expert_cls: type, scene: Scene, out_dir: Path, *, scene_spec: str, config: Any, profile: str,
    seed: int = 0, resume: bool = False, force: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainedExpert:
    """Train (or resume, or reuse) one expert on ``scene`` into ``out_dir``; see the module doc."""
    out_dir = Path(out_dir)
    expert_id = expert_cls.info.id
    identity = {"expert": expert_id, "state_version": expert_cls.state_version, "profile": profile,
                "config": config.to_dict(), "scene": scene_spec, "seed": seed}
    _claim_folder(out_dir, identity, resume=resume, force=force)
    if (out_dir / FINAL_CKPT).is_file():
        ckpt = load_checkpoint(out_dir / FINAL_CKPT, expert=expert_id, state_version=expert_cls.state_version)
        expert = _build(expert_cls, config, scene, seed)
        expert.load_state_dict(ckpt.model)
        if (out_dir / RESULTS_FILE).is_file():
            log(f"{out_dir}: finished run of {expert_id} found; reporting it (pass --force to retrain)")
            return TrainedExpert(expert, read_record(out_dir / RESULTS_FILE), out_dir, reused=True)
        log(f"{out_dir}: {expert_id} finished training; evaluating it")
        return _finish(expert, scene, scene_spec, out_dir, config, profile, seed, ckpt.elapsed)

    tc = config.train
    expert = _build(expert_cls, config, scene, seed)
    densifier = Densifier(tc, expert.spatial_lr_scale)
    start, elapsed, ckpt = 0, 0.0, None
    latest = out_dir / LATEST_CKPT
    if latest.is_file():  # _claim_folder has checked that resuming was asked for
        ckpt = load_checkpoint(latest, expert=expert_id, state_version=expert_cls.state_version)
        expert.load_state_dict(ckpt.model)  # first: the table takes the checkpoint's row count
        if ckpt.densifier is not None:
            densifier.load_state_dict(ckpt.densifier)
        start, elapsed = ckpt.step, ckpt.elapsed
        log(f"resuming {expert_id} from step {start} ({latest})")
    # the groups' learning-rate schedules; their parameters change with densification, the
    # optimiser holds the current ones
    schedules = expert.param_groups()
    optimizer = torch.optim.Adam([{"params": g.params, "lr": g.lr, "name": g.name} for g in schedules], eps=1e-15)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)

    bg = scene.background
    train = list(scene.train)
    if not train:
        raise InputError(f"scene {scene.name}: no training views")
    images = ImageSource(scene, train)
    order = _ViewOrder(seed, len(train))

    def save(step: int, path: Path, finished: bool) -> None:
        save_checkpoint(path, Checkpoint(
            expert=expert_id, state_version=expert_cls.state_version, config=config.to_dict(), step=step,
            finished=finished, elapsed=elapsed + time.perf_counter() - t0, model=expert.state_dict(),
            optimizer=optimizer.state_dict(), densifier=densifier.state_dict()))

    expert.train()
    bar = tqdm(total=tc.iterations, initial=start, desc=f"train {expert_id}", disable=not progress,
               mininterval=1.0, dynamic_ncols=True, unit="step")
    ema_loss = ema_psnr = None
    t0 = time.perf_counter()
    try:
        for step in range(start + 1, tc.iterations + 1):
            for g, group in zip(schedules, optimizer.param_groups):
                group["lr"] = g.lr_at(step)
            expert.active_sh_degree.fill_(min(expert.max_sh_degree, step // max(tc.sh_increase_every, 1)))
            expert.on_step(step)
            loss_value = psnr_value = 0.0
            for b in range(tc.batch_size):
                k = (step - 1) * tc.batch_size + b
                frame = train[int(order.epoch(k // len(train))[k % len(train)])]
                img, _, meta, _ = render_expert(expert, frame.camera, bg)
                means2d = meta["means2d"]
                if means2d.requires_grad:
                    means2d.retain_grad()
                gt = images.get(frame)
                l1 = (img - gt).abs().mean()
                loss = (1 - tc.lambda_dssim) * l1 + (tc.lambda_dssim * dssim(img, gt) if tc.lambda_dssim else 0.0)
                reg = expert.regularization(step)
                if reg is not None:
                    loss = loss + reg
                (loss / tc.batch_size).backward()
                if step <= tc.densify_until:
                    densifier.observe(means2d, meta["radii"], frame.camera.width, frame.camera.height)
                loss_value += float(loss.detach()) / tc.batch_size
                with torch.no_grad():
                    mse = float(((img - gt) ** 2).mean())
                psnr_value += (-10 * math.log10(max(mse, 1e-10))) / tc.batch_size
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            densifier.step(step, expert.table, [optimizer], _step_generator(seed, step))
            expert.refine(step, densifier, [optimizer])
            ema_loss = loss_value if ema_loss is None else 0.9 * ema_loss + 0.1 * loss_value
            ema_psnr = psnr_value if ema_psnr is None else 0.9 * ema_psnr + 0.1 * psnr_value
            bar.update(1)
            if step % 10 == 0 or step == tc.iterations:
                bar.set_postfix(loss=f"{ema_loss:.4f}", psnr=f"{ema_psnr:.2f}", N=expert.num_gaussians, refresh=False)
            if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.iterations:
                save(step, latest, finished=False)
    finally:  # a killed run resumes from the last periodic checkpoint
        bar.close()
    train_seconds = elapsed + time.perf_counter() - t0
    save(tc.iterations, out_dir / FINAL_CKPT, finished=True)
    return _finish(expert, scene, scene_spec, out_dir, config, profile, seed, train_seconds)


def _finish(expert, scene, scene_spec, out_dir, config, profile, seed, train_seconds) -> TrainedExpert:
    record = _record(expert, scene, scene_spec, out_dir, config, profile, seed, train_seconds)
    write_record(out_dir / RESULTS_FILE, record)
    (out_dir / LATEST_CKPT).unlink(missing_ok=True)
    return TrainedExpert(expert, record, out_dir, reused=False)


def _record(expert, scene, scene_spec, out_dir, config, profile, seed, train_seconds):
    expert.eval()
    bg = scene.background.to(expert.device)
    ev = evaluate(lambda f: render_expert(expert, f.camera, bg)[0], scene,
                  out_dir=out_dir / "renders" / "test", lpips=LpipsMetric())
    nbytes = expert.storage_bytes()
    return ResultRecord(
        kind="expert", name=expert.info.id, scene=scene_spec, config={"profile": profile, **config.to_dict()},
        seed=seed, num_gaussians=expert.num_gaussians, storage_bytes=nbytes, storage_mb=storage_mb(nbytes),
        metrics=ev.metrics, timing=ev.timing(train_seconds), provenance=collect_provenance(expert.device),
        extra={"method": expert.info.method, "paper": expert.info.paper, "repo": expert.info.repo},
    )


def _build(expert_cls: type, config: Any, scene: Scene, seed: int) -> Any:
    from moegs_bench.adapters.base import SceneInit

    torch.manual_seed(seed)
    return expert_cls(config, SceneInit.from_scene(scene))


def _claim_folder(out_dir: Path, identity: dict, *, resume: bool, force: bool) -> None:
    """Make ``out_dir`` ours (see :func:`claim_folder`); an unfinished run continues only with ``resume``."""
    unfinished = (out_dir / LATEST_CKPT).is_file() and not (out_dir / FINAL_CKPT).is_file()
    if unfinished and not resume and not force and read_identity(out_dir) == identity:
        raise RunFolderError(f"{out_dir}: holds an unfinished run ({LATEST_CKPT}); pass --resume to continue "
                             "it or --force to start over")
    claim_folder(out_dir, identity, what="expert run", owned=(RESULTS_FILE, FINAL_CKPT, LATEST_CKPT, "renders"),
                 force=force)


class ImageSource:
    """Training images: held in memory when small (the synthetic suite), else read per step."""

    def __init__(self, scene: Scene, frames: list[Frame], budget_bytes: int = 2 << 30) -> None:
        self.scene = scene
        w, h = scene.resolution
        self.cache: dict[str, Tensor] | None = None
        if len(frames) * w * h * 3 * 4 <= budget_bytes:
            self.cache = {f.key: scene.image(f) for f in frames}

    def get(self, frame: Frame) -> Tensor:
        if self.cache is not None:
            return self.cache[frame.key]
        return self.scene.image(frame)
