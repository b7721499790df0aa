"""Differentiable Gaussian rasterization: ``rasterize`` and its backends."""

from .api import BackendStatus, backend_status, rasterize
from .sh import eval_sh, sh_basis, sh_to_rgb

__all__ = ["BackendStatus", "backend_status", "eval_sh", "rasterize", "sh_basis", "sh_to_rgb"]
