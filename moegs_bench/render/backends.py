"""Which rasterizer backend renders, and on which device: the one backend policy of moegs-bench.

``auto`` renders tensors on a CUDA device with gsplat and any other tensors with the pure-PyTorch
backend; ``gsplat`` must be usable on the tensors' device (gsplat's kernels are CUDA-only). Every
renderer (``rasterize``, ``render``, ``rasterize_grouped``) and ``moegs-bench render-demo`` go
through :func:`resolve_backend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from moegs_bench.errors import InputError

BackendName = Literal["auto", "torch", "gsplat"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "gsplat")


class BackendUnavailable(InputError):
    """The backend asked for cannot render here; ``reason`` says why (one line)."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend={backend!r} unavailable: {reason}")
        self.backend, self.reason = backend, reason


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    detail: str


def backend_status() -> list[BackendStatus]:
    """Which rasterizer backends can run on this machine, and why (not)."""
    from moegs_bench.render._gsplat_backend import gsplat_status

    ok, detail = gsplat_status()
    return [
        BackendStatus("torch", True, f"pure PyTorch {torch.__version__}, any device"),
        BackendStatus("gsplat", ok, detail),
    ]


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """The backend (``torch`` or ``gsplat``) that renders tensors on ``device`` when
    ``requested`` (``auto``, ``torch`` or ``gsplat``) is asked for.

    Raises InputError for an unknown name and :class:`BackendUnavailable` when gsplat is asked
    for (or chosen by ``auto``) but cannot run on ``device``.
    """
    if requested == "auto":
        requested = "gsplat" if torch.device(device).type == "cuda" else "torch"
    if requested == "gsplat":
        from moegs_bench.render._gsplat_backend import gsplat_status

        ok, why = gsplat_status()
        if not ok or torch.device(device).type != "cuda":
            raise BackendUnavailable("gsplat", why if not ok else "tensors are not on a CUDA device")
        return "gsplat"
    if requested != "torch":
        raise InputError(f"backend: expected auto, torch or gsplat, got {requested!r}")
    return "torch"


def device_for(requested: str) -> str:
    """Where to create tensors that ``requested`` will render, for callers that have none yet:
    ``cuda`` for gsplat (asked for, or ``auto`` with gsplat usable here), else ``cpu``."""
    from moegs_bench.render._gsplat_backend import gsplat_status

    if requested == "gsplat" or (requested == "auto" and gsplat_status()[0]):
        return "cuda"
    return "cpu"
