"""Test-view evaluation shared by experts and mixtures: metrics, renders on disk, render speed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import imageio.v3 as iio
import torch
from torch import Tensor

from moegs_bench.data.scene import Frame, Scene
from moegs_bench.io import atomic_write, image_to_uint8
from moegs_bench.metrics import LpipsMetric, measure_fps, psnr, ssim
from moegs_bench.results import Metrics, Timing

#: Renders one frame: ``[H, W, 3]`` in [0, 1].
RenderFn = Callable[[Frame], Tensor]


@dataclass
class Evaluation:
    metrics: Metrics
    fps: float
    ms_per_frame: float

    def timing(self, train_seconds: float) -> Timing:
        return Timing(train_seconds=train_seconds, render_fps=self.fps, render_ms_per_frame=self.ms_per_frame)


@torch.no_grad()
def evaluate(render: RenderFn, scene: Scene, frames: Sequence[Frame] | None = None, *,
             out_dir: Path | None = None, lpips: LpipsMetric | None = None,
             fps_warmup: int = 1, fps_repeats: int = 3) -> Evaluation:
    """PSNR / SSIM / LPIPS (``lpips``, default AlexNet, when available) per test view and their
    means, the renders written as ``out_dir/<key>.png``, and the median render FPS over the test
    views after warm-up."""
    frames = list(scene.test if frames is None else frames)
    if not frames:
        raise ValueError(f"scene {scene.name} has no test views to evaluate")
    lpips = lpips if lpips is not None else LpipsMetric()
    no_lpips = lpips.unavailable_for(*scene.image(frames[0]).shape[:2])  # None: LPIPS is computed
    per_view = []
    for frame in frames:
        img = render(frame).clamp(0, 1)  # [H, W, 3]
        gt = scene.image(frame).to(img.device)  # [H, W, 3]
        row = {"key": frame.key, "psnr": float(psnr(img, gt)), "ssim": float(ssim(img, gt)),
               "lpips": None if no_lpips else float(lpips(img, gt))}
        per_view.append(row)
        if out_dir is not None:
            path = out_dir / (frame.key.replace("/", "__") + ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = image_to_uint8(img)
            atomic_write(path, lambda p: iio.imwrite(p, pixels, extension=".png"))
    mean = lambda k: sum(r[k] for r in per_view) / len(per_view)  # noqa: E731
    metrics = Metrics(psnr=mean("psnr"), ssim=mean("ssim"), lpips=None if no_lpips else mean("lpips"),
                      lpips_unavailable_reason=no_lpips, lpips_metric=None if no_lpips else lpips.metric_id,
                      per_view=per_view)
    speed = measure_fps(lambda i: render(frames[i]), len(frames), warmup=fps_warmup, repeats=fps_repeats)
    return Evaluation(metrics=metrics, fps=speed.fps, ms_per_frame=speed.median_ms_per_frame)


@torch.no_grad()
def with_lpips(metrics: Metrics, render: RenderFn, scene: Scene, lpips: LpipsMetric,
               frames: Sequence[Frame] | None = None) -> Metrics:
    """``metrics`` (of ``render`` on the test views) with the LPIPS of ``lpips``: unchanged when they
    already hold it, else with every view rendered again and LPIPS computed (or made unavailable with
    ``lpips``'s reason). A run whose experts were evaluated earlier, under another ``--lpips`` or
    before the weights were installed, reports one LPIPS for every model this way."""
    frames = list(scene.test if frames is None else frames)
    no_lpips = lpips.unavailable_for(*scene.image(frames[0]).shape[:2])
    if metrics.lpips_metric == lpips.metric_id and (no_lpips is None) == (metrics.lpips is not None):
        return metrics
    keys = [row["key"] for row in metrics.per_view]
    if keys != [f.key for f in frames]:
        raise ValueError(f"with_lpips: the metrics are of views {keys}, not of {[f.key for f in frames]}")
    values = [None if no_lpips else float(lpips(render(f).clamp(0, 1), scene.image(f))) for f in frames]
    per_view = [{**row, "lpips": v} for row, v in zip(metrics.per_view, values)]
    return replace(metrics, lpips=None if no_lpips else sum(values) / len(values),  # type: ignore[arg-type]
                   lpips_unavailable_reason=no_lpips, lpips_metric=None if no_lpips else lpips.metric_id,
                   per_view=per_view)
