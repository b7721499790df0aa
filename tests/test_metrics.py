"""Behaviour of moegs_bench.metrics (PSNR, SSIM, speed, storage) against independent oracles (numpy
formulas, scikit-image); LPIPS: test_lpips.py."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from moegs_bench._checks import InputError
from moegs_bench.metrics import (
    FpsResult,
    dssim,
    measure_fps,
    psnr,
    ssim,
    storage_mb,
)


def _sk_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """The 3DGS evaluation SSIM as scikit-image computes it ([H, W, C] arrays)."""
    return float(
        structural_similarity(
            a,
            b,
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=sigma,
            use_sample_covariance=False,
        )
    )


# ----------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset_is_20_db() -> None:
    gt = torch.full((8, 6, 3), 0.4, dtype=torch.float64)
    assert psnr(gt + 0.1, gt).item() == pytest.approx(20.0, abs=1e-9)


def test_psnr_matches_numpy_formula() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((17, 13, 3))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    expected = 10 * np.log10(1.0 / np.mean((a - b) ** 2))
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(expected, abs=1e-9)
    got32 = psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float()).item()
    assert got32 == pytest.approx(expected, abs=1e-4)


def test_psnr_batch_is_mean_of_per_image_psnr() -> None:
    gt = torch.zeros(2, 4, 5, 3, dtype=torch.float64)
    img = gt.clone()
    img[0] += 0.1  # 20 dB
    img[1] += 0.01  # 40 dB
    # Mean of per-image PSNR (30 dB), not PSNR of the pooled MSE (~23 dB).
    assert psnr(img, gt).item() == pytest.approx(30.0, abs=1e-9)
    assert psnr(img[1], gt[1]).item() == pytest.approx(40.0, abs=1e-9)


def test_psnr_identical_is_inf_and_is_differentiable() -> None:
    x = torch.rand(5, 4, 3)
    assert math.isinf(psnr(x, x.clone()).item())
    img = torch.rand(5, 4, 3, requires_grad=True)
    psnr(img, x).backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()


# ----------------------------------------------------------------------------- SSIM


def _image_pairs(shape: tuple[int, int, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    h, w, c = shape
    rng = np.random.default_rng(h * 1000 + w * 10 + c)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    phase = np.arange(c)[None, None, :]
    smooth = 0.5 + 0.4 * np.sin(6 * xx[..., None] + 4 * yy[..., None] + phase)  # [H, W, C]
    smooth2 = 0.5 + 0.3 * np.cos(5 * xx[..., None] - 3 * yy[..., None] + 2 * phase)
    structured = np.clip(smooth + 0.3 * ((xx * 7).astype(int) % 2)[..., None], 0, 1)
    noisy = np.clip(structured + 0.08 * rng.standard_normal(shape), 0, 1)
    const = np.full(shape, 0.3)
    return {
        "random": (rng.random(shape), rng.random(shape)),
        "smooth": (smooth, smooth2),
        "shifted": (structured, np.roll(structured, (2, 3), axis=(0, 1))),
        "noisy": (noisy, structured),
        "constant": (const, const + 0.2),
    }


SSIM_SHAPES = [(96, 72, 3), (11, 11, 1), (33, 17, 2), (40, 31, 3), (25, 64, 1)]


@pytest.mark.parametrize("shape", SSIM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_ssim_matches_skimage(shape: tuple[int, int, int]) -> None:
    for kind, (a, b) in _image_pairs(shape).items():
        expected = _sk_ssim(a, b)
        got64 = ssim(torch.from_numpy(a), torch.from_numpy(b)).item()
        assert got64 == pytest.approx(expected, abs=1e-9), kind
        # float32: uxx - ux**2 cancels; on flat images the error relative to C2 reaches ~4e-5.
        got32 = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()).item()
        assert got32 == pytest.approx(expected, abs=1e-4), kind


def test_ssim_other_sigma_matches_skimage() -> None:
    # skimage's window for sigma=1.0 is 2 * int(3.5 * 1.0 + 0.5) + 1 = 9 taps.
    a, b = _image_pairs((30, 26, 3))["noisy"]
    expected = _sk_ssim(a, b, sigma=1.0)
    got = ssim(torch.from_numpy(a), torch.from_numpy(b), window_size=9, sigma=1.0).item()
    assert got == pytest.approx(expected, abs=1e-9)


def test_ssim_of_identical_images_is_one() -> None:
    x = torch.rand(20, 15, 3)
    assert ssim(x, x.clone()).item() == pytest.approx(1.0, abs=1e-6)
    assert dssim(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_batch_is_mean_over_images() -> None:
    pairs = list(_image_pairs((24, 19, 3)).values())[:3]
    img = torch.stack([torch.from_numpy(a) for a, _ in pairs])  # [3, H, W, C]
    gt = torch.stack([torch.from_numpy(b) for _, b in pairs])
    expected = np.mean([_sk_ssim(a, b) for a, b in pairs])
    assert ssim(img, gt).item() == pytest.approx(expected, abs=1e-9)
    assert dssim(img, gt).item() == pytest.approx(1 - expected, abs=1e-9)


@pytest.fixture
def one_thread():
    """gradcheck runs ~500 tiny float64 convolutions; with 2 intra-op threads on an oversubscribed
    2-core machine the thread hand-offs, not the arithmetic, dominate (seconds -> a minute)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_ssim_and_dssim_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(12, 10, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    gt = torch.rand(12, 10, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    # Full Jacobian w.r.t. the rendered image (the training gradient) ...
    assert torch.autograd.gradcheck(lambda a: ssim(a, gt.detach(), window_size=7), (img,))
    # ... and random projections (fast mode) w.r.t. both inputs, through dssim = 1 - ssim.
    check = torch.autograd.gradcheck
    assert check(lambda a, b: dssim(a, b, window_size=5, sigma=1.0), (img, gt), fast_mode=True)


def test_dssim_gradient_points_towards_gt() -> None:
    gt = torch.from_numpy(_image_pairs((32, 32, 3))["smooth"][0]).float()
    img = (gt + 0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(3))).requires_grad_()
    loss = dssim(img, gt)
    loss.backward()
    assert img.grad is not None
    with torch.no_grad():
        assert dssim(img - 5.0 * img.grad, gt).item() < loss.item()


# ----------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("fn", [psnr, ssim, dssim], ids=lambda f: f.__name__)
def test_bad_inputs_raise_input_error_naming_the_argument(fn) -> None:
    good = torch.rand(12, 12, 3)
    cases = [
        ((torch.rand(12, 12), good), "img"),  # 2 dims
        ((good, torch.rand(1, 1, 12, 12, 3)), "gt"),  # 5 dims
        ((good, torch.rand(12, 11, 3)), "gt"),  # shape mismatch
        ((good.numpy(), good), "img"),  # not a tensor
        ((good, (good * 255).to(torch.uint8)), "gt"),  # integer dtype
    ]
    for args, name in cases:
        with pytest.raises(InputError, match=rf"^{name}: expected"):
            fn(*args)


def test_ssim_bad_window_raises() -> None:
    x = torch.rand(12, 10, 3)
    with pytest.raises(InputError, match=r"^window_size: 11 exceeds the image extent 12x10"):
        ssim(x, x)
    with pytest.raises(InputError, match=r"^window_size: expected an odd"):
        ssim(x, x, window_size=4)
    with pytest.raises(InputError, match=r"^sigma:"):
        ssim(x, x, window_size=5, sigma=0.0)


# ----------------------------------------------------------------------------- FPS, storage


def test_measure_fps_counts_warmup_and_timed_passes() -> None:
    calls: list[int] = []

    def render(i: int) -> None:
        calls.append(i)
        time.sleep(0.002)

    result = measure_fps(render, 3, warmup=2, repeats=2)
    assert isinstance(result, FpsResult)
    assert calls == [0, 1, 2] * 4  # 2 warm-up + 2 timed passes over 3 cameras
    assert result.frames == 3 and result.repeats == 2 and len(result.pass_seconds) == 2
    assert result.fps * result.median_ms_per_frame == pytest.approx(1000.0)
    # sleep(2 ms) per frame: at most 500 fps; loose lower bound for busy machines.
    assert 500 / 5 < result.fps <= 500 * 1.05
    assert result.median_ms_per_frame >= 2.0

    calls.clear()
    measure_fps(render, 2, warmup=0, repeats=1)
    assert calls == [0, 1]


def test_measure_fps_rejects_bad_arguments() -> None:
    with pytest.raises(InputError, match="^n:"):
        measure_fps(lambda i: None, 0)
    with pytest.raises(InputError, match="^warmup:"):
        measure_fps(lambda i: None, 1, warmup=-1)
    with pytest.raises(InputError, match="^repeats:"):
        measure_fps(lambda i: None, 1, repeats=0)
    with pytest.raises(InputError, match="^render:"):
        measure_fps(None, 1)  # type: ignore[arg-type]


def test_storage_mb_is_mebibytes() -> None:
    assert storage_mb(2**20) == 1.0
    assert storage_mb(3 * 2**19) == 1.5
    assert storage_mb(0) == 0.0
    assert storage_mb(np.int64(2**21)) == 2.0
    with pytest.raises(InputError, match="^num_bytes:"):
        storage_mb(-1)
    with pytest.raises(InputError, match="^num_bytes:"):
        storage_mb(1.5)  # type: ignore[arg-type]
