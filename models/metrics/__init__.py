"""Evaluation metrics in one place: image fidelity (PSNR, SSIM, LPIPS/FID hooks), texture
(patch-distribution distance, gradient-energy ratio) and depth error.

``models.metrics.image`` holds the image metrics, ``models.metrics.texture`` the weight-free
texture metrics, ``models.metrics.depth`` the monocular-depth metrics (AbsRel, RMSE,
delta<1.25). The common names are re-exported here.
"""

from models.metrics.depth import depth_metrics
from models.metrics.image import PerceptualMetrics, psnr, ssim, ssim_map
from models.metrics.texture import gradient_energy_ratio, masked_swd

__all__ = [
    "PerceptualMetrics",
    "depth_metrics",
    "gradient_energy_ratio",
    "masked_swd",
    "psnr",
    "ssim",
    "ssim_map",
]
