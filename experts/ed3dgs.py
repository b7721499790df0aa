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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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

from moegs_bench.experts._profiles import tiny_train

_ATTRS = ("pos", "scales", "rotations", "opacity", "rgb")


@dataclass
class ED3DGSConfig(ExpertConfig):
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
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=80_000, position_lr_max_steps=80_000, densify_from=5000, densify_until=80_000,
        densify_grad_threshold=3e-4, opacity_reset_every=0, lambda_dssim=0.0))


class ED3DGS(Expert):
    info = ExpertInfo(
        id="e-d3dgs", method="E-D3DGS", paper="Bae et al., ECCV 2024", repo="JeongminB/E-D3DGS",
        licence="see upstream", upstream_commit="5f5cceb",
        description="per-Gaussian + temporal embeddings decoded by coarse and fine MLPs into offsets",
    )
    config_class = ED3DGSConfig
    profiles = {
        "paper": ED3DGSConfig(),
        "tiny": ED3DGSConfig(
            embedding_dim=16, temporal_dim=32, temporal_rows=15, coarse_rows=5, c2f_iterations=500, width=64,
            deform_from=100, anneal_steps=100, reg_neighbours=8, reg_falloff=500.0,
            # 1,200 steps instead of 80,000: ten times upstream's decoder and embedding rates
            deformation_lr=1.6e-3, deformation_lr_final=1.6e-4, embedding_lr=2.5e-2, train=tiny_train()),
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
            return self.offsets.new_tensor(float(when))
        t = self.offsets.new_tensor(when.time)
        if when.camera_id in self.camera_ids:
            return t + self.offsets[self.camera_ids.index(when.camera_id), 0]
        nz = self.offsets[self.offsets != 0]  # unseen camera: mean of the learned offsets (upstream)
        return t + (nz.mean() if nz.numel() else 0.0)

    def temporal_embedding(self, t: Tensor, rows: int) -> Tensor:  # -> [temporal_dim]
        """The table resampled to ``rows`` rows (bilinear, align_corners), then read at ``t``."""
        table = self.weight
        if rows != table.shape[0]:
            table = F.interpolate(table[None, None], size=(rows, table.shape[1]), mode="bilinear",
                                  align_corners=True)[0, 0]
        return linear_interp_rows(table, t)

    def _decode(self, tag: str, emb_t: Tensor) -> dict[str, Tensor]:
        e = self.table["embedding"]  # [N, E]
        x = torch.cat([emb_t.expand(e.shape[0], -1), e], -1)  # [N, T + E]
        hidden = getattr(self, f"feature_out_{tag}")(x)
        return {a: getattr(self, f"{a}_deform_{tag}")(hidden) for a in _ATTRS}

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        c, tab = self.config, self.table
        t = self._time(when)
        step = int(self.step) if self.training else 10**9  # evaluation: fully ramped in
        ramp = max(c.anneal_steps, 1)
        a = min(max(step / ramp, 0.0), 1.0)
        a_late = min(max((step - c.deform_from) / ramp, 0.0), 1.0)
        fine_rows = int(c.coarse_rows + (c.temporal_rows - c.coarse_rows) * min(step, c.c2f_iterations)
                        / max(c.c2f_iterations, 1))
        means, scales, quats, opac = tab["means"], tab["scales"], tab["quats"], tab["opacities"]
        colors = self.colors()
        for tag, rows in (("c", c.coarse_rows), ("f", fine_rows)):
            d = self._decode(tag, self.temporal_embedding(t, rows))
            means = means + d["pos"] * a
            scales = scales + d["scales"] * a * a_late
            quats = quats + d["rotations"] * a
            opac = opac + d["opacity"][:, 0] * a * a_late
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
