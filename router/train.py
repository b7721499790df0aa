"""Router training: experts frozen (or fine-tuned), RAdam, one random training view per step.

Deterministic for a seed (the view of step s is drawn from a generator seeded by (seed, s)), with
periodic atomic checkpoints, so a killed run resumes and ends as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from moegs_bench._checks import InputError
from moegs_bench.adapters.base import ParamGroup
from moegs_bench.data.scene import Scene
from moegs_bench.io import atomic_write
from moegs_bench.metrics import dssim
from moegs_bench.training.trainer import ImageSource
from moegs_bench.router.mixture import Mixture

FORMAT = "moegs-bench/router-checkpoint"
FORMAT_VERSION = 1


def param_groups(mixture: Mixture) -> list[ParamGroup]:
    """Optimiser groups with their schedules: w and w_dir decay exponentially from ``lr_w`` to
    ``lr_w_final`` over ``lr_decay_steps``; w_time and Phi keep their rates; fine-tuned experts'
    groups keep the rate each ended its own training with."""
    cfg, params = mixture.config, mixture.router_parameters()
    groups = [
        ParamGroup("w", params["w"], cfg.lr_w, lr_final=cfg.lr_w_final, max_steps=cfg.lr_decay_steps),
        ParamGroup("w_time", params["w_time"], cfg.lr_w_time),
    ]
    if params["phi"]:
        groups.append(ParamGroup("phi", params["phi"], cfg.lr_phi))
    if cfg.finetune_experts:
        for e in mixture.experts:
            steps = max(e.config.train.iterations, 1)
            groups += [ParamGroup(f"{e.info.id}.{g.name}", g.params, g.lr_at(steps)) for g in e.param_groups()]
    return groups


def save_router_checkpoint(path: Path, mixture: Mixture, step: int, elapsed: float,
                           optimizer: torch.optim.Optimizer | None) -> None:
    """Write the router (and, mid-training, the optimiser) atomically to ``path``."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "experts": mixture.expert_ids,
            "config": mixture.config.to_dict(), "step": step, "elapsed": elapsed,
            "router": mixture.router_state(), "optimizer": None if optimizer is None else optimizer.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save(data, p))


def view_at(seed: int, step: int, n: int) -> int:
    """The training view of ``step``: uniform, fixed by (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 7_919 + 5)
    return int(torch.randint(n, (1,), generator=g))


def train_router(
    mixture: Mixture, scene: Scene, ckpt_path: Path, *, seed: int = 0, progress: bool = True,
    log: Callable[[str], None] = print,
) -> float:
    """Train ``mixture``'s router on ``scene``'s training views; returns the training seconds.

    Resumes from ``ckpt_path`` when it exists (same experts and config), saves it every
    ``checkpoint_every`` steps and leaves the trained router in ``mixture``.
    """
    cfg = mixture.config
    mixture.freeze_experts(not cfg.finetune_experts)
    for e in mixture.experts:
        e.train(cfg.finetune_experts)  # frozen experts render as they do at test time
    schedules = param_groups(mixture)
    optimizer = torch.optim.RAdam([{"params": g.params, "lr": g.lr, "name": g.name} for g in schedules])
    start, elapsed = 0, 0.0
    if ckpt_path.is_file():
        ck = load_router_checkpoint(ckpt_path, mixture)
        mixture.load_router_state(ck["router"])
        optimizer.load_state_dict(ck["optimizer"])
        start, elapsed = ck["step"], ck["elapsed"]
        log(f"resuming router training from step {start} ({ckpt_path})")
    train = list(scene.train)
    if not train:
        raise InputError(f"scene {scene.name}: no training views")
    bg = scene.background
    images = ImageSource(scene, train)
    t0 = time.perf_counter()

    bar = tqdm(total=cfg.iterations, initial=start, desc="train router", disable=not progress, mininterval=1.0,
               dynamic_ncols=True, unit="step")
    ema = None
    try:
        for step in range(start + 1, cfg.iterations + 1):
            for g, group in zip(schedules, optimizer.param_groups):
                group["lr"] = g.lr_at(step)
            frame = train[view_at(seed, step, len(train))]
            gt = images.get(frame)  # [H, W, 3]
            out = mixture(frame.camera, bg)
            loss = (1 - cfg.lambda_dssim) * (out.image - gt).abs().mean() + cfg.lambda_dssim * dssim(out.image, gt)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                psnr = -10 * math.log10(max(float(((out.image - gt) ** 2).mean()), 1e-10))
            ema = psnr if ema is None else 0.9 * ema + 0.1 * psnr
            bar.update(1)
            if step % 10 == 0 or step == cfg.iterations:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", psnr=f"{ema:.2f}", refresh=False)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.iterations:
                save_router_checkpoint(ckpt_path, mixture, step, elapsed + time.perf_counter() - t0, optimizer)
    finally:
        bar.close()
    for e in mixture.experts:
        e.eval()
    return elapsed + time.perf_counter() - t0


def load_router_checkpoint(path: Path, mixture: Mixture) -> dict[str, Any]:
    """Read a router checkpoint and check it belongs to ``mixture`` (experts and config)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise InputError(f"{path}: not a readable router checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"{path}: not a moegs-bench router checkpoint")
    if ck.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: router checkpoint format {ck.get('format_version')}, expected {FORMAT_VERSION}")
    if ck["experts"] != mixture.expert_ids:
        raise InputError(f"{path}: router of experts {ck['experts']}, this mixture has {mixture.expert_ids}")
    if ck["config"] != mixture.config.to_dict():
        raise InputError(f"{path}: router trained with another configuration")
    return ck
