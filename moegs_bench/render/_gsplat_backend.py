"""gsplat backend (CUDA only), imported lazily so ``moegs_bench`` works without it."""

from __future__ import annotations

from torch import Tensor


def gsplat_status() -> tuple[bool, str]:
    """Whether gsplat can rasterize here, and why (not)."""
    import torch

    try:
        import gsplat
    except Exception as exc:  # pragma: no cover - depends on the machine
        return False, f"gsplat not importable ({type(exc).__name__}: {exc})"
    version = getattr(gsplat, "__version__", "?")
    if not torch.cuda.is_available():
        return False, f"gsplat {version} importable, but no CUDA device (its kernels are CUDA-only)"
    return True, f"gsplat {version} on {torch.cuda.get_device_name()} (CUDA extension built on first use)"


def rasterize_gsplat(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmat: Tensor, K: Tensor, width: int, height: int, *,
    backgrounds: Tensor | None, near_plane: float, far_plane: float, eps2d: float,
    sh_degree: int | None, render_mode: str,
) -> tuple[Tensor, Tensor, dict]:
    from gsplat import rasterization

    colors_out, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, backgrounds=None if backgrounds is None else backgrounds[None],
        render_mode=render_mode, rasterize_mode="classic",
    )
    meta = {"backend": "gsplat", "radii": meta["radii"][0], "means2d": meta["means2d"][0], "depths": meta["depths"][0]}
    return colors_out[0], alphas[0], meta
