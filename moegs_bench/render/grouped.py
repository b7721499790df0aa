"""Several Gaussian sets rendered from one camera in one call: ``rasterize_grouped``.

Each :class:`SplatGroup` (e.g. one MoE-GS expert) carries its geometry and plain per-Gaussian
features (colours, router values, one-hot slots, ...). By default every group composites on its
own (its own transmittance) and the call returns one image per group; the PyTorch backend does
that in *one* projection, sort and pass over the union (``_torch_raster``:
``rasterize_to_pixels_grouped``). ``shared=True`` composites the union as one set instead (one
transmittance: other groups' Gaussians occlude), one image.

``geo_channels = c`` lets only the first ``c`` feature channels (and the alphas) send gradients to
the geometry; the others composite the geometry as if it were detached (router values must not
move the experts, MoE-GS arXiv 2510.19210 §3.2). The backend choice and gsplat's limits live
here: gsplat (CUDA) has no per-group transmittance kernel, so it renders the groups one by one,
and it cannot stop gradients per channel, so when the geometry needs gradients the channels past
``geo_channels`` get a second pass over detached geometry. ``meta`` says what ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from moegs_bench._checks import InputError, check_gaussian_values, check_tensor
from moegs_bench.render._inputs import check_geometry, check_numbers
from moegs_bench.render._projection import project_gaussians
from moegs_bench.render._torch_raster import rasterize_to_pixels_grouped
from moegs_bench.render.backends import BackendName, resolve_backend

if TYPE_CHECKING:
    from moegs_bench.cameras import Camera
    from moegs_bench.gaussians import GaussianState

Geometry = tuple[Tensor, Tensor, Tensor, Tensor]  # means [N, 3], quats [N, 4], scales [N, 3], opacities [N]


@dataclass(frozen=True, eq=False)
class SplatGroup:
    """One Gaussian set with plain features, composited on its own by :func:`rasterize_grouped`."""

    means: Tensor  # [N, 3] world
    quats: Tensor  # [N, 4] (w, x, y, z), any norm
    scales: Tensor  # [N, 3] linear, > 0
    opacities: Tensor  # [N] in [0, 1]
    features: Tensor  # [N, D] plain features (no SH: see moegs_bench.render.sh.colors_at)
    name: str = ""  # names the group in error messages (default ``groups[i]``)

    @classmethod
    def of(cls, state: GaussianState, features: Tensor, name: str = "", *, detach: bool = False) -> SplatGroup:
        """``state``'s geometry (detached with ``detach``) carrying ``features [N, D]``."""
        geo = (state.means, state.quats, state.scales, state.opacities)
        if detach:
            geo = tuple(t.detach() for t in geo)  # type: ignore[assignment]
        return cls(*geo, features, name)

    @property
    def geometry(self) -> Geometry:
        return self.means, self.quats, self.scales, self.opacities


def _validate(groups: Sequence[SplatGroup], camera: Any, background: Tensor | None, geo_channels: int | None,
              eps2d: float) -> int:
    """Every group's tensors (named), one feature width and dtype, the camera and options; returns D."""
    from moegs_bench.cameras import Camera

    if len(groups) < 1:
        raise InputError("rasterize_grouped: no groups given")
    D, first = None, None
    for i, g in enumerate(groups):
        if not isinstance(g, SplatGroup):
            raise InputError(f"groups[{i}]: expected a SplatGroup, got {type(g).__name__}")
        prefix = f"{g.name or f'groups[{i}]'}: "
        n = check_geometry(prefix, g.means, g.quats, g.scales, g.opacities)
        check_tensor(f"{prefix}features", g.features, (n, None))
        check_gaussian_values(prefix, g.quats, g.scales, g.opacities)
        if first is None:
            D, first = g.features.shape[1], g
        elif g.features.shape[1] != D:
            raise InputError(f"{prefix}features: {g.features.shape[1]} channels, the first group has {D}")
        for name, t in zip(("means", "quats", "scales", "opacities", "features"), (*g.geometry, g.features)):
            if t.dtype != first.means.dtype or t.device != first.means.device:
                raise InputError(f"{prefix}{name}: {t.dtype} on {t.device}, the first group's means are "
                                 f"{first.means.dtype} on {first.means.device}; use one dtype and device")
    if not isinstance(camera, Camera):
        raise InputError(f"camera: expected a moegs_bench.cameras.Camera, got {type(camera).__name__}")
    if background is not None:
        check_tensor("background", background, (D,))
    if geo_channels is not None and (isinstance(geo_channels, bool) or not isinstance(geo_channels, int)
                                     or not 0 <= geo_channels <= D):
        raise InputError(f"geo_channels: expected None or an int in [0, {D}], got {geo_channels!r}")
    check_numbers(camera.near, camera.far, eps2d)
    return D  # type: ignore[return-value]


def rasterize_grouped(
    groups: Sequence[SplatGroup],
    camera: Camera,
    *,
    background: Tensor | None = None,  # [D]
    geo_channels: int | None = None,
    shared: bool = False,
    backend: BackendName = "auto",
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render G Gaussian sets at ``camera``: ``(images [G, H, W, D], alphas [G, H, W, 1], meta)``.

    Group g's image equals ``rasterize`` of its Gaussians alone with ``features`` as colours;
    ``shared=True`` composites all groups as one set (G = 1 image). ``meta``: ``backend``,
    ``rasterizations`` (passes run) and, when gsplat could not do it in one, ``fallback``.
    Differentiable w.r.t. every group's tensors and the background.
    """
    _validate(groups, camera, background, geo_channels, eps2d)
    used = resolve_backend(backend, groups[0].means.device)
    splat = _Splatter(camera, used, eps2d)
    meta: dict[str, Any] = {"backend": used}
    if len(groups) == 1:
        img, alpha = splat.stacked(groups[0].geometry, groups[0].features, background, geo_channels)
    elif used == "gsplat" and not shared:
        outs = [splat.stacked(g.geometry, g.features, background, geo_channels) for g in groups]
        img, alpha = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        meta["fallback"] = (f"one transmittance per group needs the torch backend (gsplat has no such kernel): "
                            f"rendered the {len(groups)} groups one by one")
    else:
        geom: Geometry = tuple(torch.cat(parts) for parts in zip(*(g.geometry for g in groups)))  # type: ignore[assignment]
        feats = torch.cat([g.features for g in groups])  # [M, D]
        ids = None
        if not shared:
            dev = groups[0].means.device
            ids = torch.cat([torch.full((g.means.shape[0],), k, dtype=torch.long, device=dev)
                             for k, g in enumerate(groups)])  # [M]
        img, alpha = splat.stacked(geom, feats, background, geo_channels, ids, 1 if shared else len(groups))
    meta["rasterizations"] = splat.passes
    return img, alpha, meta


class _Splatter:
    """Projection + compositing on one backend, counting the rasterization passes."""

    def __init__(self, camera: Camera, backend: str, eps2d: float) -> None:
        self.camera, self.backend, self.eps2d, self.passes = camera, backend, eps2d, 0

    def __call__(self, geom: Geometry, feats: Tensor, bg: Tensor | None, group: Tensor | None = None,
                 groups: int = 1, geo_channels: int | None = None) -> tuple[Tensor, Tensor]:
        """``[G, H, W, D]`` images and ``[G, H, W, 1]`` alphas of ``feats [N, D]``."""
        cam = self.camera
        means, quats, scales, opacities = geom
        viewmat, K = cam.viewmat.to(means), cam.K.to(means)
        self.passes += 1
        if self.backend == "gsplat":
            from moegs_bench.render._gsplat_backend import rasterize_gsplat

            img, alpha, _ = rasterize_gsplat(
                means, quats, scales, opacities, feats, viewmat, K, cam.width, cam.height, backgrounds=bg,
                near_plane=cam.near, far_plane=cam.far, eps2d=self.eps2d, sh_degree=None, render_mode="RGB")
            return img[None], alpha[None]
        proj = project_gaussians(means, quats, scales, opacities, viewmat, K, cam.width, cam.height,
                                 near_plane=cam.near, far_plane=cam.far, eps2d=self.eps2d)
        if group is None:
            group = torch.zeros(means.shape[0], dtype=torch.long, device=means.device)
        return rasterize_to_pixels_grouped(proj.means2d, proj.conics, feats, opacities, proj.radii, proj.depths,
                                           group, groups, cam.width, cam.height, bg, geo_channels)

    def stacked(self, geom: Geometry, feats: Tensor, bg: Tensor | None, geo_channels: int | None,
                group: Tensor | None = None, groups: int = 1) -> tuple[Tensor, Tensor]:
        """One pass where only the first ``geo_channels`` channels move the geometry; on gsplat
        (which cannot) the other channels get a second pass with detached geometry if needed."""
        if (geo_channels is None or geo_channels == feats.shape[1] or self.backend == "torch"
                or not any(t.requires_grad for t in geom)):
            return self(geom, feats, bg, group, groups, geo_channels)
        img, alpha = self(geom, feats[:, :geo_channels], None if bg is None else bg[:geo_channels])
        rest, _ = self(tuple(t.detach() for t in geom), feats[:, geo_channels:],  # type: ignore[arg-type]
                       None if bg is None else bg[geo_channels:])
        return torch.cat([img, rest], -1), alpha
