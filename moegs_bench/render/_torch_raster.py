"""Sparse, differentiable alpha compositing of projected Gaussians (pure PyTorch).

Semantics are gsplat's ``rasterize_to_pixels`` (classic 3DGS): pixel (u, v) is sampled at
(u + 0.5, v + 0.5); ``alpha = min(0.999, o * exp(-sigma))``; fragments with ``sigma < 0`` or
``alpha < 1/255`` are skipped; front-to-back by depth; a pixel stops *before* the Gaussian that
would bring its transmittance to ``<= 1e-4``.

Instead of a per-pixel loop, the image is cut into row bands. In each band every visible
Gaussian lists the pixels of its screen box (a tight bound: outside it ``alpha < 1/255`` for any
opacity <= 1), the fragments that pass the alpha test are kept, stably sorted by pixel (the list
is already in depth order), and composited with per-pixel prefix sums of ``log(1 - alpha)`` in
float64. Colours and gradients are sparse matrix products. Memory grows with the number of
fragments (pixel, Gaussian pairs), never with N x H x W; each band holds at most about
``BAND_BUDGET`` candidate fragments.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._projection import ALPHA_THRESHOLD

BAND_BUDGET = 1 << 21  # candidate fragments per row band
CLASS_BUDGET = 1 << 19  # candidates evaluated at once (larger temporaries churn glibc mmap)
CHANNEL_CHUNK = 4  # channels per gather in the backward pass
T_STOP = 1e-4
_LOG_T_STOP = math.log(T_STOP)


@dataclass
class _Band:
    """Contributing fragments of one row band, pixel-major (and depth order within a pixel)."""

    row0: int
    rows: int
    rank: Tensor  # [P] int64 depth rank of the fragment's Gaussian
    pix: Tensor  # [P] int64 pixel index inside the band (row-major)
    alpha: Tensor  # [P] float32
    trans: Tensor  # [P] float32 transmittance in front of the fragment
    crow: Tensor  # [rows*W + 1] int64 CSR row pointer (pixel-major)
    g_rows: Tensor  # [n + 1] int64 CSR row pointer of the Gaussian-major view
    g_cols: Tensor  # [P] int64 pixel-major position of each fragment, Gaussian-major order


def _stable_argsort(keys: Tensor, max_key: int) -> Tensor:
    """Stable argsort of small non-negative integer keys (numpy radix sort for 16-bit keys)."""
    if keys.device.type == "cpu" and max_key < (1 << 16):
        order = np.argsort(keys.numpy().astype(np.uint16), kind="stable")
        return torch.from_numpy(order.astype(np.int64))
    return torch.sort(keys, stable=True).indices


def _csr(crow: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=shape, check_invariants=False)


def _crow(keys: Tensor, n: int) -> Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(torch.bincount(keys, minlength=n), 0, out=crow[1:])
    return crow


def _bands(y0: Tensor, y1: Tensor, bw: Tensor, height: int, width: int) -> list[tuple[int, int]]:
    """Split rows into bands of about BAND_BUDGET candidates and at most 65536 pixels."""
    diff = torch.zeros(height + 1, dtype=torch.int64, device=bw.device)
    valid = y1 >= y0
    diff.index_add_(0, y0[valid], bw[valid])
    diff.index_add_(0, y1[valid] + 1, -bw[valid])
    per_row = torch.cumsum(diff[:height], 0).tolist()
    max_rows = max(1, (1 << 16) // width)
    bands, start, acc = [], 0, 0
    for r, n in enumerate(per_row):
        if r > start and (acc + n > BAND_BUDGET or r - start >= max_rows):
            bands.append((start, r - start))
            start, acc = r, 0
        acc += n
    bands.append((start, height - start))
    return bands


def _size_class(n: Tensor) -> Tensor:
    """Round box sides up to a short ladder (1..8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...)."""
    n = n.clamp(min=1)
    step = torch.exp2(torch.floor(torch.log2(n.double())) - 2).long().clamp(min=1)
    return (n + step - 1) // step * step


def _fragments(
    params: Tensor,  # [n, 6] (mx, my, a, b, c, opacity) in depth order
    x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor,  # [n] int64 inclusive pixel boxes
    row0: int, rows: int, width: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fragments of one band with alpha >= 1/255: (depth rank, pixel in band, alpha), unordered.

    Gaussians are grouped by (rounded) box size; each group is evaluated densely on its boxes by
    broadcasting, so no per-fragment gathers are needed.
    """
    dev, dt = params.device, params.dtype
    by0 = y0.clamp(min=row0)
    bw = (x1 - x0 + 1).clamp(min=0)
    bh = (y1.clamp(max=row0 + rows - 1) - by0 + 1).clamp(min=0)
    ranks = torch.nonzero((bw * bh) > 0).squeeze(1)  # [m]
    if ranks.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return empty, empty, torch.zeros(0, dtype=dt, device=dev)
    cw, ch = _size_class(bw[ranks]), _size_class(bh[ranks])
    stride = int(cw.max()) + 1
    key = ch * stride + cw
    key_order = torch.sort(key, stable=True).indices
    by_class = ranks.index_select(0, key_order)
    keys, counts = torch.unique_consecutive(key.index_select(0, key_order), return_counts=True)
    out_rank, out_pix, out_alpha = [], [], []
    start = 0
    for k, m_all in zip(keys.tolist(), counts.tolist()):
        wc, hc = k % stride, k // stride
        chunk = max(1, CLASS_BUDGET // (wc * hc))
        for c0 in range(start, start + m_all, chunk):
            r = by_class[c0 : min(c0 + chunk, start + m_all)]  # [m] depth ranks
            p = params.index_select(0, r)
            gx0, gy0 = x0.index_select(0, r), by0.index_select(0, r)
            ex = (p[:, 0] - gx0.to(dt) - 0.5)[:, None, None]  # [m, 1, 1]
            ey = (p[:, 1] - gy0.to(dt) - 0.5)[:, None, None]
            dx = ex - torch.arange(wc, device=dev, dtype=dt)[None, None, :]  # [m, 1, wc]
            dy = ey - torch.arange(hc, device=dev, dtype=dt)[None, :, None]  # [m, hc, 1]
            sigma = (0.5 * p[:, 2, None, None]) * dx * dx + (0.5 * p[:, 4, None, None]) * dy * dy
            sigma = sigma + p[:, 3, None, None] * dx * dy  # [m, hc, wc]
            alpha = torch.clamp_max(p[:, 5, None, None] * torch.exp(-sigma), 0.999)
            keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
            keep &= torch.arange(wc, device=dev)[None, None, :] < bw.index_select(0, r)[:, None, None]
            keep &= torch.arange(hc, device=dev)[None, :, None] < bh.index_select(0, r)[:, None, None]
            flat = torch.nonzero(keep.view(-1)).squeeze(1)
            gi = torch.div(flat, wc * hc, rounding_mode="floor")
            cell = flat - gi * (wc * hc)
            iy = torch.div(cell, wc, rounding_mode="floor")
            base = (gy0 - row0) * width + gx0  # [m] pixel of the box corner
            out_rank.append(r.index_select(0, gi))
            out_pix.append(base.index_select(0, gi) + iy * width + (cell - iy * wc))
            out_alpha.append(alpha.view(-1).index_select(0, flat))
        start += m_all
    return torch.cat(out_rank), torch.cat(out_pix), torch.cat(out_alpha)


def _composite(rank: Tensor, pix: Tensor, alpha: Tensor, n_rank: int, n_pix: int):
    """Order fragments by pixel, then depth (two stable radix passes), apply the transmittance
    stop and return the contributors with their transmittance, plus every pixel's final
    transmittance."""
    t_final = torch.ones(n_pix, dtype=alpha.dtype, device=alpha.device)
    if pix.numel() == 0:
        return rank, pix, alpha, alpha, t_final
    by_rank = _stable_argsort(rank, n_rank)
    perm = by_rank.index_select(0, _stable_argsort(pix.index_select(0, by_rank), n_pix))
    rank, pix, alpha = rank.index_select(0, perm), pix.index_select(0, perm), alpha.index_select(0, perm)
    log1m = torch.log1p(-alpha.double())  # [P]
    cs_excl = torch.cumsum(log1m, 0) - log1m
    first = _crow(pix, n_pix)[:-1].index_select(0, pix)  # [P] first fragment of the same pixel
    log_t = cs_excl - cs_excl.index_select(0, first)  # log transmittance in front, [P]
    keep = torch.nonzero(log_t + log1m > _LOG_T_STOP).squeeze(1)  # exclusive stop, as gsplat
    rank, pix, alpha = rank.index_select(0, keep), pix.index_select(0, keep), alpha.index_select(0, keep)
    log_t, log1m = log_t.index_select(0, keep), log1m.index_select(0, keep)
    log_tf = torch.zeros(n_pix, dtype=torch.float64, device=pix.device).index_add_(0, pix, log1m)
    return rank, pix, alpha, torch.exp(log_t).to(alpha.dtype), torch.exp(log_tf).to(alpha.dtype)


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, radii, depths, width, height):
        dev, dt = colors.device, colors.dtype
        D = colors.shape[1]
        visible = torch.nonzero((radii > 0).all(-1)).squeeze(1)
        order = visible[torch.sort(depths.detach()[visible], stable=True).indices]  # [n]
        n = order.numel()
        params = torch.cat(
            [means2d.detach()[order], conics.detach()[order], opacities.detach()[order, None]], 1
        ).to(dt)  # [n, 6]
        r = radii[order].to(dt)
        mx, my = params[:, 0], params[:, 1]
        x0 = torch.ceil(mx - r[:, 0] - 0.5).clamp(min=0).long()
        x1 = torch.floor(mx + r[:, 0] - 0.5).clamp(max=width - 1).long()
        y0 = torch.ceil(my - r[:, 1] - 0.5).clamp(min=0).long()
        y1 = torch.floor(my + r[:, 1] - 0.5).clamp(max=height - 1).long()
        out = torch.zeros(height * width, D, dtype=dt, device=dev)
        t_final = torch.ones(height * width, dtype=dt, device=dev)
        col_sorted = colors.detach()[order]  # [n, D]
        bands: list[_Band] = []
        for row0, rows in _bands(y0, y1, (x1 - x0 + 1).clamp(min=0), height, width):
            n_pix = rows * width
            rank, pix, alpha = _fragments(params, x0, x1, y0, y1, row0, rows, width)
            rank, pix, alpha, trans, tf = _composite(rank, pix, alpha, n, n_pix)
            crow = _crow(pix, n_pix)
            w = alpha * trans
            sl = slice(row0 * width, (row0 + rows) * width)
            if rank.numel():
                out[sl] = _csr(crow, rank, w, (n_pix, n)) @ col_sorted
            t_final[sl] = tf
            if any(ctx.needs_input_grad[:5]):
                g_perm = _stable_argsort(rank, n) if rank.numel() else rank
                bands.append(_Band(row0, rows, rank, pix, alpha, trans, crow, _crow(rank, n), g_perm))
        if backgrounds is not None:
            out = out + t_final[:, None] * backgrounds.detach()[None, :]
        ctx.bands, ctx.order, ctx.width, ctx.height = bands, order, width, height
        ctx.has_bg, ctx.num_gaussians = backgrounds is not None, means2d.shape[0]
        ctx.save_for_backward(params, col_sorted, t_final, backgrounds if backgrounds is not None else t_final.new_zeros(0))
        alphas = 1.0 - t_final
        return out.view(height, width, D), alphas.view(height, width, 1)

    @staticmethod
    def backward(ctx, v_colors_img, v_alphas_img):
        params, col_sorted, t_final, bg = ctx.saved_tensors
        order, width = ctx.order, ctx.width
        n, D = col_sorted.shape
        dev, dt = params.device, params.dtype
        v_c = v_colors_img.reshape(-1, D).to(dt)  # [HW, D]
        v_a = v_alphas_img.reshape(-1).to(dt)  # [HW]
        # terms of dL/dalpha that come through the final transmittance (alpha output, background)
        tail = t_final * (v_a - (v_c @ bg if ctx.has_bg else 0.0))  # [HW]
        sums = torch.zeros(n, D + 6, dtype=dt, device=dev)  # per depth rank: sum_p of _frag_terms
        for b in ctx.bands:
            P = b.rank.numel()
            if P == 0:
                continue
            sl = slice(b.row0 * width, (b.row0 + b.rows) * width)
            vc_band = v_c[sl]  # [n_pix, D]
            w = b.alpha * b.trans  # [P]
            gaussian_major = _csr(b.g_rows, b.g_cols, torch.ones(P, dtype=dt, device=dev), (n, P))
            q = torch.zeros(P, dtype=dt, device=dev)  # colour . dL/dC per fragment
            for c0 in range(0, D, CHANNEL_CHUNK):
                c1 = min(D, c0 + CHANNEL_CHUNK)
                vc_frag = vc_band[:, c0:c1].index_select(0, b.pix)  # [P, c]
                q += (col_sorted[:, c0:c1].index_select(0, b.rank) * vc_frag).sum(1)
                sums[:, c0:c1] += gaussian_major @ (w[:, None] * vc_frag)
            cs = torch.cumsum((w * q).double(), 0)
            last = b.crow[1:].index_select(0, b.pix) - 1  # last fragment of the same pixel
            behind = (cs.index_select(0, last) - cs).to(dt)  # sum of w q behind each fragment
            v_alpha = b.trans * q + (tail[sl].index_select(0, b.pix) - behind) / (1.0 - b.alpha)
            s = b.alpha * v_alpha * (b.alpha < 0.999)  # no gradient through the 0.999 clamp
            u = (b.pix % width).to(dt) + 0.5
            v = torch.div(b.pix, width, rounding_mode="floor").to(dt) + (b.row0 + 0.5)
            dx = params[:, 0].index_select(0, b.rank) - u
            dy = params[:, 1].index_select(0, b.rank) - v
            sdx, sdy = s * dx, s * dy
            terms = torch.stack([s, sdx, sdy, sdx * dx, sdx * dy, sdy * dy], 1)  # [P, 6]
            sums[:, D:] += gaussian_major @ terms
        # dL/dsigma = -s per fragment; sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2, dx = mx - px
        S, Sx, Sy, Sxx, Sxy, Syy = sums[:, D:].unbind(1)
        a, b_, c = params[:, 2], params[:, 3], params[:, 4]
        v_rank = torch.stack(
            [-(a * Sx + b_ * Sy), -(b_ * Sx + c * Sy), -0.5 * Sxx, -Sxy, -0.5 * Syy, S / params[:, 5]], 1
        )  # [n, 6] d mean2d, d conic, d opacity (alpha = o exp(-sigma) => d alpha / d o = alpha / o)
        v_col_rank = sums[:, :D]
        need = ctx.needs_input_grad
        size = ctx.num_gaussians

        def scatter(values: Tensor) -> Tensor:  # depth-rank rows -> Gaussian rows
            return values.new_zeros((size,) + values.shape[1:]).index_copy_(0, order, values)

        v_means2d = scatter(v_rank[:, :2]) if need[0] else None
        v_conics = scatter(v_rank[:, 2:5]) if need[1] else None
        v_colors = scatter(v_col_rank) if need[2] else None
        v_opac = scatter(v_rank[:, 5]) if need[3] else None
        v_bg = (t_final[:, None] * v_c).sum(0) if need[4] and ctx.has_bg else None
        return v_means2d, v_conics, v_colors, v_opac, v_bg, None, None, None, None


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
    return _RasterizeToPixels.apply(
        means2d, conics, colors, opacities, backgrounds, radii, depths, width, height
    )
