"""Training images of a scene, as the training loop reads them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from moegs_bench.data.scene import Frame, Scene


class ImageSource:
    """Training images: held in memory when small (the synthetic suite), else read per step."""

    def __init__(self, scene: Scene, frames: Sequence[Frame], budget_bytes: int = 2 << 30) -> None:
        self.scene = scene
        w, h = scene.resolution
        self.cache: dict[str, Tensor] | None = None
        if len(frames) * w * h * 3 * 4 <= budget_bytes:
            self.cache = {f.key: scene.image(f) for f in frames}

    def get(self, frame: Frame) -> Tensor:
        """The image of ``frame``, ``[H, W, 3]`` float in [0, 1]."""
        if self.cache is not None:
            return self.cache[frame.key]
        return self.scene.image(frame)
