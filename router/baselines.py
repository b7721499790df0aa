"""What the router buys: a mixture's experts combined without a router, and by an oracle.

On the test views, beside the mixture (Jin et al., MoE-GS, arXiv 2510.19210):

- **uniform average**: every gate ``1/K``, ``I = (1/K) sum_k I_k`` over the experts' own renders
  (backgrounds included), clamped to [0, 1] as the mixture's blend is: what any ensemble of the
  same experts gets without learning anything;
- **per-pixel oracle**: at every pixel the colour of the expert closest to the ground truth
  (squared error over the channels; ties go to the first expert): the best any per-pixel choice
  of one of these experts can do. It looks at the ground truth, so it is an upper bound for
  reference, never a method;
- **best expert**: the single expert with the highest test PSNR (from the same renders). When the
  experts were fine-tuned with the router, the average and the oracle blend the fine-tuned
  experts (the mixture's own images), but the best expert is the best one *as trained alone*: a
  fine-tuned expert is trained to be blended and scores less on its own, so it would be a weaker
  baseline than the one anybody would use without the mixture.

The router's gain is then ``PSNR(mixture) - PSNR(average)``, and the share of the
average-to-oracle gap it closes ``gain / (PSNR(oracle) - PSNR(average))``.

Where the dataset has region masks (:mod:`moegs_bench.data.regions`; the synthetic suite's label
every test pixel with its motion regime: static, rigid, oscillating, appearance, topology), the
same comparison is made per region: PSNR over the region's pixels of all test views together
(``-10 log10`` of their mean squared error) for each expert, the average, the mixture and the
oracle, and each expert's gate share there (its mean gate over the region's pixels). This is what
the method claims: that different experts win different regimes, and the router knows which.

Gate flicker: between consecutive frames of one test camera, the mean over pixels of
``0.5 * sum_k |G_k(t+1) - G_k(t)|`` (0: the same gates, 1: every pixel changed expert), over all
pixels and over those labelled ``static`` in both frames (where nothing moves, so a changing gate
is the router's own noise). The per-frame PSNR of every model is in ``per_view`` (one row per test
view, i.e. per frame of the test camera).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from moegs_bench.data.scene import Frame, Scene
from moegs_bench.metrics import LpipsMetric, psnr, ssim


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
    lpips: float | None = None  # None: LPIPS not computed (the record's metrics say why)

    def to_dict(self) -> dict[str, float | None]:
        return {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips}


@dataclass(frozen=True)
class EnsembleBaselines:
    """Each expert, the uniform average and the oracle over the test views (means of per-view
    PSNR / SSIM / LPIPS, as the records' metrics are)."""

    experts: dict[str, Score]
    average: Score
    oracle: Score
    per_view: list[dict[str, Any]] = field(default_factory=list)  # key, average_psnr, oracle_psnr, ...
    regions: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> pixels, psnr, gate_share, win_share
    flicker: dict[str, float | None] = field(default_factory=dict)  # "all" / "static" -> mean gate change
    regions_unavailable_reason: str | None = None  # why ``regions`` is empty

    @property
    def best_expert(self) -> tuple[str, Score]:
        return _best(self.experts)

    def record(self, mixture_psnr: float, *, trained_alone: Mapping[str, Score] | None = None) -> dict[str, Any]:
        """The ``baselines`` entry of a mixture's results record. ``trained_alone``: the experts'
        scores as trained on their own, given when the mixture fine-tuned them; the best expert is
        then the best of those, and ``finetuned_experts`` holds what the experts score now."""
        gain = mixture_psnr - self.average.psnr
        gap = self.oracle.psnr - self.average.psnr
        name, best = self.best_expert if trained_alone is None else _best(trained_alone)
        finetuned = {} if trained_alone is None else {
            "finetuned_experts": {eid: score.to_dict() for eid, score in self.experts.items()}}
        return {
            "uniform_average": self.average.to_dict(),
            "best_expert": {"name": name, **best.to_dict()},
            **finetuned,
            "oracle": {**self.oracle.to_dict(), "uses_ground_truth": True},
            "router_gain_over_average_db": gain,
            "mixture_gain_over_best_expert_db": mixture_psnr - best.psnr,
            "gap_closed": gain / gap if gap > 0 else None,
            "per_view": self.per_view,
            "regions": self.regions or None,
            "regions_unavailable_reason": None if self.regions else self.regions_unavailable_reason,
            "gate_flicker": self.flicker,
        }


def _best(scores: Mapping[str, Score]) -> tuple[str, Score]:
    name = max(scores, key=lambda k: scores[k].psnr)
    return name, scores[name]


@torch.no_grad()
def ensemble_baselines(mixture, scene: Scene, frames: Sequence[Frame] | None = None, *,
                       lpips: LpipsMetric | None = None) -> EnsembleBaselines:
    """Each expert, their uniform average and per-pixel oracle on ``frames`` (default: the test
    views), per-region scores where the scene has region masks, and the mixture's gate flicker;
    every expert is rendered on its own (``separate`` mode), whatever mode the mixture blends in.
    LPIPS with ``lpips`` where it is available for these images (else ``None``)."""
    frames = list(scene.test if frames is None else frames)
    use_lpips = lpips is not None and lpips.unavailable_for(*scene.image(frames[0]).shape[:2]) is None
    ids = list(mixture.expert_ids)
    rows = []
    per_region = RegionTally(scene.region_labels, [*ids, "average", "mixture", "oracle"], ids)
    flicker = FlickerTally(scene.region_labels.index("static") if "static" in scene.region_labels else None)
    for frame in frames:
        images = mixture.render_experts(frame.camera, scene.background, mode="separate").images  # [K, H, W, 3]
        gt = scene.image(frame).to(images.device)  # [H, W, 3]
        own = images.clamp(0, 1)
        named = {**{eid: own[k] for k, eid in enumerate(ids)}, "average": average_image(images),
                 "oracle": oracle_image(own, gt)}
        row: dict[str, Any] = {"key": frame.key}
        for name, img in named.items():
            row[f"{name}_psnr"], row[f"{name}_ssim"] = float(psnr(img, gt)), float(ssim(img, gt))
        if use_lpips:  # one image at a time, as evaluate() computes the records' LPIPS
            row.update({f"{name}_lpips": float(lpips(img, gt)) for name, img in named.items()})
        rows.append(row)
        labels = scene.regions(frame) if per_region.labels else None  # [H, W]
        out = mixture(frame.camera, scene.background)  # the blend and the gates [K, H, W]
        flicker.add(frame, out.gates, labels)
        if labels is not None:
            per_region.add(labels, gt, {**named, "mixture": out.image.clamp(0, 1)}, out.gates)

    def score(name: str) -> Score:
        mean = lambda k: sum(r[f"{name}_{k}"] for r in rows) / len(rows)  # noqa: E731
        return Score(mean("psnr"), mean("ssim"), mean("lpips") if use_lpips else None)

    regions = per_region.summary()
    reason = None if regions else (
        "the dataset has no region masks (regions.json, or Dynamic3DGaussians' seg/)" if not per_region.labels
        else "none of the evaluated views has a region mask")
    return EnsembleBaselines({eid: score(eid) for eid in ids}, score("average"), score("oracle"), rows,
                             regions, flicker.summary(), reason)


class FlickerTally:
    """Gate changes between consecutive frames of each test camera (see the module doc)."""

    def __init__(self, static_label: int | None) -> None:
        self.static_label = static_label
        self.last: dict[int, tuple[int, Tensor, Tensor | None]] = {}  # camera id -> frame, gates, static mask
        self.sums = {"all": [0.0, 0], "static": [0.0, 0]}  # change summed over pixels, pixels

    def add(self, frame: Frame, gates: Tensor, labels: Tensor | None) -> None:
        static = labels == self.static_label if labels is not None and self.static_label is not None else None
        cam = frame.camera.camera_id
        before = self.last.get(cam)
        if before is not None and before[0] == frame.frame - 1 and before[1].shape == gates.shape:
            change = 0.5 * (gates - before[1]).abs().sum(dim=0)  # [H, W] in [0, 1]
            self.sums["all"][0] += float(change.sum(dtype=torch.float64))
            self.sums["all"][1] += change.numel()
            if static is not None and before[2] is not None:
                both = static & before[2]
                self.sums["static"][0] += float(change[both].sum(dtype=torch.float64))
                self.sums["static"][1] += int(both.sum())
        self.last[cam] = (frame.frame, gates, static)

    def summary(self) -> dict[str, float | None]:
        return {k: (total / n if n else None) for k, (total, n) in self.sums.items()}


class RegionTally:
    """Squared errors and gates summed per region label over the test views."""

    def __init__(self, labels: Sequence[str], models: Sequence[str], experts: Sequence[str]) -> None:
        self.labels, self.models, self.experts = list(labels), list(models), list(experts)
        n = len(self.labels)
        self.pixels = torch.zeros(n, dtype=torch.float64)  # [L]
        self.sq = {m: torch.zeros(n, dtype=torch.float64) for m in self.models}  # [L] each
        self.gates = torch.zeros(n, len(self.experts), dtype=torch.float64)  # [L, K]
        self.wins = torch.zeros(n, len(self.experts), dtype=torch.float64)  # [L, K] pixels each expert wins

    def add(self, labels: Tensor, gt: Tensor, images: dict[str, Tensor], gates: Tensor) -> None:
        """One view: ``labels`` ``[H, W]``, ``gt`` and ``images`` ``[H, W, 3]``, ``gates`` ``[K, H, W]``."""
        winner = gates.argmax(dim=0)  # [H, W] the expert with the largest gate (the first on a tie)
        for i in range(len(self.labels)):
            mask = labels == i  # [H, W]
            if not bool(mask.any()):
                continue
            self.wins[i] += torch.bincount(winner[mask], minlength=len(self.experts)).to(torch.float64)
            self.pixels[i] += float(mask.sum())
            for m in self.models:
                self.sq[m][i] += float((images[m][mask] - gt[mask]).square().sum(dtype=torch.float64))
            self.gates[i] += gates[:, mask].sum(dim=1, dtype=torch.float64)

    def summary(self) -> dict[str, dict[str, Any]]:
        total = float(self.pixels.sum())
        out = {}
        for i, label in enumerate(self.labels):
            n = float(self.pixels[i])
            if n == 0:
                continue
            out[label] = {
                "pixels": n / total,
                "psnr": {m: _psnr(float(self.sq[m][i]) / (3 * n)) for m in self.models},
                "gate_share": {e: float(self.gates[i, k]) / n for k, e in enumerate(self.experts)},
                "win_share": {e: float(self.wins[i, k]) / n for k, e in enumerate(self.experts)},
            }
        return out


def _psnr(mse: float) -> float | None:
    """PSNR of a mean squared error (None for a perfect match: JSON has no infinity)."""
    return -10 * math.log10(mse) if mse > 0 else None


__all__ = ["EnsembleBaselines", "FlickerTally", "RegionTally", "Score", "average_image", "ensemble_baselines", "oracle_image"]
