"""Differentiable alpha compositing of projected Gaussians in pure PyTorch (tile-dense).

Semantics are gsplat's ``rasterize_to_pixels`` (classic 3DGS): pixel (u, v) is sampled at
(u + 0.5, v + 0.5); ``alpha = min(0.999, o * exp(-sigma))``; fragments with ``alpha < 1/255`` are
skipped; front to back by depth; a pixel stops *before* the Gaussian that would bring its
transmittance to ``<= 1e-4``.

How: the image is cut into ``TILE x TILE`` tiles. Each Gaussian is listed in the tiles its screen
box touches (gsplat 1.5.3's opacity-aware box is tight: outside it ``alpha < 1/255``), and the
(tile, Gaussian) pairs are sorted by tile and depth, as gsplat does. Tiles are then evaluated as
dense ``[tiles, Gaussians, TILE * TILE]`` blocks, so depth order is an axis: transmittance is a
``cumprod``, colours a batched matmul, and ``log(o) - sigma`` one matmul of six coefficients per
pair with the monomials of the tile's pixel offsets. The forward pass walks each tile's list in
segments of growing length and drops a tile once all its pixels have stopped; the backward pass
recomputes the blocks (as gsplat's kernels do) but only up to each tile's last stop. Nothing is stored per
(pixel, Gaussian) pair: memory is O(N + (tile, Gaussian) pairs + H * W) plus one block of about
``CHUNK`` elements.

``rasterize_to_pixels_grouped`` tags Gaussians with group ids (MoE-GS experts): the sort key is
(tile, group, depth), so each (tile, group) slot has its own list and transmittance, and G images
come from one projection, one sort and one pass, each equal to rendering its group alone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from moegs_bench.render._projection import ALPHA_THRESHOLD

TILE = 4  # pixels per tile side
CHUNK = 1 << 18  # elements of one dense [tiles, Gaussians, TILE * TILE] block
SEGMENT = 32  # Gaussians per tile in the first forward segment (early exit between; then doubling)
_TINY = 2.0**-100  # below the spacing of float32 around T_STOP and 0.999, above its smallest normal
T_STOP = 1e-4


def _stable_argsort(keys: Tensor, n_keys: int) -> Tensor:
    """Stable argsort of integer keys in [0, n_keys) (numpy's radix sort for 16-bit keys)."""
    if keys.device.type == "cpu" and n_keys <= (1 << 16):
        order = np.argsort(keys.numpy().astype(np.uint16), kind="stable")
        return torch.from_numpy(order.astype(np.int64))
    return torch.sort(keys, stable=True).indices


@dataclass
class _Tiles:
    """(tile, Gaussian) pairs grouped by tile, depth order inside a tile; busiest tiles first."""

    tiles_x: int
    tiles_y: int
    tile_ids: Tensor  # [T] non-empty tiles, by decreasing number of Gaussians
    starts: Tensor  # [T] offset of each tile's run in `ranks`
    counts: Tensor  # [T] Gaussians per tile
    ranks: Tensor  # [M] depth rank of the Gaussian of each pair
    chunks: list[tuple[int, int, int]]  # (first tile, end tile, padded Gaussians per tile)
    groups: int = 1  # lists per image tile: tile_ids are slots ``image tile * groups + group``


def _intersect(params: Tensor, radii: Tensor, width: int, height: int, group: Tensor | None = None,
               groups: int = 1) -> _Tiles:
    """List the tiles touched by the pixel box of each Gaussian (``params`` in depth order).

    With ``group [n]`` (ids in ``[0, groups)``), each image tile holds one list per group: the
    slot of a pair is ``tile * groups + group``, so every group composites on its own.
    """
    dev = params.device
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    r = radii.to(params.dtype)
    mx, my = params[:, 0], params[:, 1]
    # inclusive pixel boxes |u + 0.5 - mx| <= rx, clipped to the image, then in tiles
    tx0 = torch.ceil(mx - r[:, 0] - 0.5).clamp(min=0).long() // TILE
    tx1 = torch.floor(mx + r[:, 0] - 0.5).clamp(max=width - 1).long()
    ty0 = torch.ceil(my - r[:, 1] - 0.5).clamp(min=0).long() // TILE
    ty1 = torch.floor(my + r[:, 1] - 0.5).clamp(max=height - 1).long()
    nx = torch.where(tx1 >= 0, tx1 // TILE - tx0 + 1, 0).clamp(min=0)
    ny = torch.where(ty1 >= 0, ty1 // TILE - ty0 + 1, 0).clamp(min=0)
    per_gauss = nx * ny  # [n]
    total = int(per_gauss.sum())
    rank = torch.repeat_interleave(torch.arange(len(per_gauss), device=dev), per_gauss)  # [M]
    local = torch.arange(total, device=dev) - (torch.cumsum(per_gauss, 0) - per_gauss).index_select(0, rank)
    nx_r = nx.index_select(0, rank)
    row = torch.div(local, nx_r, rounding_mode="floor")
    tile = (ty0.index_select(0, rank) + row) * tiles_x + tx0.index_select(0, rank) + (local - row * nx_r)
    if group is not None:
        tile = tile * groups + group.index_select(0, rank)
    n_slots = tiles_x * tiles_y * groups
    by_tile = _stable_argsort(tile, n_slots)  # depth order kept inside a slot
    ranks = rank.index_select(0, by_tile)
    counts_all = torch.bincount(tile, minlength=n_slots)
    starts_all = torch.cumsum(counts_all, 0) - counts_all
    tile_ids = torch.nonzero(counts_all).squeeze(1)
    return _plan(_Tiles(tiles_x, tiles_y, tile_ids, starts_all[tile_ids], counts_all[tile_ids], ranks, [], groups))


def _plan(tiles: _Tiles) -> _Tiles:
    """Drop empty tiles, order the rest by decreasing count and cut them into chunks."""
    keep = torch.nonzero(tiles.counts).squeeze(1)
    keep = keep[torch.sort(tiles.counts[keep], descending=True, stable=True).indices]
    counts = tiles.counts[keep]
    chunks, i, n_tiles = [], 0, len(keep)
    counts_list = counts.tolist()
    while i < n_tiles:
        g = counts_list[i]
        j = min(n_tiles, i + max(1, CHUNK // (g * TILE * TILE)))
        chunks.append((i, j, g))
        i = j
    return _Tiles(
        tiles.tiles_x, tiles.tiles_y, tiles.tile_ids[keep], tiles.starts[keep], counts, tiles.ranks, chunks, tiles.groups
    )


@dataclass
class _Block:
    """One chunk of tiles evaluated densely; G = padded Gaussians per tile, P = TILE * TILE."""

    tile_ids: Tensor  # [T]
    rank: Tensor  # [T, G] depth rank (0 on padding)
    valid: Tensor  # [T, G] False on padding
    ex: Tensor  # [T, G] mean2d.x - tile centre x
    ey: Tensor  # [T, G] mean2d.y - tile centre y
    alpha: Tensor  # [T, G, P] 0 where skipped and after the transmittance stop
    trans: Tensor  # [T, G, P] transmittance in front (meaningless where alpha is 0)
    t_out: Tensor  # [T, P] transmittance behind the block, 0 where the pixel has stopped
    n_live: Tensor | None  # [T] Gaussians that still reach some pixel of the tile (a prefix)


def _block(
    params: Tensor, tiles: _Tiles, idx: Tensor, g0: int, g: int, t_in: Tensor | None = None, count_live: bool = False
) -> _Block:
    """Evaluate Gaussians ``g0 .. g0+g-1`` of the tiles at positions ``idx`` densely.

    ``t_in [T, P]`` is the transmittance in front of Gaussian ``g0`` (1 when None).
    """
    dev, dt = params.device, params.dtype
    tid = tiles.tile_ids.index_select(0, idx)  # [T]
    ar = torch.arange(g0, g0 + g, device=dev)
    valid = ar < tiles.counts.index_select(0, idx)[:, None]  # [T, G]
    pos = torch.where(valid, tiles.starts.index_select(0, idx)[:, None] + ar, 0)
    rank = tiles.ranks.index_select(0, pos.view(-1)).view(pos.shape)  # [T, G]
    p = params.index_select(0, rank.view(-1)).view(*rank.shape, 6)  # [T, G, 6]
    # offsets to the pixel centres (x', y') are taken from the tile centre, so the quadratic form
    # sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2 (dx = ex - x', dy = ey - y') expands into six
    # small coefficients times the monomials of (x', y'): one matmul for the whole block
    img_tile = tid if tiles.groups == 1 else torch.div(tid, tiles.groups, rounding_mode="floor")
    cx = ((img_tile % tiles.tiles_x) * TILE).to(dt)[:, None] + TILE / 2
    cy = (torch.div(img_tile, tiles.tiles_x, rounding_mode="floor") * TILE).to(dt)[:, None] + TILE / 2
    ex, ey = p[..., 0] - cx, p[..., 1] - cy  # [T, G]
    a, b_, c = p[..., 2], p[..., 3], p[..., 4]
    ax_by, bx_cy = a * ex + b_ * ey, b_ * ex + c * ey
    log_o = torch.log(p[..., 5] * valid)  # padding: log 0 = -inf, alpha 0
    coef = torch.stack(  # log(o) - sigma = coef . (1, x', y', x'^2, x'y', y'^2)
        [log_o - 0.5 * (ex * ax_by + ey * bx_cy), ax_by, bx_cy, -0.5 * a, -b_, -0.5 * c], -1
    )  # [T, G, 6]
    alpha = torch.exp(torch.mm(coef.view(-1, 6), _monomials(dt, dev).T))  # [T*G, P] = o exp(-sigma)
    # gsplat also skips sigma < 0; the projection's conics are positive definite (eps2d > 0), so
    # that only happens by rounding at the centre, where either side of zero is as right.
    # alpha < 1/255 -> 0 (threshold keeps x > the float just below 1/255, i.e. x >= 1/255)
    alpha = F.threshold_(alpha, _below(ALPHA_THRESHOLD, dt), 0.0).clamp_max_(0.999).view(*rank.shape, TILE * TILE)
    t_incl = torch.cumprod(1.0 - alpha, dim=1)  # [T, G, P]
    t_first = torch.ones_like(t_incl[:, :1]) if t_in is None else t_in[:, None, :]
    if t_in is not None:
        t_incl.mul_(t_first)
    live = _step(t_incl - T_STOP)  # 1 before the stop (a prefix along G; exclusive, as in gsplat)
    alpha.mul_(live)  # nothing after the stop
    trans = torch.empty_like(t_incl)  # exclusive transmittance: t_incl shifted one Gaussian back
    trans[:, :1] = t_first
    trans[:, 1:] = t_incl[:, :-1]
    n_live = None
    if count_live:  # live pairs: the longest live prefix over the tile's pixels, padding excluded
        n_live = torch.minimum(live.sum(1).amax(1).long(), valid.sum(1))  # [T]
    return _Block(tid, rank, valid, ex, ey, alpha, trans, t_incl[:, -1] * live[:, -1], n_live)


def _monomials(dtype: torch.dtype, device: torch.device) -> Tensor:
    """[P, 6]: (1, x', y', x'^2, x'y', y'^2) of the pixel centres relative to the tile centre."""
    xy = torch.arange(TILE, dtype=dtype, device=device) + (0.5 - TILE / 2)
    yy, xx = torch.meshgrid(xy, xy, indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)  # row-major pixels of the tile
    return torch.stack([torch.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], 1)


def _step(x: Tensor) -> Tensor:
    """1.0 where x > 0 else 0.0, in float arithmetic (bool tensors are slow on CPU)."""
    return x.clamp_(0.0, _TINY).mul_(1.0 / _TINY)


def _below(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` below ``value``."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.zeros_like(v)))


def _to_tiles(img: Tensor, tiles: _Tiles) -> Tensor:
    """[G, H, W, C] images -> [n_tiles * G, P, C] (slot = tile * G + group), zero padded at the
    right and bottom borders."""
    G, H, W, C = img.shape
    pad = img.new_zeros(G, tiles.tiles_y * TILE, tiles.tiles_x * TILE, C)
    pad[:, :H, :W] = img
    pad = pad.view(G, tiles.tiles_y, TILE, tiles.tiles_x, TILE, C).permute(1, 3, 0, 2, 4, 5)
    return pad.reshape(-1, TILE * TILE, C)


def _from_tiles(t: Tensor, tiles: _Tiles, width: int, height: int) -> Tensor:
    """Inverse of ``_to_tiles``: [n_tiles * G, P, C] -> [G, H, W, C]."""
    C, G = t.shape[-1], tiles.groups
    img = t.view(tiles.tiles_y, tiles.tiles_x, G, TILE, TILE, C).permute(2, 0, 3, 1, 4, 5)
    return img.reshape(G, tiles.tiles_y * TILE, tiles.tiles_x * TILE, C)[:, :height, :width]


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, radii, depths, width, height, group, groups,
                geo_channels):
        dev, dt = colors.device, colors.dtype
        visible = torch.nonzero((radii > 0).all(-1)).squeeze(1)
        order = visible[torch.sort(depths.detach()[visible], stable=True).indices]  # [n]
        params = torch.cat(
            [means2d.detach()[order], conics.detach()[order], opacities.detach()[order, None]], 1
        ).to(dt)  # [n, 6] (mx, my, a, b, c, o) by depth rank
        col_sorted = colors.detach()[order]  # [n, D]
        tiles = _intersect(params, radii[order], width, height, None if group is None else group[order], groups)
        n_slots, P, D = tiles.tiles_x * tiles.tiles_y * groups, TILE * TILE, colors.shape[1]
        out = torch.zeros(n_slots, P, D, dtype=dt, device=dev)
        t_final = torch.ones(n_slots, P, dtype=dt, device=dev)
        n_live = torch.zeros_like(tiles.counts)
        col_one = torch.cat([col_sorted, torch.ones_like(col_sorted[:, :1])], 1)  # [n, D + 1]
        need_grad = any(ctx.needs_input_grad[:5])
        per_chunk = max(1, CHUNK // (SEGMENT * P))
        for i0 in range(0, len(tiles.tile_ids), per_chunk):
            # tiles by decreasing count; walk their lists front to back in segments of SEGMENT
            # Gaussians and drop a tile once all its pixels stopped or its list ran out
            idx = torch.arange(i0, min(i0 + per_chunk, len(tiles.tile_ids)), device=dev)
            acc = torch.zeros(len(idx), P, D + 1, dtype=dt, device=dev)  # colours, sum of weights
            t_run = torch.ones(len(idx), P, dtype=dt, device=dev)
            act = torch.arange(len(idx), device=dev)  # rows of idx still active
            g_max = int(tiles.counts[i0])
            g0, seg = 0, SEGMENT
            while g0 < g_max:
                b = _block(params, tiles, idx[act], g0, min(seg, g_max - g0), t_run[act], need_grad)
                col = col_one.index_select(0, b.rank.view(-1)).view(*b.rank.shape, D + 1)  # [T, G, D + 1]
                acc[act] += torch.bmm((b.alpha * b.trans).transpose(1, 2), col)  # [T, P, D + 1]
                t_run[act] = b.t_out
                if need_grad:
                    n_live[idx[act]] += b.n_live
                go_on = (b.t_out > 0).any(1) & (tiles.counts[idx[act]] > g0 + seg)
                act = act[go_on]
                if act.numel() == 0:
                    break
                # tiles still open after a segment are mostly sparse or transparent: double the
                # segment (fewer, larger blocks; at most CHUNK elements) instead of many small ones
                g0, seg = g0 + seg, max(SEGMENT, min(2 * seg, CHUNK // (act.numel() * P)))
            out[tiles.tile_ids[idx]] = acc[..., :D]
            t_final[tiles.tile_ids[idx]] = (1.0 - acc[..., D]).clamp_(min=0.0)  # sum of weights = 1 - T
        if backgrounds is not None:
            out = out + t_final[..., None] * backgrounds.detach()
        # the backward pass only needs each tile's Gaussians up to its last transmittance stop
        tiles = _plan(
            _Tiles(tiles.tiles_x, tiles.tiles_y, tiles.tile_ids, tiles.starts, n_live, tiles.ranks, [], tiles.groups)
        )
        ctx.tiles, ctx.order, ctx.size = tiles, order, (width, height, means2d.shape[0])
        ctx.has_bg, ctx.geo_channels = backgrounds is not None, geo_channels
        ctx.save_for_backward(params, col_sorted, t_final, backgrounds if ctx.has_bg else t_final.new_zeros(0))
        img = _from_tiles(out, tiles, width, height)
        alphas = _from_tiles(1.0 - t_final[..., None], tiles, width, height)
        return img.contiguous(), alphas.contiguous()

    @staticmethod
    def backward(ctx, v_img, v_alphas):
        params, col_sorted, t_final, bg = ctx.saved_tensors
        tiles, order = ctx.tiles, ctx.order
        width, height, size = ctx.size
        n, D = col_sorted.shape
        Dg = D if ctx.geo_channels is None else ctx.geo_channels  # channels whose gradient reaches geometry
        dt = params.dtype
        v_c = _to_tiles(v_img.to(dt), tiles)  # [n_slots, P, D]
        v_a = _to_tiles(v_alphas.to(dt), tiles)[..., 0]  # [n_slots, P]
        # dL/dalpha through the final transmittance (alpha output and background)
        tail = t_final * (v_a - (v_c[..., :Dg] @ bg[:Dg] if ctx.has_bg else 0.0))  # [n_slots, P]
        # per (tile, Gaussian) pair: d colour (D), then sums of s, s dx, s dy, s dx^2, s dx dy, s dy^2
        per_pair = params.new_zeros(len(tiles.ranks) + 1, D + 6)  # last row absorbs padding
        moments = _monomials(dt, params.device)  # [P, 6]
        for i0, i1, g in tiles.chunks:
            b = _block(params, tiles, torch.arange(i0, i1, device=params.device), 0, g)
            T = len(b.tile_ids)
            vc = v_c[b.tile_ids]  # [T, P, D]
            col = col_sorted.index_select(0, b.rank.view(-1)).view(T, g, D)
            w = b.alpha * b.trans  # [T, G, P]
            q = torch.bmm(col[..., :Dg], vc[..., :Dg].transpose(1, 2))  # [T, G, P] colour . dL/dC
            wq = w * q
            # sum of w q over the fragments behind, accumulated back to front as in gsplat
            behind = torch.zeros_like(wq)
            behind[:, :-1] = torch.flip(torch.cumsum(torch.flip(wq[:, 1:], (1,)), 1), (1,))
            # alpha * dL/dalpha = w q + alpha / (1 - alpha) * (tail - behind); no gradient past the clamp
            s = (tail[b.tile_ids][:, None, :] - behind).mul_(b.alpha / (1.0 - b.alpha)).add_(wq)
            s.mul_(_step(0.999 - b.alpha))  # [T, G, P] = -dL/dsigma
            # moments of s over the tile's pixel centres (x', y'), shifted to the Gaussian:
            # sum s dx^k dy^l with dx = ex - x', dy = ey - y' (ex, ey: mean relative to the tile centre)
            m = torch.mm(s.view(T * g, TILE * TILE), moments).view(T, g, 6)
            S, Mx, My, Mxx, Mxy, Myy = m.unbind(-1)
            ex, ey = b.ex, b.ey
            stats = torch.stack(
                [
                    S, ex * S - Mx, ey * S - My,
                    ex * (ex * S - 2 * Mx) + Mxx,
                    ex * (ey * S - My) - ey * Mx + Mxy,
                    ey * (ey * S - 2 * My) + Myy,
                ],
                -1,
            )  # [T, G, 6] sums of s, s dx, s dy, s dx^2, s dx dy, s dy^2
            v_col = torch.bmm(w, vc)  # [T, G, D]
            pos = torch.where(b.valid, tiles.starts[i0:i1, None] + torch.arange(g, device=b.rank.device), len(tiles.ranks))
            per_pair.index_copy_(0, pos.view(-1), torch.cat([v_col, stats], -1).view(T * g, D + 6))
        # sum the pairs of each Gaussian: one sparse product with the rank-major pair list
        by_rank = _stable_argsort(tiles.ranks, n)
        crow = torch.zeros(n + 1, dtype=torch.int64, device=params.device)
        torch.cumsum(torch.bincount(tiles.ranks, minlength=n), 0, out=crow[1:])
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            gather = torch.sparse_csr_tensor(
                crow, by_rank, torch.ones_like(by_rank, dtype=dt), size=(n, len(tiles.ranks) + 1), check_invariants=False
            )
        sums = gather @ per_pair  # [n, D + 6]
        # sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2 with dx = mx - px;  dL/dsigma = -s
        S, Sx, Sy, Sxx, Sxy, Syy = sums[:, D:].unbind(1)
        a, b_, c = params[:, 2], params[:, 3], params[:, 4]
        v_rank = torch.stack(
            [-(a * Sx + b_ * Sy), -(b_ * Sx + c * Sy), -0.5 * Sxx, -Sxy, -0.5 * Syy, S / params[:, 5]], 1
        )  # d mean2d, d conic, d opacity (alpha = o exp(-sigma): d alpha / d o = alpha / o)

        need = ctx.needs_input_grad

        def scatter(values: Tensor) -> Tensor:  # depth-rank rows -> Gaussian rows
            return values.new_zeros((size,) + values.shape[1:]).index_copy_(0, order, values)

        v_means2d = scatter(v_rank[:, :2]) if need[0] else None
        v_conics = scatter(v_rank[:, 2:5]) if need[1] else None
        v_colors = scatter(sums[:, :D]) if need[2] else None
        v_opac = scatter(v_rank[:, 5]) if need[3] else None
        v_bg = (t_final[..., None] * v_c).sum((0, 1)) if need[4] and ctx.has_bg else None  # [D]
        return v_means2d, v_conics, v_colors, v_opac, v_bg, None, None, None, None, None, None, None


def rasterize_to_pixels(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    colors: Tensor,  # [N, D]
    opacities: Tensor,  # [N]
    radii: Tensor,  # [N, 2] int, 0 = culled
    depths: Tensor,  # [N]
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # [D]
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians: ``(colors [H, W, D], alphas [H, W, 1])``.

    Differentiable w.r.t. means2d, conics, colors, opacities and backgrounds.
    """
    img, alpha = _RasterizeToPixels.apply(
        means2d, conics, colors, opacities, backgrounds, radii, depths, width, height, None, 1, None
    )
    return img[0], alpha[0]


def rasterize_to_pixels_grouped(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    colors: Tensor,  # [N, D]
    opacities: Tensor,  # [N]
    radii: Tensor,  # [N, 2] int, 0 = culled
    depths: Tensor,  # [N]
    group: Tensor,  # [N] int in [0, groups)
    groups: int,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # [D]
    geo_channels: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Composite each group on its own in one pass: ``(colors [G, H, W, D], alphas [G, H, W, 1])``.

    One depth sort and one tile list for all Gaussians; each (tile, group) keeps its own
    transmittance, so group g's image equals ``rasterize_to_pixels`` of group g's Gaussians alone.
    ``geo_channels = c`` lets only the first c channels (and the alphas) send gradients to the
    geometry (means2d, conics, opacities): the others composite geometry as if it were detached.
    """
    return _RasterizeToPixels.apply(
        means2d, conics, colors, opacities, backgrounds, radii, depths, width, height, group, groups, geo_channels
    )
