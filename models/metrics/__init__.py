"""Evaluation metrics in one place: image fidelity (PSNR, SSIM, LPIPS/FID hooks) and depth error.

``models.metrics.image`` holds the image metrics, ``models.metrics.depth`` the monocular-depth
metrics (AbsRel, RMSE, delta<1.25). The common names are re-exported here.
"""

from models.metrics.depth import depth_metrics
from models.metrics.image import PerceptualMetrics, psnr, ssim, ssim_map

__all__ = ["PerceptualMetrics", "depth_metrics", "psnr", "ssim", "ssim_map"]
