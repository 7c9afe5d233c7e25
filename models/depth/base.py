"""Shared types of the depth backends: the result, the protocol, the error.

A depth backend turns one photo into a z-depth map in metres (OpenCV camera: x right, y down,
z forward), a per-pixel confidence, and, when it can tell, the direction of "up" in the camera
frame. See DESIGN.md for the conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


class DepthError(ValueError):
    """Depth could not be produced; the message says why and what to do instead."""


@dataclass
class DepthResult:
    """What every depth backend returns for one photo.

    Attributes:
        depth: (H, W) float32 z-depth in metres, > 0 and finite everywhere (estimators and the
            file backend fill every pixel; unreliable pixels get low ``confidence`` instead).
        confidence: (H, W) float32 in [0, 1]; 0 means "do not trust this pixel at all".
        up_cam: (3,) float64 unit world-up vector in the camera frame (about [0, -1, 0] for a
            level photo), or None when the backend cannot tell.
        scale_policy: how metric scale was set, e.g. "camera-height-1.6m", "sensor".
        meta: JSON-serialisable extras (horizon row, indoor/outdoor guess, timings, ...).
    """

    depth: np.ndarray
    confidence: np.ndarray
    up_cam: np.ndarray | None
    scale_policy: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        depth = np.asarray(self.depth, dtype=np.float32)
        conf = np.asarray(self.confidence, dtype=np.float32)
        if depth.ndim != 2:
            raise DepthError(f"a depth map must be 2-D (height x width), got shape {depth.shape}")
        if conf.shape != depth.shape:
            raise DepthError(
                f"confidence shape {conf.shape} does not match depth shape {depth.shape}"
            )
        self.depth = depth
        self.confidence = np.clip(conf, 0.0, 1.0)
        if self.up_cam is not None:
            up = np.asarray(self.up_cam, dtype=np.float64).reshape(3)
            n = float(np.linalg.norm(up))
            if not np.isfinite(n) or n < 1e-9:
                raise DepthError("the up vector must be a finite, non-zero 3-vector")
            self.up_cam = up / n


@runtime_checkable
class DepthBackend(Protocol):
    """Anything that estimates metric z-depth for a photo."""

    name: str

    def estimate(self, rgb: np.ndarray, K: np.ndarray) -> DepthResult:
        """Depth for ``rgb`` (H, W, 3) uint8 whose intrinsics are ``K`` (3, 3) pixels."""
        ...


def check_inputs(rgb: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a photo and its intrinsics; returns (rgb uint8 (H, W, 3), K float64 (3, 3))."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise DepthError(f"expected an RGB photo of shape (height, width, 3), got {rgb.shape}")
    if rgb.dtype != np.uint8:
        if np.issubdtype(rgb.dtype, np.floating) and rgb.size and float(np.nanmax(rgb)) <= 1.0:
            rgb = np.clip(np.nan_to_num(rgb) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            rgb = np.clip(np.nan_to_num(rgb.astype(np.float64)), 0, 255).astype(np.uint8)
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DepthError("camera intrinsics K must be a finite 3x3 matrix with positive focals")
    return np.ascontiguousarray(rgb), K
