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

BAND_BUDGET = 1 << 21  # candidate fragments per band
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


def _fragments(
    params: Tensor,  # [n, 6] (mx, my, a, b, c, opacity) in depth order
    x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor,  # [n] int64 inclusive pixel boxes
    row0: int, rows: int, width: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fragments of one band with alpha >= 1/255: (rank, pixel in band, alpha), rank-major."""
    by0 = y0.clamp(min=row0)
    by1 = y1.clamp(max=row0 + rows - 1)
    bw = (x1 - x0 + 1).clamp(min=0)
    bh = (by1 - by0 + 1).clamp(min=0)
    rank = torch.nonzero((bw * bh) > 0).squeeze(1)  # [m]
    bw, bh, bx0, by0 = bw[rank], bh[rank], x0[rank], by0[rank]
    counts = bw * bh
    total = int(counts.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=params.device)
        return empty, empty, torch.zeros(0, device=params.device)
    first = torch.cumsum(counts, 0) - counts
    seg = torch.repeat_interleave(torch.arange(rank.numel(), device=params.device), counts)
    local = torch.arange(total, device=params.device) - first.index_select(0, seg)
    w_seg = bw.index_select(0, seg)
    dv = torch.div(local, w_seg, rounding_mode="floor")
    u = bx0.index_select(0, seg) + (local - dv * w_seg)
    v = by0.index_select(0, seg) + dv
    g = rank.index_select(0, seg)
    p = params.index_select(0, g)  # [c, 6]
    dx = p[:, 0] - (u.to(p.dtype) + 0.5)
    dy = p[:, 1] - (v.to(p.dtype) + 0.5)
    sigma = 0.5 * (p[:, 2] * dx * dx + p[:, 4] * dy * dy) + p[:, 3] * dx * dy
    alpha = torch.clamp_max(p[:, 5] * torch.exp(-sigma), 0.999)
    keep = torch.nonzero((sigma >= 0) & (alpha >= ALPHA_THRESHOLD)).squeeze(1)
    pix = (v.index_select(0, keep) - row0) * width + u.index_select(0, keep)
    return g.index_select(0, keep), pix, alpha.index_select(0, keep)


def _composite(rank: Tensor, pix: Tensor, alpha: Tensor, n_pix: int):
    """Sort fragments by pixel (stable, so depth order holds inside a pixel), apply the
    transmittance stop and return the contributors with their transmittance, plus the final
    transmittance of every pixel."""
    t_final = torch.ones(n_pix, dtype=alpha.dtype, device=alpha.device)
    if pix.numel() == 0:
        return rank, pix, alpha, alpha, t_final
    perm = _stable_argsort(pix, n_pix)
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
            rank, pix, alpha, trans, tf = _composite(rank, pix, alpha, n_pix)
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
        # d/d alpha of T_final * (bg . dC) - T_final * dA, per pixel (sign folded below)
        tail = t_final * (v_a - (v_c @ bg if ctx.has_bg else 0.0))  # [HW]
        v_rank = torch.zeros(n, 6, dtype=dt, device=dev)  # d mean2d(2), conic(3), opacity(1)
        v_col_rank = torch.zeros(n, D, dtype=dt, device=dev)
        for b in ctx.bands:
            P = b.rank.numel()
            if P == 0:
                continue
            sl = slice(b.row0 * width, (b.row0 + b.rows) * width)
            n_pix = b.rows * width
            vc_band = v_c[sl]  # [n_pix, D]
            w = b.alpha * b.trans
            wg = w.index_select(0, b.g_cols)
            v_col_rank += _csr(b.g_rows, b.pix.index_select(0, b.g_cols), wg, (n, n_pix)) @ vc_band
            q = (col_sorted.index_select(0, b.rank) * vc_band.index_select(0, b.pix)).sum(1)  # [P]
            cs = torch.cumsum((w * q).double(), 0)
            last = b.crow[1:].index_select(0, b.pix) - 1  # last fragment of the same pixel
            behind = (cs.index_select(0, last) - cs).to(dt)  # sum of w q behind each fragment
            v_alpha = b.trans * q + (tail[sl].index_select(0, b.pix) - behind) / (1.0 - b.alpha)
            p = params.index_select(0, b.rank)
            u = (b.pix % width).to(dt) + 0.5
            v = torch.div(b.pix, width, rounding_mode="floor").to(dt) + (b.row0 + 0.5)
            dx, dy = p[:, 0] - u, p[:, 1] - v
            sigma = 0.5 * (p[:, 2] * dx * dx + p[:, 4] * dy * dy) + p[:, 3] * dx * dy
            g_exp = torch.exp(-sigma)
            free = (p[:, 5] * g_exp <= 0.999).to(dt)  # no gradient through the 0.999 clamp
            v_sigma = -b.alpha * v_alpha * free
            v_frag = torch.stack(
                [
                    v_sigma * (p[:, 2] * dx + p[:, 3] * dy),
                    v_sigma * (p[:, 3] * dx + p[:, 4] * dy),
                    0.5 * v_sigma * dx * dx,
                    v_sigma * dx * dy,
                    0.5 * v_sigma * dy * dy,
                    g_exp * v_alpha * free,
                ],
                1,
            )  # [P, 6]
            ones = torch.ones(P, dtype=dt, device=dev)
            v_rank += _csr(b.g_rows, b.g_cols, ones, (n, P)) @ v_frag
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
