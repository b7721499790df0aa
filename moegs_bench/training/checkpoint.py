"""Expert checkpoints: one ``torch.save`` file, written atomically, checked on load.

Layout (``format_version`` 1)::

    {"format": "moegs-bench/expert-checkpoint", "format_version": 1,
     "expert": "4dgs", "state_version": 1, "config": {...}, "step": 3000, "finished": bool,
     "elapsed": seconds of training so far, "num_gaussians": N,
     "model": expert.state_dict(), "optimizer": {...} | None, "densifier": {...} | None}

The row count of the per-Gaussian table varies during training; loading resizes the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moegs_bench.io import atomic_write
from moegs_bench._checks import InputError

FORMAT = "moegs-bench/expert-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, or belongs to another expert or version."""


@dataclass
class Checkpoint:
    expert: str
    state_version: int
    config: dict[str, Any]
    step: int
    finished: bool
    elapsed: float
    model: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    densifier: dict[str, Any] | None = None


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "expert": ckpt.expert,
        "state_version": ckpt.state_version, "config": ckpt.config, "step": ckpt.step,
        "finished": ckpt.finished, "elapsed": ckpt.elapsed,
        "num_gaussians": _rows(ckpt.model), "model": ckpt.model, "optimizer": ckpt.optimizer,
        "densifier": ckpt.densifier,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: Path, *, expert: str | None = None, state_version: int | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and check a checkpoint; ``expert`` / ``state_version`` are what the caller expects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a moegs-bench expert checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('format_version')}, this moegs-bench "
                              f"reads version {FORMAT_VERSION}")
    if expert is not None and payload["expert"] != expert:
        raise CheckpointError(f"{path}: checkpoint of expert {payload['expert']!r}, expected {expert!r}")
    if state_version is not None and payload["state_version"] != state_version:
        raise CheckpointError(f"{path}: {payload['expert']} checkpoint with state version {payload['state_version']}, "
                              f"this code expects version {state_version} (trained with another moegs-bench?)")
    return Checkpoint(
        expert=payload["expert"], state_version=payload["state_version"], config=payload["config"],
        step=int(payload["step"]), finished=bool(payload["finished"]), elapsed=float(payload["elapsed"]),
        model=payload["model"], optimizer=payload.get("optimizer"), densifier=payload.get("densifier"),
    )


def _rows(model: dict[str, Any]) -> int:
    t = model.get("table.means")
    return int(t.shape[0]) if isinstance(t, torch.Tensor) else -1
