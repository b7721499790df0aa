"""Distillation of a trained mixture into one of its experts (MoE-GS, Jin et al., arXiv 2510.19210,
§3.5, Eq. 11), as a configuration of the one training loop.

For student expert ``k`` with render ``I_k``, its gate ``G_k`` in the trained mixture (the teacher)
and the teacher's blend ``I_MoE``::

    L_k = lam * L(G_k * I_k, G_k * I_GT) + (1 - lam) * L((1 - G_k) * I_k, (1 - G_k) * I_MoE)

with ``L`` the experts' photometric loss (``(1 - l) L1 + l D-SSIM``, 3DGS eq. 7): where the router
trusts the student it learns from the ground truth, elsewhere from the mixture. Gaps the paper
leaves, filled here: the gate and the blend are the teacher's at its test temperature (what it
renders when evaluated), held fixed (no gradient reaches the teacher); ``lam`` is not given (swept
by ``benchmarks/distillation.py``); the expert's own regulariser is added as in its training; the
student keeps its schedule, densification and optimiser, only the loss of a view changes. A fair
baseline is the same training with :class:`~moegs_bench.training.trainer.ExpertHooks`' loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from moegs_bench.data.scene import Frame
from moegs_bench.metrics import photometric_loss
from moegs_bench.training.contracts import TrainableExpert
from moegs_bench.training.trainer import ExpertHooks


@dataclass(frozen=True)
class TeacherView:
    """The teacher's render of one training view."""

    image: Tensor  # [H, W, 3] the mixture's blend I_MoE
    gate: Tensor  # [H, W, 1] the student's gate G_k


def distillation_loss(image: Tensor, gt: Tensor, teacher: Tensor, gate: Tensor, lam: float,
                      lambda_dssim: float) -> Tensor:
    """Eq. 11 of MoE-GS for one view: ``image``, ``gt``, ``teacher`` ``[H, W, 3]``, ``gate``
    ``[H, W, 1]`` in [0, 1]; ``L`` is :func:`~moegs_bench.metrics.photometric_loss` with
    ``lambda_dssim``. A term whose weight is 0 (``lam`` 0 or 1) is not computed."""
    loss = image.new_zeros(())
    if lam > 0:
        loss = loss + lam * photometric_loss(gate * image, gate * gt, lambda_dssim)
    if lam < 1:
        rest = 1 - gate
        loss = loss + (1 - lam) * photometric_loss(rest * image, rest * teacher, lambda_dssim)
    return loss


class TeacherSource(Protocol):
    def view(self, frame: Frame) -> TeacherView:
        """The teacher's blend and the student's gate at training view ``frame`` (no gradient)."""
        ...


class DistillHooks(ExpertHooks):
    """An expert's training with the loss of a view replaced by :func:`distillation_loss` against
    the teacher's renders of the training views."""

    def __init__(self, expert: TrainableExpert, background: Tensor | None, seed: int, teacher: TeacherSource,
                 lam: float) -> None:
        super().__init__(expert, background, seed)
        self.teacher, self.lam = teacher, float(lam)

    def image_loss(self, frame: Frame, image: Tensor, target: Tensor) -> Tensor:
        view = self.teacher.view(frame)
        return distillation_loss(image, target, view.image, view.gate, self.lam, self.tc.lambda_dssim)


__all__ = ["DistillHooks", "TeacherSource", "TeacherView", "distillation_loss"]

