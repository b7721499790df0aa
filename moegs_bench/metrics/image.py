"""Pixel metrics: PSNR, SSIM and the 3DGS photometric loss.

Images are ``[H, W, C]`` or ``[B, H, W, C]`` float tensors in [0, 1] (data range 1; as
``Scene.image`` and the renderer give them). Our own code, checked against scikit-image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from moegs_bench.errors import InputError

__all__ = ["check_image_pair", "dssim", "photometric_loss", "psnr", "ssim"]

SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ----------------------------------------------------------------------------- input checks


def check_image_pair(img: object, gt: object) -> tuple[Tensor, Tensor]:
    """Check ``img``/``gt`` are floating tensors of one shape [H,W,C] or [B,H,W,C]; return both
    as [B, H, W, C]."""
    for name, value in (("img", img), ("gt", gt)):
        if not isinstance(value, Tensor):
            raise InputError(
                f"{name}: expected a torch.Tensor of shape [H, W, C] or [B, H, W, C], "
                f"got {type(value).__name__}"
            )
        if value.dim() not in (3, 4):
            raise InputError(
                f"{name}: expected shape [H, W, C] or [B, H, W, C], got {tuple(value.shape)} "
                f"({value.dim()} dims)"
            )
        if not value.is_floating_point():
            raise InputError(f"{name}: expected a floating-point tensor in [0, 1], got dtype {value.dtype}")
        if value.numel() == 0:
            raise InputError(f"{name}: expected a non-empty image, got shape {tuple(value.shape)}")
    assert isinstance(img, Tensor) and isinstance(gt, Tensor)
    if img.shape != gt.shape:
        raise InputError(f"gt: expected the shape of img {tuple(img.shape)}, got {tuple(gt.shape)}")
    if img.device != gt.device:
        raise InputError(f"gt: expected the device of img ({img.device}), got {gt.device}")
    if img.dim() == 3:
        return img.unsqueeze(0), gt.unsqueeze(0)  # [1, H, W, C]
    return img, gt


# ----------------------------------------------------------------------------- PSNR


def psnr(img: Tensor, gt: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for data range 1.

    ``img``, ``gt``: ``[H, W, C]`` or ``[B, H, W, C]``. Per image, the MSE is taken over all pixels
    and channels and PSNR = -10 log10(MSE); the result is the mean over the batch (a 0-d tensor,
    ``inf`` for identical images). Differentiable.
    """
    x, y = check_image_pair(img, gt)  # [B, H, W, C]
    mse = (x - y).square().flatten(1).mean(dim=1)  # [B]
    return (-10.0 * torch.log10(mse)).mean()


# ----------------------------------------------------------------------------- SSIM


def _gaussian_kernel_1d(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian taps, as ``scipy.ndimage.gaussian_filter`` builds them."""
    radius = window_size // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)  # [window_size]


def _ssim_per_image(x: Tensor, y: Tensor, window_size: int, sigma: float) -> Tensor:
    """Mean SSIM of each image; ``x``, ``y``: [B, H, W, C] -> [B]."""
    odd_int = isinstance(window_size, int) and not isinstance(window_size, bool) and window_size % 2 == 1
    if not odd_int or window_size < 1:
        raise InputError(f"window_size: expected an odd positive int, got {window_size!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma: expected a positive finite number, got {sigma!r}")
    b, h, w, c = x.shape
    if window_size > min(h, w):
        raise InputError(
            f"window_size: {window_size} exceeds the image extent {h}x{w}; "
            f"expected window_size <= min(H, W)"
        )
    # The SSIM map is cropped by radius = window_size // 2 on every side (as scikit-image does),
    # and the pixels left are exactly those whose whole window lies inside the image. A "valid"
    # convolution (no padding) therefore gives the cropped map directly: the boundary mode of
    # the filter never matters.
    taps = _gaussian_kernel_1d(window_size, sigma, x.dtype, x.device)
    xc = x.permute(0, 3, 1, 2)  # [B, C, H, W]
    yc = y.permute(0, 3, 1, 2)  # [B, C, H, W]
    # Depthwise (grouped) separable convolution: much faster on CPU than a 1-channel conv.
    groups = 5 * c
    flat = torch.cat((xc, yc, xc * xc, yc * yc, xc * yc), dim=1)  # [B, 5*C, H, W]
    flat = F.conv2d(flat, taps.view(1, 1, window_size, 1).expand(groups, 1, window_size, 1), groups=groups)
    flat = F.conv2d(flat, taps.view(1, 1, 1, window_size).expand(groups, 1, 1, window_size), groups=groups)
    hv, wv = h - window_size + 1, w - window_size + 1  # flat: [B, 5*C, H', W']
    ux, uy, uxx, uyy, uxy = flat.view(b, 5, c, hv, wv).unbind(dim=1)  # each [B, C, H', W']
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    # Population (co)variances (use_sample_covariance=False, as Wang et al. 2004).
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return (num / den).flatten(1).mean(dim=1)  # [B]


def ssim(img: Tensor, gt: Tensor, *, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity (Gaussian window, data range 1, K1=0.01, K2=0.03).

    ``img``, ``gt``: ``[H, W, C]`` or ``[B, H, W, C]``. Each channel is filtered separately with a
    ``window_size``-tap Gaussian of std ``sigma``; population (co)variances; the SSIM map is cropped
    by ``window_size // 2`` on every side and averaged over pixels and channels per image, then
    over the batch (a 0-d tensor). With the defaults this is scikit-image's
    ``structural_similarity(..., channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` (the 3DGS evaluation SSIM): it equals it whenever
    ``window_size == 2 * int(3.5 * sigma + 0.5) + 1``. Differentiable w.r.t. both inputs.
    """
    x, y = check_image_pair(img, gt)  # [B, H, W, C]
    return _ssim_per_image(x, y, window_size, sigma).mean()


def dssim(img: Tensor, gt: Tensor, *, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """``1 - ssim(img, gt)``: the D-SSIM loss term of 3DGS (the trainer applies its own weight,
    0.2 in 3DGS). Same inputs as :func:`ssim`; a differentiable 0-d tensor."""
    return 1.0 - ssim(img, gt, window_size=window_size, sigma=sigma)


def photometric_loss(img: Tensor, gt: Tensor, lambda_dssim: float) -> Tensor:
    """The training loss of 3DGS (Kerbl et al. 2023, eq. 7): ``(1 - l) * L1 + l * D-SSIM``.

    ``img`` and ``gt`` are ``[H, W, 3]``; a differentiable 0-d tensor. With ``l == 0`` the D-SSIM
    term is not computed at all (no SSIM pass, no zero-weighted gradient).
    """
    l1 = (img - gt).abs().mean()
    return (1 - lambda_dssim) * l1 + (lambda_dssim * dssim(img, gt) if lambda_dssim else 0.0)
