"""Training health: notices when an expert's Gaussians collapse or its loss diverges.

A model whose adaptive density control prunes most of its Gaussians (too large, too wide on
screen, transparent) can rarely grow back within a short schedule, one whose Gaussians all turn
transparent renders nothing but the background, and a loss that turns NaN or keeps rising leaves
a meaningless model; each used to show only in the final metrics. The guard checks after every
step and reports the first occurrence of each problem with the step and the cause; with
``TrainConfig.on_failure = "stop"`` (the paper profiles) it stops the training with a one-line
error instead of finishing a broken model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from moegs_bench.errors import UserInputError
from moegs_bench.training.densify import DensifyReport

#: the Gaussian count has collapsed when it falls below this share of its peak so far
COLLAPSE_SHARE = 0.25
#: the renders are empty when the running mean of their opacity (alpha) falls below this
EMPTY_COVERAGE = 0.005
#: the loss has diverged when its running mean exceeds this multiple of its best running mean
DIVERGENCE_FACTOR = 3.0
#: the running mean is exponential with weight 1 / LOSS_WINDOW; it is not judged in the first
#: LOSS_WINDOW steps nor in the LOSS_WINDOW steps after an opacity reset (which raises the loss)
LOSS_WINDOW = 50


class TrainingFailed(UserInputError):
    """The training collapsed or diverged and its configuration says to stop (message: the step
    and what happened)."""


@dataclass
class HealthGuard:
    """Follows one training. ``stop``: raise :class:`TrainingFailed` at the first problem;
    otherwise each kind of problem is reported once through ``log`` and kept in ``problems``."""

    label: str
    stop: bool
    log: Callable[[str], None] = print
    peak: int = 0
    problems: list[str] = field(default_factory=list)
    _ema: float | None = None
    _coverage: float | None = None
    _best: float = math.inf
    _since_reset: int = LOSS_WINDOW
    _seen: set[str] = field(default_factory=set)

    def after_step(self, step: int, loss: float, num_gaussians: int, report: DensifyReport, *,
                   coverage: float | None = None) -> None:
        """Check the state after ``step``: its mean training ``loss``, the Gaussian count after
        densification, what densification did (``report``) and the mean alpha of the step's
        renders (``coverage``)."""
        if not math.isfinite(loss):
            self._problem("diverged", f"step {step}: the training loss is {loss} (not finite)")
        self._check_loss(step, loss, report.reset_opacity)
        if coverage is not None:
            self._check_coverage(step, coverage)
        before = self.peak
        self.peak = max(self.peak, num_gaussians)
        causes = ", ".join(f"{n:,} {what}" for n, what in ((report.pruned_screen, "too wide on screen"),
                                                            (report.pruned_world, "too large in the world"),
                                                            (report.pruned_transparent, "transparent")) if n)
        if report.kept_all:
            self._problem("collapsed", f"step {step}: densification would have pruned all {num_gaussians:,} "
                                       f"Gaussians ({causes}); it kept them, as an empty model cannot recover")
        elif before and num_gaussians < COLLAPSE_SHARE * before:
            why = f" ({report.pruned:,} pruned: {causes})" if report.pruned and causes else ""
            self._problem("collapsed", f"step {step}: the Gaussian count fell to {num_gaussians:,}, below "
                                       f"{COLLAPSE_SHARE:.0%} of its peak {before:,}{why}")

    def _check_loss(self, step: int, loss: float, reset: bool) -> None:
        if not math.isfinite(loss):
            return
        self._since_reset = 0 if reset else self._since_reset + 1
        a = 1.0 / LOSS_WINDOW
        self._ema = loss if self._ema is None else (1 - a) * self._ema + a * loss
        if step < LOSS_WINDOW or self._since_reset < LOSS_WINDOW:  # (a reset raises the loss for a while)
            return
        self._best = min(self._best, self._ema)
        if self._ema > DIVERGENCE_FACTOR * self._best:
            self._problem("diverged", f"step {step}: the training loss (running mean over ~{LOSS_WINDOW} steps) rose "
                                      f"to {self._ema:.4g}, {self._ema / self._best:.1f}x its best {self._best:.4g}")

    def _check_coverage(self, step: int, coverage: float) -> None:
        a = 1.0 / LOSS_WINDOW
        self._coverage = coverage if self._coverage is None else (1 - a) * self._coverage + a * coverage
        if step >= LOSS_WINDOW and self._since_reset >= LOSS_WINDOW and self._coverage < EMPTY_COVERAGE:
            self._problem("collapsed", f"step {step}: its renders are empty (mean alpha {self._coverage:.2g} over "
                                       f"~{LOSS_WINDOW} steps): every Gaussian is transparent or out of view")

    def _problem(self, kind: str, what: str) -> None:
        message = f"{self.label} {kind} at {what}"
        if self.stop:
            raise TrainingFailed(f"{message}; stopped (--set experts.{self.label}.train.on_failure=warn finishes "
                                 "the training anyway)")
        if kind not in self._seen:
            self._seen.add(kind)
            self.problems.append(message)
            self.log(f"warning: {message}")

    def state_dict(self) -> dict:
        return {"peak": self.peak, "problems": list(self.problems), "ema": self._ema, "best": self._best,
                "since_reset": self._since_reset, "seen": sorted(self._seen), "coverage": self._coverage}

    def load_state_dict(self, state: dict) -> None:
        self.peak, self.problems = int(state["peak"]), list(state["problems"])
        self._ema, self._best = state["ema"], float(state["best"])
        self._since_reset, self._seen = int(state["since_reset"]), set(state["seen"])
        self._coverage = state.get("coverage")
