"""Render-speed and storage measurements, as the 3DGS literature reports them."""

from __future__ import annotations

import math
import numbers
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from moegs_bench.errors import InputError

__all__ = ["FpsResult", "measure_fps", "storage_mb"]


@dataclass(frozen=True)
class FpsResult:
    """Render speed over ``repeats`` timed passes of ``frames`` frames each (medians over passes)."""

    fps: float
    median_ms_per_frame: float
    repeats: int
    frames: int
    pass_seconds: tuple[float, ...]  # wall time of each timed pass


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure_fps(render: Callable[[int], object], n: int, *, warmup: int = 2, repeats: int = 3) -> FpsResult:
    """Time ``render(i)`` for ``i in range(n)``: ``warmup`` untimed passes over all ``n`` cameras,
    then ``repeats`` timed passes (``time.perf_counter``; CUDA is synchronised before and after
    each pass when it is initialised). ``fps`` is ``1000 / median_ms_per_frame``."""
    for name, value, low in (("n", n, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name}: expected an int >= {low}, got {value!r}")
    if not callable(render):
        raise InputError(f"render: expected a callable taking a camera index, got {type(render).__name__}")
    for _ in range(warmup):
        for i in range(n):
            render(i)
    _sync()
    passes: list[float] = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        for i in range(n):
            render(i)
        _sync()
        passes.append(time.perf_counter() - t0)
    ms = statistics.median(passes) * 1000.0 / n
    fps = 1000.0 / ms if ms > 0 else math.inf
    return FpsResult(fps=fps, median_ms_per_frame=ms, repeats=repeats, frames=n, pass_seconds=tuple(passes))


def storage_mb(num_bytes: int) -> float:
    """Storage in "MB" as the 3DGS literature reports it: ``num_bytes / 2**20`` (i.e. MiB)."""
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, numbers.Integral) or num_bytes < 0:
        raise InputError(f"num_bytes: expected an int >= 0, got {num_bytes!r}")
    return int(num_bytes) / 2**20
