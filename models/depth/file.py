"""User-provided depth: a ``.npy`` of metres or a 16-bit PNG (raw / ``scale`` = metres).

Common PNG scales: 1000 (NYU, millimetres; the default), 5000 (TUM RGB-D), 256 (KITTI).
Pixels that are 0 or not finite are invalid: they get confidence 0 and are filled from their
nearest valid neighbour so that depth stays > 0 everywhere (as the pipeline expects).

Sensor depth is noisy (a Kinect's is quantised in disparity: centimetre steps and speckle at
1-3 m). Warped to an oblique view, that noise moves each pixel's back-projection by a
fraction of a pixel to several pixels, and the routed view turns to speckle (on the TUM
sequence the routed pixels held 1.6-9x the real frame's gradient energy). So the backend
smooths it with an edge-preserving (bilateral) filter whose range sigma is a few centimetres:
steps larger than a few sigma (object boundaries) stay sharp; :func:`denoise_sensor_depth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from models.depth.base import DepthError, DepthResult, check_inputs
from models.geometry.cameras import unproject_depth

DEFAULT_PNG_SCALE = 1000.0
# Range sigma (metres) of the bilateral filter on sensor depth. Tuned on TUM fr3 frames 1..8
# (0.05-0.1 m and a disparity-space sigma did about equally well); depth steps above ~0.15 m
# keep their edge.
DENOISE_SIGMA_M = 0.05
DENOISE_DIAMETER = 7  # pixels at the working size (a 7x7 window, spatial sigma 3 px)


def load_depth_file(path: str | Path, scale: float | None = None) -> np.ndarray:
    """(H, W) float32 metres from ``.npy`` (metres) or 16-bit ``.png`` (value / scale).

    Invalid pixels are returned as 0. Raises DepthError with a plain-language reason.
    """
    path = Path(path)
    if not path.is_file():
        raise DepthError(f"depth file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DepthError(f"could not read depth file {path} as a numpy array: {exc}") from exc
        depth = np.asarray(raw, dtype=np.float64)
        if scale is not None:
            depth = depth / float(scale)
    elif suffix == ".png":
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DepthError(f"could not read depth file {path} as a PNG image")
        if raw.dtype != np.uint16:
            raise DepthError(
                f"depth PNG {path.name} is {raw.dtype}, expected 16-bit (uint16) depth; "
                "8-bit PNGs cannot hold metric depth"
            )
        s = DEFAULT_PNG_SCALE if scale is None else float(scale)
        if not s > 0:
            raise DepthError(f"depth scale must be positive, got {scale}")
        depth = raw.astype(np.float64) / s
    else:
        raise DepthError(f"unsupported depth file type {suffix!r} ({path.name}); use .npy or .png")
    if depth.ndim != 2:
        raise DepthError(
            f"depth in {path.name} must be a 2-D (height x width) map, got shape {depth.shape}"
        )
    finite = np.isfinite(depth)
    if (depth[finite] < 0).any():
        raise DepthError(f"depth in {path.name} has negative values; depth must be >= 0 metres")
    depth = np.where(finite, depth, 0.0)
    if not (depth > 0).any():
        raise DepthError(f"depth in {path.name} has no valid pixels (all zero or not finite)")
    return depth.astype(np.float32)


def fill_invalid(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) copy of ``depth`` where each invalid pixel takes its nearest valid neighbour's value."""
    if valid.all():
        return depth.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return depth[iy, ix]


def denoise_sensor_depth(
    depth: np.ndarray, valid: np.ndarray, sigma_m: float = DENOISE_SIGMA_M
) -> np.ndarray:
    """(H, W) float32 ``depth`` (metres, > 0 everywhere) with sensor noise smoothed by a
    bilateral filter of range sigma ``sigma_m`` metres; pixels outside ``valid`` (H, W) bool
    keep their value. Neighbours across a depth step much larger than ``sigma_m`` get
    ~zero weight, so object boundaries do not blur (no points floating between two surfaces).
    """
    if sigma_m <= 0:
        return depth
    d = np.ascontiguousarray(depth, np.float32)
    smooth = cv2.bilateralFilter(d, DENOISE_DIAMETER, float(sigma_m), 3.0)
    return np.where(valid, smooth, d).astype(np.float32)


def up_from_depth(
    depth: np.ndarray, K: np.ndarray, valid: np.ndarray, seed: int = 0
) -> np.ndarray | None:
    """World-up (3,) in the camera frame from the dominant floor-like plane, or None.

    RANSAC on a subsample of 3-D points; a plane counts as floor when its normal is within 35
    degrees of the camera's -y axis and the camera is above it. Deterministic for a seed.
    """
    pts = unproject_depth(depth.astype(np.float64), K)[valid]
    if len(pts) < 100:
        return None
    rng = np.random.default_rng(seed)
    pts = pts[rng.choice(len(pts), min(len(pts), 4000), replace=False)]
    thr = 0.02 * float(np.median(pts[:, 2]))
    best_n, best_count = None, 0
    for _ in range(200):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            continue
        n /= norm
        if n[1] > 0:
            n = -n
        d = -float(n @ a)  # plane n.x + d = 0; camera (origin) is above the floor when d > 0
        if -n[1] < np.cos(np.radians(35.0)) or d <= 0:
            continue
        count = int((np.abs(pts @ n + d) < thr).sum())
        if count > best_count:
            best_n, best_count = n, count
    if best_n is None or best_count < 0.05 * len(pts):
        return None
    return best_n


class FileDepth:
    """Depth read from a file (sensor, another tool); resized to the photo with NEAREST."""

    name = "file"

    def __init__(
        self,
        path: str | Path | None = None,
        scale: float | None = None,
        denoise: float = DENOISE_SIGMA_M,
    ) -> None:
        """``denoise``: range sigma (metres) of the edge-preserving filter against sensor
        noise (:func:`denoise_sensor_depth`); 0 keeps the file's values as they are."""
        if path is None:
            raise DepthError("the 'file' depth backend needs path=... (a .npy or 16-bit .png)")
        self.path = Path(path)
        self.scale = scale
        self.denoise = float(denoise)

    def estimate(self, rgb: np.ndarray, K: np.ndarray) -> DepthResult:
        """Depth (H, W) for ``rgb`` (H, W, 3); ``K`` (3, 3) is used to estimate up."""
        rgb, K = check_inputs(rgb, K)
        H, W = rgb.shape[:2]
        depth = load_depth_file(self.path, self.scale)
        src_size = [int(depth.shape[1]), int(depth.shape[0])]
        if depth.shape != (H, W):
            # NEAREST: interpolating across a depth edge invents points floating in between.
            depth = cv2.resize(depth, (W, H), interpolation=cv2.INTER_NEAREST)
        valid = depth > 0
        if not valid.any():
            raise DepthError(f"depth in {self.path.name} has no valid pixels after resizing")
        up = up_from_depth(depth, K, valid)
        meta: dict[str, Any] = {
            "path": str(self.path),
            "source_size": src_size,
            "valid_fraction": float(valid.mean()),
            "up_source": "floor-plane-ransac" if up is not None else "unknown",
            "denoise_sigma_m": self.denoise,
        }
        return DepthResult(
            depth=denoise_sensor_depth(fill_invalid(depth, valid), valid, self.denoise),
            confidence=valid.astype(np.float32),
            up_cam=up,
            scale_policy="sensor",
            meta=meta,
        )
