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

from .._checks import InputError
from ..data.scene import Scene
from ..io import atomic_write
from ..metrics import dssim
from .mixture import Mixture

FORMAT = "moegs-bench/router-checkpoint"
FORMAT_VERSION = 1


def _param_groups(mixture: Mixture) -> list[dict[str, Any]]:
    cfg, params = mixture.config, mixture.router_parameters()
    groups = [
        {"name": "w", "params": params["w"], "lr": cfg.lr_w},
        {"name": "w_time", "params": params["w_time"], "lr": cfg.lr_w_time},
    ]
    if params["phi"]:
        groups.append({"name": "phi", "params": params["phi"], "lr": cfg.lr_phi})
    if cfg.finetune_experts:  # each expert group at the rate it ended its own training with
        for e in mixture.experts:
            for g in e.param_groups():
                steps = max(e.config.train.iterations, 1)
                groups.append({"name": f"{e.info.id}.{g.name}", "params": g.params, "lr": g.lr_at(steps)})
    return groups


def w_lr(mixture: Mixture, step: int) -> float:
    """Exponential decay of the w / w_dir rate from ``lr_w`` to ``lr_w_final`` over ``lr_decay_steps``."""
    cfg = mixture.config
    s = min(max(step / max(cfg.lr_decay_steps, 1), 0.0), 1.0)
    return math.exp(math.log(cfg.lr_w) * (1 - s) + math.log(cfg.lr_w_final) * s)


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
    optimizer = torch.optim.RAdam(_param_groups(mixture))
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
    images: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()

    def save(step: int) -> None:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "experts": mixture.expert_ids,
                "config": cfg.to_dict(), "step": step, "elapsed": elapsed + time.perf_counter() - t0,
                "router": mixture.router_state(), "optimizer": optimizer.state_dict()}
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(ckpt_path, lambda p: torch.save(data, p))

    bar = tqdm(total=cfg.iterations, initial=start, desc="train router", disable=not progress, mininterval=1.0,
               dynamic_ncols=True, unit="step")
    ema = None
    try:
        for step in range(start + 1, cfg.iterations + 1):
            optimizer.param_groups[0]["lr"] = w_lr(mixture, step)
            frame = train[view_at(seed, step, len(train))]
            if frame.key not in images:
                images[frame.key] = scene.image(frame)
            gt = images[frame.key]  # [H, W, 3]
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
                save(step)
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
