"""Image-quality metrics (PSNR, SSIM, LPIPS), render-speed and storage measurements.

Images are ``[H, W, C]`` or ``[B, H, W, C]`` float tensors in [0, 1] (data range 1; as
``Scene.image`` and the renderer give them, README, "Datasets"). PSNR and SSIM are our own,
checked against scikit-image. LPIPS uses the optional ``lpips`` package and is reported as
unavailable, with the reason, when the package, torchvision or the weights are missing: no
weights are downloaded and no number is ever made up.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from moegs_bench.errors import InputError

__all__ = [
    "FpsResult",
    "LpipsMetric",
    "LpipsStatus",
    "dssim",
    "lpips_status",
    "measure_fps",
    "photometric_loss",
    "psnr",
    "ssim",
    "storage_mb",
]

SSIM_K1 = 0.01
SSIM_K2 = 0.03

# torchvision's AlexNet weights, as fetched by torch.hub into <hub dir>/checkpoints.
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"


# ----------------------------------------------------------------------------- input checks


def _check_image_pair(img: object, gt: object) -> tuple[Tensor, Tensor]:
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
    x, y = _check_image_pair(img, gt)  # [B, H, W, C]
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
    x, y = _check_image_pair(img, gt)  # [B, H, W, C]
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


# ----------------------------------------------------------------------------- LPIPS


@dataclass(frozen=True)
class LpipsStatus:
    """Whether LPIPS (AlexNet) can be computed here; ``reason`` says why not (empty when it can)."""

    available: bool
    reason: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def lpips_status() -> LpipsStatus:
    """Check, without constructing the network or downloading anything, that LPIPS (AlexNet) can
    be set up: the ``lpips`` package and torchvision import, the package's linear-layer weights
    (``lpips/weights/v0.1/alex.pth``) exist, and torchvision's AlexNet weights are in the torch hub
    cache (``torch.hub.get_dir()/checkpoints``). ``LpipsMetric`` then builds the model."""
    try:
        if importlib.util.find_spec("lpips") is None:
            return LpipsStatus(False, "lpips package not installed")
    except Exception as exc:  # a broken install can fail while being located
        return LpipsStatus(False, f"lpips package cannot be located: {_first_line(exc)}")
    try:
        importlib.import_module("torchvision")
    except ModuleNotFoundError:
        return LpipsStatus(False, "torchvision not installed (the lpips package needs it)")
    except Exception as exc:
        return LpipsStatus(False, f"torchvision fails to import: {_first_line(exc)}")
    try:
        lpips_mod = importlib.import_module("lpips")
    except Exception as exc:
        return LpipsStatus(False, f"lpips package fails to import: {_first_line(exc)}")
    pkg_file = getattr(lpips_mod, "__file__", None)
    if not pkg_file:
        return LpipsStatus(False, "lpips package has no __file__; cannot locate its weights")
    linear = Path(pkg_file).resolve().parent / "weights" / "v0.1" / "alex.pth"
    if not linear.is_file():
        return LpipsStatus(False, f"LPIPS linear-layer weights not found at {linear}")
    alexnet = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS_FILE
    if not alexnet.is_file():
        return LpipsStatus(False, f"AlexNet weights not in {alexnet} (no download at run time)")
    return LpipsStatus(True, "")


class LpipsMetric:
    """LPIPS (AlexNet, v0.1) between images in [0, 1]; lower is more similar.

    Construction never downloads: it checks :func:`lpips_status` first and builds the model only
    when everything is on disk. Check ``available`` (and ``reason``) before calling; calling an
    unavailable metric raises ``RuntimeError`` rather than returning a number.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._model: torch.nn.Module | None = None
        status = lpips_status()
        if status.available:
            try:
                lpips_mod = importlib.import_module("lpips")
                model = lpips_mod.LPIPS(net="alex", pretrained=True, verbose=False)
                model = model.eval().to(self.device)
                for p in model.parameters():
                    p.requires_grad_(False)
                self._model = model
            except Exception as exc:
                status = LpipsStatus(False, f"LPIPS model construction failed: {_first_line(exc)}")
        self.status = status

    @property
    def available(self) -> bool:
        """True when the model is built and calls return real LPIPS values."""
        return self.status.available

    @property
    def reason(self) -> str:
        """Why LPIPS is unavailable ("" when available)."""
        return self.status.reason

    def __call__(self, img: Tensor, gt: Tensor) -> Tensor:
        """Mean LPIPS over the batch (0-d tensor, no gradient). ``img``, ``gt``: ``[H, W, 3]`` or
        ``[B, H, W, 3]`` in [0, 1]."""
        if self._model is None:
            raise RuntimeError(f"LPIPS unavailable: {self.status.reason}")
        x, y = _check_image_pair(img, gt)  # [B, H, W, C]
        if x.shape[-1] != 3:
            raise InputError(f"img: expected 3 channels (RGB) for LPIPS, got shape {tuple(img.shape)}")
        # NCHW in [-1, 1], as lpips.LPIPS expects.
        x = x.to(device=self.device, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1  # [B, 3, H, W]
        y = y.to(device=self.device, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1  # [B, 3, H, W]
        with torch.no_grad():
            d = self._model(x, y)  # [B, 1, 1, 1]
        return d.flatten().mean()


# ----------------------------------------------------------------------------- speed, storage


@dataclass(frozen=True)
class FpsResult:
    """Render speed over ``repeats`` timed passes of ``frames`` frames each (medians over passes)."""

    fps: float
    median_ms_per_frame: float
    repeats: int
    frames: int
    pass_seconds: tuple[float, ...]  # wall time of each timed pass


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure_fps(render: Callable[[int], object], n: int, *, warmup: int = 2, repeats: int = 3) -> FpsResult:
    """Time ``render(i)`` for ``i in range(n)``: ``warmup`` untimed passes over all ``n`` cameras,
    then ``repeats`` timed passes (``time.perf_counter``; CUDA is synchronised before and after
    each pass when it is initialised). ``fps`` is ``1000 / median_ms_per_frame``."""
    for name, value, low in (("n", n, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name}: expected an int >= {low}, got {value!r}")
    if not callable(render):
        raise InputError(f"render: expected a callable taking a camera index, got {type(render).__name__}")
    for _ in range(warmup):
        for i in range(n):
            render(i)
    _sync()
    passes: list[float] = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        for i in range(n):
            render(i)
        _sync()
        passes.append(time.perf_counter() - t0)
    ms = statistics.median(passes) * 1000.0 / n
    fps = 1000.0 / ms if ms > 0 else math.inf
    return FpsResult(fps=fps, median_ms_per_frame=ms, repeats=repeats, frames=n, pass_seconds=tuple(passes))


def storage_mb(num_bytes: int) -> float:
    """Storage in "MB" as the 3DGS literature reports it: ``num_bytes / 2**20`` (i.e. MiB)."""
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, numbers.Integral) or num_bytes < 0:
        raise InputError(f"num_bytes: expected an int >= 0, got {num_bytes!r}")
    return int(num_bytes) / 2**20
