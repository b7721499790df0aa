"""Ex4DGS (Lee et al., "Fully Explicit Dynamic Gaussian Splatting", NeurIPS 2024; upstream
juno181/Ex4DGS).

Explicit motion, no network. Gaussians are static or dynamic (a per-row flag):
- static: ``xyz + xyz_disp * frame / duration`` (a learned linear drift), constant rotation;
- dynamic: positions at keyframes every ``interval`` frames, interpolated by a cubic Hermite
  spline with Catmull-Rom tangents ``m_k = (y_{k+1} - y_{k-1}) / 2`` (keyframe units), rotations
  slerped between neighbouring keyframes, opacity times a flat-top temporal window with Gaussian
  tails (``scene/c_gaussian_model.py``, ``utils/interpolations.py``).
Keyframe ``k`` sits at frame ``k * interval - time_shift`` with ``time_shift = time_pad + interval``.
Training converts static Gaussians to dynamic ones progressively: at each conversion step the
visible static Gaussians whose drift is largest relative to their squared distance from the
cameras (top ``1 - extract_percentile``) become dynamic, their keyframes set from the drift.

Models imported from upstream (``moegs-bench import ex4dgs``, juno181/Ex4DGS @ 7fac649) set three
config fields that reproduce upstream's own numbers: ``num_keyframes`` (upstream's keyframe count,
which its progressive training grows, ``expand_duration`` in ``scene/c_gaussian_model.py``),
``drift_frames`` (upstream divides the static drift by its model ``duration``, which that growth
leaves at ``num_frames + time_shift + 1``: ``get_static_xyz_at_t``) and ``window="upstream"``
(``time_bigaussian`` in ``utils/interpolations.py``: see :func:`temporal_window_upstream`). The
defaults keep this module's own behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertError, ExpertInfo, ParamGroup, SceneInit
from moegs_bench.cameras import Camera
from moegs_bench.geometry import slerp
from moegs_bench.gaussians import GaussianState
from moegs_bench.training.config import TrainConfig

from moegs_bench.experts._profiles import small_from_tiny, tiny_train


@dataclass
class Ex4DGSConfig(ExpertConfig):
    STEP_FIELDS = ("convert_every", "convert_from", "convert_until")

    interval: int = 10  # frames between keyframes (time_interval)
    time_pad: int = 2  # time_shift = time_pad + interval
    var_pad: int = 3  # smallest temporal-window width: var_pad / interval keyframes
    extract_percentile: float = 0.98  # convert the top 2% of visible static Gaussians
    convert_every: int = 400  # progressive_growing_steps
    convert_from: int = 500
    convert_until: int = 30_000
    disp_lr: float = 1e-4
    keyframe_lr: float = 1.6e-4  # x extent, constant (upstream never applies its decay)
    keyframe_rotation_lr: float = 1e-3
    window_center_lr: float = 0.01
    window_var_lr: float = 1e-4
    static_reg: float = 1e-4
    motion_reg: float = 1e-4
    # Imported models (juno181/Ex4DGS scene/c_gaussian_model.py, utils/interpolations.py) set these:
    num_keyframes: int = 0  # 0: ceil((num_frames + 2 time_shift + 1) / interval) + 3; imports: upstream's count
    drift_frames: int = 0  # static drift: disp * frame / drift_frames; 0: num_frames; imports: upstream's duration
    window: Literal["flat_top", "upstream"] = "flat_top"  # "upstream": time_bigaussian (temporal_window_upstream)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=40_000, rotation_lr=1e-5, densify_every=300, densify_until=30_000, prune_opacity=0.01,
        opacity_reset_every=0))

    @property
    def time_shift(self) -> int:
        return self.time_pad + self.interval


def catmull_rom(y0: Tensor, y1: Tensor, y2: Tensor, y3: Tensor, u: float | Tensor) -> Tensor:
    """Cubic Hermite between ``y1`` (u = 0) and ``y2`` (u = 1) with Catmull-Rom tangents
    ``(y2 - y0) / 2`` and ``(y3 - y1) / 2``."""
    u2, u3 = u * u, u * u * u
    h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
    return h00 * y1 + h10 * (y2 - y0) / 2 + h01 * y2 + h11 * (y3 - y1) / 2


def temporal_window(tau: float, center: Tensor, log_var: Tensor, var_min: float) -> Tensor:
    """Flat-top window in keyframe units: 1 between ``center[:, 0]`` and ``center[:, 1]``,
    Gaussian tails of width ``exp(log_var) + var_min / 2.36`` outside (``[N, 2]`` -> ``[N]``)."""
    width = torch.exp(log_var) + var_min / 2.36  # [N, 2]
    before = torch.exp(-((tau - center[:, 0]) / width[:, 0]).square())
    after = torch.exp(-((tau - center[:, 1]) / width[:, 1]).square())
    inside = ((tau > center[:, 0]) & (tau < center[:, 1])).to(center.dtype)
    is_after = (tau >= center[:, 1]).to(center.dtype)
    tail = before * (1 - is_after) + after * is_after
    return inside + (1 - inside) * tail


def temporal_window_upstream(tau: float, center: Tensor, log_var: Tensor, var_min: float) -> Tensor:
    """Upstream's window (``time_bigaussian``, juno181/Ex4DGS ``utils/interpolations.py``), used by
    imported models: 1 wherever ``(c0 - tau)(c1 - tau) < 0`` (either order of the centres), else
    ``exp(-(m / w)^2)`` with ``m = min(tau - c0, tau - c1)`` = ``tau - max(c0, c1)``: both tails are
    measured from the later centre (so the window jumps at the earlier one), the width
    ``exp(log_var[:, 1]) + var_min / 2.36`` once ``tau`` passes either centre, else ``log_var[:, 0]``'s
    (``[N, 2]`` -> ``[N]``)."""
    width = torch.exp(log_var) + var_min / 2.36  # [N, 2]
    m = tau - center.max(dim=1).values  # [N]
    w = torch.where((tau > center).any(dim=1), width[:, 1], width[:, 0])  # [N]
    tail = torch.exp(-(m.square() / w.square()))
    inside = (center[:, 0] - tau) * (center[:, 1] - tau) < 0  # [N]
    return torch.where(inside, torch.ones_like(tail), tail)


WINDOWS = {"flat_top": temporal_window, "upstream": temporal_window_upstream}


#: the ``tiny`` profile (``small`` stretches it: experts/_profiles.py)
_TINY = Ex4DGSConfig(interval=5, convert_every=100, convert_from=150, convert_until=1000,
    extract_percentile=0.9, train=tiny_train())


class Ex4DGS(Expert):
    info = ExpertInfo(
        id="ex4dgs", method="Ex4DGS", paper="Lee et al., NeurIPS 2024", repo="juno181/Ex4DGS",
        licence="see upstream", upstream_commit="7fac649",
        description="explicit static/dynamic split: keyframed positions (Hermite) and rotations (slerp)",
    )
    config_class = Ex4DGSConfig
    profiles = {
        "paper": Ex4DGSConfig(),
        "tiny": _TINY,
        "small": small_from_tiny(_TINY),
    }

    def check_scene(self, init: SceneInit) -> None:
        c = self.config
        need = 2 * c.interval
        if init.num_frames < need:
            raise ExpertError(f"ex4dgs: the scene has {init.num_frames} frame(s); keyframes every "
                              f"{c.interval} frames need at least {need}")
        cover = (c.time_shift + init.num_frames - 1) // c.interval + 3  # keyframes the last frame reads
        if c.num_keyframes and c.num_keyframes < cover:
            raise ExpertError(f"ex4dgs: num_keyframes={c.num_keyframes} does not cover the scene's "
                              f"{init.num_frames} frames (needs at least {cover})")

    def __init__(self, config: Ex4DGSConfig, init: SceneInit) -> None:
        super().__init__(config, init)
        self.add_standard_columns(init)
        n, c = self.num_gaussians, config
        self.duration = init.num_frames
        self.drift_frames = c.drift_frames or init.num_frames
        self.num_keyframes = c.num_keyframes or math.ceil((init.num_frames + 2 * c.time_shift + 1) / c.interval) + 3
        k = self.num_keyframes
        self.table.add("disp", torch.zeros(n, 3))
        self.table.add("keyframes", self.table["means"].detach()[:, None].repeat(1, k, 1), role="position")
        self.table.add("keyframe_rots", self.table["quats"].detach()[:, None].repeat(1, k, 1))
        self.table.add("window_center", self._full_window().repeat(n, 1))
        self.table.add("window_var", torch.zeros(n, 2))
        self.table.add("dynamic", torch.zeros(n), trainable=False)  # 1.0 = dynamic
        cams = init.camera_centres
        centre = (init.bounds[0] + init.bounds[1]) / 2 if cams is None else cams.mean(0)
        self.register_buffer("_centre", centre.float())  # [3]: where drift is measured from

    def _full_window(self) -> Tensor:  # [1, 2]: the whole sequence, in keyframe units
        c = self.config
        return torch.tensor([[c.time_shift / c.interval, (c.time_shift + self.duration - 1) / c.interval]])

    def keyframe_frames(self) -> Tensor:  # [K]: the frame index of each keyframe
        c = self.config
        return torch.arange(self.num_keyframes, dtype=torch.float32) * c.interval - c.time_shift

    def extra_param_groups(self) -> list[ParamGroup]:
        c, tab = self.config, self.table
        return [
            ParamGroup("disp", [tab["disp"]], c.disp_lr),
            ParamGroup("keyframes", [tab["keyframes"]], c.keyframe_lr * self.spatial_lr_scale),
            ParamGroup("keyframe_rots", [tab["keyframe_rots"]], c.keyframe_rotation_lr),
            ParamGroup("window_center", [tab["window_center"]], c.window_center_lr),
            ParamGroup("window_var", [tab["window_var"]], c.window_var_lr),
        ]

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        c, tab = self.config, self.table
        frame = float(when.time if isinstance(when, Camera) else when) * self.duration
        dyn = tab["dynamic"][:, None]  # [N, 1]
        static_pos = tab["means"] + tab["disp"] * (frame / self.drift_frames)
        tp = frame + c.time_shift
        k = min(max(int(tp // c.interval), 1), self.num_keyframes - 3)
        u = (tp - k * c.interval) / c.interval
        kf, kr = tab["keyframes"], tab["keyframe_rots"]
        dyn_pos = catmull_rom(kf[:, k - 1], kf[:, k], kf[:, k + 1], kf[:, k + 2], u)
        dyn_rot = slerp(kr[:, k], kr[:, k + 1], torch.full_like(kr[:, k, 0], u))
        means = static_pos * (1 - dyn) + dyn_pos * dyn
        quats = F.normalize(tab["quats"], dim=-1) * (1 - dyn) + dyn_rot * dyn
        window = WINDOWS[c.window](tp / c.interval, tab["window_center"], tab["window_var"], c.var_pad / c.interval)
        opac = torch.sigmoid(tab["opacities"]) * (1 - dyn[:, 0] + dyn[:, 0] * window)
        return self.make_state(means, quats, torch.exp(tab["scales"]), opac)

    def regularization(self, step: int) -> Tensor | None:
        c, tab = self.config, self.table
        dyn = tab["dynamic"]
        static = 1 - dyn
        loss = tab["means"].new_zeros(())
        if c.static_reg and float(static.sum()) > 0:
            drift = torch.log(tab["disp"].norm(dim=-1) + 1e-3)
            loss = loss + c.static_reg * (drift * static).sum() / static.sum()
        if c.motion_reg and float(dyn.sum()) > 0:
            kf = tab["keyframes"]
            spread = (kf[:, :1] - kf[:, 1:]).norm(dim=-1).mean(-1)
            loss = loss + c.motion_reg * (spread * dyn).sum() / dyn.sum()
        return loss

    def refine(self, step: int, stats, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        c = self.config
        if step < c.convert_from or step > c.convert_until or step % c.convert_every != c.convert_every // 2:
            return
        self.convert_to_dynamic(stats.count > 0 if stats.count.shape[0] == self.num_gaussians else None)

    @torch.no_grad()
    def convert_to_dynamic(self, visible: Tensor | None = None) -> int:
        """Turn the static Gaussians that drift the most into keyframed dynamic ones; returns how
        many. ``visible`` ([N] bool) restricts the candidates to Gaussians seen recently."""
        c, tab = self.config, self.table
        static = tab["dynamic"] == 0
        cand = static if visible is None else static & visible
        if int(cand.sum()) == 0:
            return 0
        drift = tab["disp"].norm(dim=-1)  # [N]
        score = drift / (tab["means"] - self._centre).square().sum(-1).clamp_min(1e-12)
        # upstream: the quantile over all visible static Gaussians, then a minimum drift
        threshold = torch.quantile(score[cand], c.extract_percentile)
        chosen = cand & (score >= threshold) & (score > 0) & (drift > 1e-6 * self.spatial_lr_scale)
        idx = torch.nonzero(chosen).squeeze(1)
        if idx.numel() == 0:
            return 0
        frames = self.keyframe_frames().to(tab["means"])  # [K]
        fraction = frames[None, :, None] / self.drift_frames  # [1, K, 1]
        tab["keyframes"][idx] = tab["means"][idx, None] + tab["disp"][idx, None] * fraction
        tab["keyframe_rots"][idx] = F.normalize(tab["quats"][idx], dim=-1)[:, None]
        tab["window_center"][idx] = self._full_window().to(tab["means"])
        tab["window_var"][idx] = 0.0
        tab["dynamic"][idx] = 1.0
        return int(idx.numel())

    @property
    def num_dynamic(self) -> int:
        return int(self.table["dynamic"].sum())

    def storage_bytes(self) -> int:
        """Static rows store no keyframes or window (upstream keeps them in a separate file)."""
        tab = self.table
        per_row_dynamic = sum(tab[k].shape[1:].numel() * tab[k].element_size()
                              for k in ("keyframes", "keyframe_rots", "window_center", "window_var"))
        return super().storage_bytes() - (self.num_gaussians - self.num_dynamic) * per_row_dynamic
