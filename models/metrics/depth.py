"""Standard monocular-depth error metrics (Eigen et al. 2014), with optional median scaling."""

from __future__ import annotations

import numpy as np

from models.depth.base import DepthError


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    median_scale: bool = True,
) -> dict[str, float]:
    """Compare a predicted depth map with ground truth.

    Args:
        pred: (H, W) predicted depth, metres (or any unit when ``median_scale``).
        gt: (H, W) ground-truth depth; pixels that are 0 or non-finite are ignored.
        valid: optional (H, W) bool mask of pixels to evaluate (ANDed with gt/pred validity).
        median_scale: multiply pred by median(gt) / median(pred) over valid pixels first,
            which removes the unknown global scale of monocular estimates.

    Returns:
        dict with abs_rel (mean |p - g| / g), rmse (metres), delta1 (fraction with
        max(p/g, g/p) < 1.25), n_pixels and scale (the factor applied to pred; 1.0 if none).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise DepthError(f"pred and gt must be 2-D of the same shape, got {pred.shape}, {gt.shape}")
    mask = np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != gt.shape:
            raise DepthError(f"valid mask shape {valid.shape} does not match {gt.shape}")
        mask &= valid
    n = int(mask.sum())
    if n == 0:
        raise DepthError("no valid pixels to compare (ground truth empty or all masked)")
    p, g = pred[mask], gt[mask]
    scale = float(np.median(g) / np.median(p)) if median_scale else 1.0
    p = p * scale
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "n_pixels": n,
        "scale": scale,
    }
