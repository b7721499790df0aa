"""The embedded synthetic multi-view dynamic suite (used when no dataset is given).

Analytic ray-cast ground truth (:mod:`.raycast`), named scenes mixing motion regimes
(:mod:`.scenes`) and the writer / cache / contact sheet (:mod:`.generate`).
"""

from moegs_bench.data.synthetic.generate import cache_key, cameras, contact_sheet, ensure, generate, render_frames, sample_points
from moegs_bench.data.synthetic.scenes import DEFAULT_SCENE, REGIMES, SCENES, SceneSpec

__all__ = [
    "DEFAULT_SCENE", "REGIMES", "SCENES", "SceneSpec", "cache_key", "cameras", "contact_sheet", "ensure", "generate",
    "render_frames", "sample_points",
]  # fmt: skip
