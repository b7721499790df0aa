"""4DGaussians (Wu et al., "4D Gaussian Splatting for Real-Time Dynamic Scene Rendering", CVPR
2024; upstream hustvl/4DGaussians, Apache-2.0).

Canonical 3D Gaussians deformed by a multi-resolution HexPlane feature field over (x, y, z, t):
six 2D planes, features multiplied across planes and concatenated across resolutions, decoded by
a linear trunk and five heads into offsets of position, log-scale, raw quaternion, opacity logit
and SH coefficients, all added *before* activation (``scene/deformation.py``). The first
``coarse_iterations`` steps train the canonical Gaussians without deformation.

Models trained with upstream's code are imported by :mod:`moegs_bench.interop.fourdgaussians`
(``moegs-bench import 4dgaussians``). Upstream switches some heads off (``ModelHiddenParams``'
``no_dx/no_ds/no_dr/no_do/no_dshs`` in ``arguments/__init__.py``; its defaults leave opacity and SH
undeformed, ``arguments/dynerf/default.py`` deforms all five), always sizes the SH head for degree 3
(``16*3`` outputs, ``scene/deformation.py:65``) and reads time as its data set reader gives it; the
config fields ``deform_*``, ``sh_head_coeffs`` and ``time_scale`` reproduce that for imported
models. Their defaults are this expert's own behaviour (every head on, an SH head of
``train.sh_degree``, time as the scene gives it).

Module names follow upstream's ``deform_network`` so that ``deformation.pth`` keys map one to one:
``deformation_net.grid.grids.{scale}.{plane}``, ``deformation_net.grid.aabb``,
``deformation_net.feature_out.0``, ``deformation_net.{pos,scales,rotations,opacity,shs}_deform.{1,3}``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo, ParamGroup, SceneInit
from moegs_bench.cameras import Camera
from moegs_bench.deform import head, trunk, xavier_linear_weights
from moegs_bench.gaussians import GaussianState
from moegs_bench.render.sh import num_sh_bases
from moegs_bench.training.config import TrainConfig

from moegs_bench.experts._profiles import small_from_tiny, tiny_train

#: The six planes: pairs of (x, y, z, t) in itertools.combinations order; 2, 4, 5 hold time.
PLANES: tuple[tuple[int, int], ...] = tuple(itertools.combinations(range(4), 2))
SPACE_PLANES, TIME_PLANES = (0, 1, 3), (2, 4, 5)


@dataclass
class FourDGSConfig(ExpertConfig):
    STEP_FIELDS = ("coarse_iterations",)

    resolution: tuple[int, int, int, int] = (64, 64, 64, 150)  # x, y, z, t of the base scale
    features: int = 16  # output_coordinate_dim: channels per plane and scale
    multires: tuple[int, ...] = (1, 2)  # spatial resolution multipliers (time is not scaled)
    depth: int = 0  # defor_depth (0 -> a single Linear trunk, as upstream)
    width: int = 128  # net_width
    plane_tv_weight: float = 2e-4
    time_smoothness_weight: float = 1e-3
    l1_time_planes: float = 1e-4
    coarse_iterations: int = 3000
    deformation_lr: float = 1.6e-4  # x extent, decays to deformation_lr_final
    deformation_lr_final: float = 1.6e-5
    grid_lr: float = 1.6e-3  # x extent, decays to grid_lr_final
    grid_lr_final: float = 1.6e-4
    # Upstream switches, set by imported models (hustvl/4DGaussians scene/deformation.py:106-146,
    # arguments/__init__.py ModelHiddenParams); the defaults keep this expert's own behaviour.
    deform_means: bool = True  # add the position head's offset (upstream: not no_dx)
    deform_scales: bool = True  # add the log-scale offset (upstream: not no_ds)
    deform_quats: bool = True  # add the raw-quaternion offset (upstream: not no_dr)
    deform_opacity: bool = True  # add the opacity-logit offset (upstream: not no_do; its default skips it)
    deform_sh: bool = True  # add the SH offsets (upstream: not no_dshs; its default skips them)
    sh_head_coeffs: int = 0  # SH coefficients the colour head outputs; 0: those of train.sh_degree (upstream: 16)
    time_scale: float = 1.0  # the field's time = time_scale x the scene's time (upstream reader's clock)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=17_000, batch_size=4, position_lr_max_steps=20_000, lambda_dssim=0.0,
        densify_until=13_000, opacity_reset_every=0, max_gaussians=360_000))


def normalize_aabb(pts: Tensor, aabb: Tensor) -> Tensor:
    """Upstream's ``normalize_aabb``: ``aabb = [max, min]`` maps max -> -1 and min -> +1."""
    return (pts - aabb[0]) * (2.0 / (aabb[1] - aabb[0])) - 1.0


class HexPlaneField(nn.Module):
    """Multi-resolution HexPlane: per scale six planes ``[1, C, res_j, res_i]``; space planes start
    uniform in [0.1, 0.5], time planes at 1 (so the field starts static)."""

    def __init__(self, resolution: tuple[int, ...], features: int, multires: tuple[int, ...],
                 aabb_max: Tensor, aabb_min: Tensor) -> None:
        super().__init__()
        self.aabb = nn.Parameter(torch.stack([aabb_max, aabb_min]).float(), requires_grad=False)  # [2, 3]
        self.grids = nn.ModuleList()
        for r in multires:
            reso = [v * r for v in resolution[:3]] + list(resolution[3:])
            planes = nn.ParameterList()
            for i, j in PLANES:
                p = torch.empty(1, features, reso[j], reso[i])
                if 3 in (i, j):
                    nn.init.ones_(p)
                else:
                    nn.init.uniform_(p, 0.1, 0.5)
                planes.append(nn.Parameter(p))
            self.grids.append(planes)
        self.out_dim = features * len(multires)

    def forward(self, xyz: Tensor, t: Tensor) -> Tensor:  # [N, 3], [N, 1] -> [N, out_dim]
        pts = torch.cat([normalize_aabb(xyz, self.aabb), t], -1)  # [N, 4]; t enters raw, as upstream
        out = []
        for planes in self.grids:
            feat = None
            for (i, j), plane in zip(PLANES, planes):
                coords = pts[:, [i, j]].view(1, -1, 1, 2)  # grid_sample: x -> coord i (W), y -> coord j (H)
                f = F.grid_sample(plane, coords, mode="bilinear", padding_mode="border", align_corners=True)
                f = f.view(plane.shape[1], -1).t()  # [N, C]
                feat = f if feat is None else feat * f
            out.append(feat)
        return torch.cat(out, -1)

    def regularization(self, cfg: FourDGSConfig) -> Tensor:
        """Upstream's ``compute_regulation``: second differences along dim -2 of the space planes
        (weight plane_tv) and time planes (time_smoothness), and mean |1 - time plane| (l1)."""
        smooth = lambda g: (g[..., 2:, :] - 2 * g[..., 1:-1, :] + g[..., :-2, :]).square().mean()  # noqa: E731
        space = sum(smooth(planes[p]) for planes in self.grids for p in SPACE_PLANES)
        time = sum(smooth(planes[p]) for planes in self.grids for p in TIME_PLANES)
        l1 = sum((1 - planes[p]).abs().mean() for planes in self.grids for p in TIME_PLANES)
        return cfg.plane_tv_weight * space + cfg.time_smoothness_weight * time + cfg.l1_time_planes * l1


class DeformationNet(nn.Module):
    def __init__(self, cfg: FourDGSConfig, aabb_max: Tensor, aabb_min: Tensor, sh_coeffs: int) -> None:
        """``sh_coeffs``: the SH coefficients the colour head outputs (3 values each)."""
        super().__init__()
        self.grid = HexPlaneField(cfg.resolution, cfg.features, cfg.multires, aabb_max, aabb_min)
        self.feature_out = trunk(self.grid.out_dim, cfg.width, cfg.depth)
        self.pos_deform = head(cfg.width, 3)
        self.scales_deform = head(cfg.width, 3)
        self.rotations_deform = head(cfg.width, 4)
        self.opacity_deform = head(cfg.width, 1)
        self.shs_deform = head(cfg.width, sh_coeffs * 3)

    def forward(self, xyz: Tensor, t: Tensor) -> dict[str, Tensor]:
        hidden = self.feature_out(self.grid(xyz, t))  # [N, W]
        return {
            "means": self.pos_deform(hidden), "scales": self.scales_deform(hidden),
            "quats": self.rotations_deform(hidden), "opacities": self.opacity_deform(hidden)[:, 0],
            "sh": self.shs_deform(hidden).view(xyz.shape[0], -1, 3),
        }


#: the ``tiny`` profile (``small`` stretches it: experts/_profiles.py)
_TINY = FourDGSConfig(
    resolution=(16, 16, 16, 32), features=8, multires=(1, 2), width=64, coarse_iterations=200,
    train=tiny_train(lambda_dssim=0.2))


class FourDGaussians(Expert):
    info = ExpertInfo(
        id="4dgs", method="4DGaussians", paper="Wu et al., CVPR 2024", repo="hustvl/4DGaussians",
        licence="Apache-2.0", upstream_commit="843d5ac6 (arguments/dynerf/default.py)",
        description="HexPlane feature field over (x,y,z,t) + MLP heads -> offsets of canonical Gaussians",
    )
    config_class = FourDGSConfig
    profiles = {
        "paper": FourDGSConfig(),
        "tiny": _TINY,
        "small": small_from_tiny(_TINY),
    }
    min_frames = 2

    def __init__(self, config: FourDGSConfig, init: SceneInit) -> None:
        super().__init__(config, init)
        self.add_standard_columns(init)
        lo, hi = init.bounds
        self.deformation_net = DeformationNet(config, hi, lo, config.sh_head_coeffs or num_sh_bases(self.max_sh_degree))
        xavier_linear_weights(self.deformation_net)
        self.register_buffer("deform_on", torch.ones((), dtype=torch.bool))

    def on_step(self, step: int) -> None:
        self.deform_on.fill_(step > self.config.coarse_iterations)

    def extra_param_groups(self) -> list[ParamGroup]:
        c, s, steps = self.config, self.spatial_lr_scale, self.config.train.position_lr_max_steps
        net = [p for n, p in self.deformation_net.named_parameters() if "grid" not in n]
        grid = [p for n, p in self.deformation_net.named_parameters() if "grid" in n and p.requires_grad]
        return [
            ParamGroup("deformation", net, c.deformation_lr * s, c.deformation_lr_final * s, steps),
            ParamGroup("grid", grid, c.grid_lr * s, c.grid_lr_final * s, steps),
        ]

    def regularization(self, step: int) -> Tensor | None:
        if not bool(self.deform_on) or self.config.time_smoothness_weight == 0:
            return None  # upstream regularises in the fine stage only, when time smoothing is on
        return self.deformation_net.grid.regularization(self.config)

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        t = float(when.time if isinstance(when, Camera) else when)
        tab = self.table
        means, scales, quats, opac = tab["means"], tab["scales"], tab["quats"], tab["opacities"]
        colors = self.colors()
        if bool(self.deform_on):
            c = self.config
            d = self.deformation_net(means, means.new_full((means.shape[0], 1), t * c.time_scale))
            means = means + d["means"] if c.deform_means else means
            scales = scales + d["scales"] if c.deform_scales else scales
            quats = quats + d["quats"] if c.deform_quats else quats
            opac = opac + d["opacities"] if c.deform_opacity else opac
            colors = colors + d["sh"][:, : colors.shape[1]] if c.deform_sh else colors
        return self.activated(means, scales, quats, opac, colors)
