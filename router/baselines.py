"""What the router buys: a mixture's experts combined without a router, and by an oracle.

On the test views, beside the mixture (Jin et al., MoE-GS, arXiv 2510.19210):

- **uniform average**: every gate ``1/K``, ``I = (1/K) sum_k I_k`` over the experts' own renders
  (backgrounds included), clamped to [0, 1] as the mixture's blend is: what any ensemble of the
  same experts gets without learning anything;
- **per-pixel oracle**: at every pixel the colour of the expert closest to the ground truth
  (squared error over the channels; ties go to the first expert): the best any per-pixel choice
  of one of these experts can do. It looks at the ground truth, so it is an upper bound for
  reference, never a method;
- **best expert**: the single expert with the highest test PSNR (from the same renders).

The router's gain is then ``PSNR(mixture) - PSNR(average)``, and the share of the
average-to-oracle gap it closes ``gain / (PSNR(oracle) - PSNR(average))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from moegs_bench.data.scene import Frame, Scene
from moegs_bench.metrics import psnr, ssim


def average_image(images: Tensor) -> Tensor:
    """``[K, H, W, 3]`` expert renders -> their mean ``[H, W, 3]`` clamped to [0, 1]."""
    return images.mean(dim=0).clamp(0, 1)


def oracle_image(images: Tensor, gt: Tensor) -> Tensor:
    """``[K, H, W, 3]`` expert renders (clamped to [0, 1]) and the ground truth ``[H, W, 3]`` ->
    at every pixel the expert colour with the smallest squared error ``[H, W, 3]``."""
    err = (images - gt).square().sum(dim=-1)  # [K, H, W]
    best = err.argmin(dim=0)  # [H, W]
    return images.gather(0, best[None, :, :, None].expand(1, *gt.shape))[0]


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float

    def to_dict(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim}


@dataclass(frozen=True)
class EnsembleBaselines:
    """Each expert, the uniform average and the oracle over the test views (means of per-view
    PSNR / SSIM, as the records' metrics are)."""

    experts: dict[str, Score]
    average: Score
    oracle: Score
    per_view: list[dict[str, Any]] = field(default_factory=list)  # key, average_psnr, oracle_psnr, ...

    @property
    def best_expert(self) -> tuple[str, Score]:
        name = max(self.experts, key=lambda k: self.experts[k].psnr)
        return name, self.experts[name]

    def record(self, mixture_psnr: float) -> dict[str, Any]:
        """The ``baselines`` entry of a mixture's results record."""
        gain = mixture_psnr - self.average.psnr
        gap = self.oracle.psnr - self.average.psnr
        name, best = self.best_expert
        return {
            "uniform_average": self.average.to_dict(),
            "best_expert": {"name": name, **best.to_dict()},
            "oracle": {**self.oracle.to_dict(), "uses_ground_truth": True},
            "router_gain_over_average_db": gain,
            "mixture_gain_over_best_expert_db": mixture_psnr - best.psnr,
            "gap_closed": gain / gap if gap > 0 else None,
            "per_view": self.per_view,
        }


@torch.no_grad()
def ensemble_baselines(mixture, scene: Scene, frames: Sequence[Frame] | None = None) -> EnsembleBaselines:
    """The uniform average and the per-pixel oracle of ``mixture``'s experts on ``frames``
    (default: the test views); every expert is rendered on its own (``separate`` mode), whatever
    mode the mixture blends in."""
    frames = list(scene.test if frames is None else frames)
    ids = list(mixture.expert_ids)
    rows = []
    for frame in frames:
        images = mixture.render_experts(frame.camera, scene.background, mode="separate").images  # [K, H, W, 3]
        gt = scene.image(frame).to(images.device)  # [H, W, 3]
        own = images.clamp(0, 1)
        named = {**{eid: own[k] for k, eid in enumerate(ids)}, "average": average_image(images),
                 "oracle": oracle_image(own, gt)}
        row: dict[str, Any] = {"key": frame.key}
        for name, img in named.items():
            row[f"{name}_psnr"], row[f"{name}_ssim"] = float(psnr(img, gt)), float(ssim(img, gt))
        rows.append(row)

    def score(name: str) -> Score:
        return Score(sum(r[f"{name}_psnr"] for r in rows) / len(rows), sum(r[f"{name}_ssim"] for r in rows) / len(rows))

    return EnsembleBaselines({eid: score(eid) for eid in ids}, score("average"), score("oracle"), rows)


__all__ = ["EnsembleBaselines", "Score", "average_image", "ensemble_baselines", "oracle_image"]
