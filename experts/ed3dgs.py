"""E-D3DGS (Bae et al., "Per-Gaussian Embedding-Based Deformation for Deformable 3D Gaussian
Splatting", ECCV 2024; upstream JeongminB/E-D3DGS).

Every Gaussian has a learnable embedding (zero-initialised); one shared table of temporal
embeddings is resampled to ``n`` rows and linearly interpolated at the frame's time (plus a
learned per-camera time offset). A coarse decoder (``n = coarse_rows``) and a fine decoder
(``n`` growing from ``coarse_rows`` to ``temporal_rows`` over ``c2f_iterations``) each map
``[temporal embedding, Gaussian embedding]`` to offsets of position, log-scale, raw quaternion,
opacity logit and SH; the final value is base + coarse + fine, with upstream's annealing
(``scene/deformation.py``). Module names follow upstream's ``deform_network`` state dict:
``weight``, ``offsets``, ``feature_out_{c,f}.0``, ``{pos,scales,rotations,opacity,rgb}_deform_{c,f}.{1,3}``.

Models imported from upstream (``moegs-bench import e-d3dgs``, :mod:`moegs_bench.interop.ed3dgs`)
switch on upstream's own behaviour where ours differs, through config fields whose defaults keep
ours: the table read with ``grid_sample(padding_mode='reflection', align_corners=True)``
(``temporal_padding``), evaluation at the saved iteration's annealing and row count
(``eval_step``; upstream ``render.py`` passes ``iter=scene.loaded_iter``), a camera-less time read
at the mean learned offset (``bare_time_offset``), and upstream's ``ModelHiddenParams`` switches
(``anneal``, ``coarse_fixed_rows``, ``c2f``, ``deform_{scales,rotations,opacity,colors}``;
``arguments/__init__.py``). Upstream: JeongminB/E-D3DGS at ``a68543e``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo, ParamGroup, SceneInit
from moegs_bench.cameras import Camera
from moegs_bench.deform import head, linear_interp_rows, trunk
from moegs_bench.geometry import knn
from moegs_bench.gaussians import GaussianState
from moegs_bench.render.sh import num_sh_bases
from moegs_bench.training.config import TrainConfig

from moegs_bench.experts._profiles import small_from_tiny, tiny_train

_ATTRS = ("pos", "scales", "rotations", "opacity", "rgb")


@dataclass
class ED3DGSConfig(ExpertConfig):
    """Settings of :class:`ED3DGS`. The fields from ``temporal_padding`` on switch on upstream's own
    behaviour (JeongminB/E-D3DGS ``scene/deformation.py``, ``render.py``, ``arguments/__init__.py``)
    for models imported with ``moegs-bench import e-d3dgs``; their defaults keep ours."""

    STEP_FIELDS = ("c2f_iterations", "deform_from", "anneal_steps")

    embedding_dim: int = 32  # per-Gaussian
    temporal_dim: int = 256
    temporal_rows: int = 150  # max_embeddings
    coarse_rows: int = 30  # min_embeddings
    c2f_iterations: int = 10_000  # fine rows grow from coarse_rows to temporal_rows over these steps
    depth: int = 1
    width: int = 128
    deform_from: int = 5000  # scale / opacity / colour offsets ramp in over [deform_from, +anneal_steps]
    anneal_steps: int = 1000  # position / rotation offsets ramp in over [0, anneal_steps]
    deformation_lr: float = 1.6e-4  # x extent, decays to deformation_lr_final
    deformation_lr_final: float = 1.6e-5
    offsets_lr: float = 2e-5
    embedding_lr: float = 2.5e-3
    reg_coef: float = 1.0  # embedding smoothness over k nearest neighbours
    reg_neighbours: int = 20
    reg_falloff: float = 2000.0  # w = exp(-falloff * d^2)
    opacity_l1: float = 1e-4  # + opacity_l1 * sigmoid(mean opacity logit)
    # --- upstream behaviours (imported models set them; defaults keep ours). Upstream files are
    # JeongminB/E-D3DGS a68543e: scene/deformation.py, arguments/__init__.py, render.py.
    # "reflection": the table is read as upstream's get_temporal_embed does, grid_sample(bilinear,
    # align_corners=True, padding_mode='reflection'): t + offset outside [0, 1] is mirrored back;
    # "clamp" (ours): clamped to [0, 1]. The two agree inside [0, 1].
    temporal_padding: Literal["clamp", "reflection"] = "clamp"
    # The step annealing and coarse-to-fine rows are evaluated at in eval mode; None (ours): fully
    # ramped in. Upstream renders a saved model at its iteration (render.py: iter=loaded_iter).
    eval_step: int | None = None
    # True: a bare time (no camera) is read at t + the mean non-zero offset, as upstream renders
    # every view of render.py (cam_no=None); False (ours): at t.
    bare_time_offset: bool = False
    anneal: bool = True  # False: no ramps (upstream use_anneal=False)
    # False: the coarse decoder reads the fine decoder's row count (upstream
    # use_coarse_temporal_embedding=False); True: always coarse_rows.
    coarse_fixed_rows: bool = True
    c2f: bool = True  # False: the fine rows are temporal_rows from the start (upstream no_c2f_temporal_embedding)
    deform_scales: bool = True  # False: upstream no_ds
    deform_rotations: bool = True  # False: upstream no_dr
    deform_opacity: bool = True  # False: upstream no_do
    deform_colors: bool = True  # False: upstream no_dc
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=80_000, position_lr_max_steps=80_000, densify_from=5000, densify_until=80_000,
        densify_grad_threshold=3e-4, opacity_reset_every=0, lambda_dssim=0.0))


#: the ``tiny`` profile (``small`` stretches it: experts/_profiles.py)
_TINY = ED3DGSConfig(
    embedding_dim=16, temporal_dim=32, temporal_rows=15, coarse_rows=5, c2f_iterations=500, width=64,
    deform_from=100, anneal_steps=100, reg_neighbours=8, reg_falloff=500.0,
    # 1,200 steps instead of 80,000: ten times upstream's decoder and embedding rates
    deformation_lr=1.6e-3, deformation_lr_final=1.6e-4, embedding_lr=2.5e-2, train=tiny_train())


class ED3DGS(Expert):
    info = ExpertInfo(
        id="e-d3dgs", method="E-D3DGS", paper="Bae et al., ECCV 2024", repo="JeongminB/E-D3DGS",
        licence="see upstream", upstream_commit="a68543e (scene/deformation.py)",
        description="per-Gaussian + temporal embeddings decoded by coarse and fine MLPs into offsets",
    )
    config_class = ED3DGSConfig
    profiles = {
        "paper": ED3DGSConfig(),
        "tiny": _TINY,
        "small": small_from_tiny(_TINY),
    }
    min_frames = 2

    def __init__(self, config: ED3DGSConfig, init: SceneInit) -> None:
        super().__init__(config, init)
        self.add_standard_columns(init)
        self.table.add("embedding", torch.zeros(self.num_gaussians, config.embedding_dim))
        c = config
        self.weight = nn.Parameter(torch.randn(c.temporal_rows, c.temporal_dim) * (0.01 / math.sqrt(c.temporal_dim)))
        self.camera_ids = list(init.train_camera_ids)
        self.offsets = nn.Parameter(torch.zeros(max(len(self.camera_ids), 1), 1))
        k = num_sh_bases(self.max_sh_degree) * 3
        for tag in ("c", "f"):
            setattr(self, f"feature_out_{tag}", trunk(c.temporal_dim + c.embedding_dim, c.width, c.depth))
            for attr, out in zip(_ATTRS, (3, 3, 4, 1, k)):
                setattr(self, f"{attr}_deform_{tag}", head(c.width, out))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._neighbours: tuple[int, Tensor, Tensor] | None = None  # (table version, idx [N, k], w [N, k])

    def on_step(self, step: int) -> None:
        self.step.fill_(step)

    def extra_param_groups(self) -> list[ParamGroup]:
        c, s = self.config, self.spatial_lr_scale
        nets = [p for n, p in self.named_parameters() if not n.startswith("table.") and n != "offsets"]
        return [
            ParamGroup("deformation", nets, c.deformation_lr * s, c.deformation_lr_final * s,
                       c.train.position_lr_max_steps),
            ParamGroup("offsets", [self.offsets], c.offsets_lr),
            ParamGroup("embedding", [self.table["embedding"]], c.embedding_lr),
        ]

    def _time(self, when: Camera | float) -> Tensor:
        if not isinstance(when, Camera):
            t = self.offsets.new_tensor(float(when))
            return t + self._mean_offset() if self.config.bare_time_offset else t
        t = self.offsets.new_tensor(when.time)
        if when.camera_id in self.camera_ids:
            return t + self.offsets[self.camera_ids.index(when.camera_id), 0]
        return t + self._mean_offset()  # unseen camera: as upstream's cam_no=None

    def _mean_offset(self) -> Tensor | float:
        """The mean of the non-zero learned offsets, 0 without any (upstream ``deform_network.forward``)."""
        nz = self.offsets[self.offsets != 0]
        return nz.mean() if nz.numel() else 0.0

    def temporal_embedding(self, t: Tensor, rows: int) -> Tensor:  # -> [temporal_dim]
        """The table resampled to ``rows`` rows (bilinear, align_corners), then read at ``t``
        (clamped, or mirrored with ``temporal_padding="reflection"``)."""
        table = self.weight
        if rows != table.shape[0]:
            table = F.interpolate(table[None, None], size=(rows, table.shape[1]), mode="bilinear",
                                  align_corners=True)[0, 0]
        if self.config.temporal_padding == "reflection":
            return reflected_interp_rows(table, t)
        return linear_interp_rows(table, t)

    def schedule(self, step: int) -> tuple[float, float, int, int]:
        """At training step ``step``: the ramp of position / rotation offsets, the ramp of scale /
        opacity / colour offsets, and the coarse and fine decoders' table rows."""
        c = self.config
        ramp = max(c.anneal_steps, 1)
        a = min(max(step / ramp, 0.0), 1.0) if c.anneal else 1.0
        a_late = min(max((step - c.deform_from) / ramp, 0.0), 1.0) if c.anneal else 1.0
        fine_rows = c.temporal_rows
        if c.c2f:
            fine_rows = int(c.coarse_rows + (c.temporal_rows - c.coarse_rows) * min(step, c.c2f_iterations)
                            / max(c.c2f_iterations, 1))
        return a, a_late, c.coarse_rows if c.coarse_fixed_rows else fine_rows, fine_rows

    def _decode(self, tag: str, emb_t: Tensor) -> dict[str, Tensor]:
        e = self.table["embedding"]  # [N, E]
        x = torch.cat([emb_t.expand(e.shape[0], -1), e], -1)  # [N, T + E]
        hidden = getattr(self, f"feature_out_{tag}")(x)
        return {a: getattr(self, f"{a}_deform_{tag}")(hidden) for a in _ATTRS}

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        c, tab = self.config, self.table
        t = self._time(when)
        if self.training:
            step = int(self.step)
        else:  # evaluation: fully ramped in, or at eval_step (upstream: the saved iteration)
            step = 10**9 if c.eval_step is None else c.eval_step
        a, a_late, coarse_rows, fine_rows = self.schedule(step)
        means, scales, quats, opac = tab["means"], tab["scales"], tab["quats"], tab["opacities"]
        colors = self.colors()
        for tag, rows in (("c", coarse_rows), ("f", fine_rows)):
            d = self._decode(tag, self.temporal_embedding(t, rows))
            means = means + d["pos"] * a
            if c.deform_scales:
                scales = scales + d["scales"] * a * a_late
            if c.deform_rotations:
                quats = quats + d["rotations"] * a
            if c.deform_opacity:
                opac = opac + d["opacity"][:, 0] * a * a_late
            if c.deform_colors:
                colors = colors + d["rgb"].view(colors.shape[0], -1, 3)[:, : colors.shape[1]] * a_late
        return self.activated(means, scales, quats, opac, colors)

    def regularization(self, step: int) -> Tensor | None:
        c, tab = self.config, self.table
        loss = c.opacity_l1 * torch.sigmoid(tab["opacities"].mean())
        if c.reg_coef > 0 and c.reg_neighbours > 0 and self.num_gaussians > 1:
            if self._neighbours is None or self._neighbours[0] != tab.version:  # rows changed: recompute
                d2, idx = knn(tab["means"].detach(), c.reg_neighbours)
                self._neighbours = (tab.version, idx, torch.exp(-c.reg_falloff * d2))
            _, idx, w = self._neighbours
            e = tab["embedding"]
            # index_select, not e[idx]: the backward of advanced indexing (index_put_ with
            # accumulate) sums in a thread-dependent order on CPU; index_add_ does not
            near = e.index_select(0, idx.reshape(-1)).view(*idx.shape, e.shape[1])  # [N, k, E]
            diff = (e[:, None, :] - near).square().sum(-1)  # [N, k]
            loss = loss + c.reg_coef * torch.sqrt(w * diff + 1e-20).mean()
        return loss


def reflected_interp_rows(table: Tensor, t: Tensor | float) -> Tensor:  # [R, D] -> [D]
    """Row-wise linear interpolation of ``table`` at ``t`` (0: first row, 1: last) with ``t``
    outside [0, 1] mirrored at the ends, as upstream's ``get_temporal_embed`` reads its table:
    ``F.grid_sample(..., mode='bilinear', padding_mode='reflection', align_corners=True)`` at
    normalised ``2 t - 1`` (E-D3DGS ``scene/deformation.py``). The D columns are read as channels."""
    y = torch.as_tensor(t, dtype=table.dtype, device=table.device).reshape(())
    grid = torch.stack([torch.zeros_like(y), (y - 0.5) * 2]).view(1, 1, 1, 2)  # (x, y): column 0, row t
    image = table.t()[None, :, :, None]  # [1, D, R, 1]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=True).view(-1)
