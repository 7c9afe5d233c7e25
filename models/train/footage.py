"""Posed footage frames as the sample builder sees them: a camera (OpenCV c2w, pixel-centre
convention of OpenCV) and lazy loaders for colour, depth and the trusted-pixel mask.

Readers of the file layouts live in ``storage.train.footage`` and hand over poses as stored;
:func:`footage_camera` turns them into a :class:`Camera` through ``models.geometry.cameras``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.geometry.cameras import (
    Camera,
    invert_pose,
    opengl_to_opencv_c2w,
    quat_wxyz_to_rotmat,
)

POSE_KINDS = ("c2w_opencv", "c2w_opengl", "w2c_colmap", "tum")


class FootageError(ValueError):
    """Footage that cannot become training samples (the message says what to fix)."""


@dataclass
class FootageFrame:
    """One posed frame.

    camera: intrinsics for the image as loaded (width x height) and the c2w pose.
    load_rgb: () -> (H, W, 3) uint8. load_depth: () -> (H, W) float32 metres (0 = unknown) or
    None when the frame has no depth (a depth backend estimates it). load_trust: () -> (H, W) bool
    (True = a real observation; None: every pixel). sparse_xyz: (P, 3) world points seen in
    the frame, or None (they put estimated depth at the footage's scale).
    """

    name: str
    camera: Camera
    load_rgb: Callable[[], np.ndarray]
    load_depth: Callable[[], np.ndarray | None] | None = None
    load_trust: Callable[[], np.ndarray | None] | None = None
    sparse_xyz: np.ndarray | None = None


def _slerp_wxyz(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def tum_c2w(rows: np.ndarray, weight: float) -> np.ndarray:
    """c2w (4, 4) between two TUM ground-truth rows (tx ty tz qx qy qz qw), ``weight`` of the
    way from the first to the second: linear position, spherical rotation."""
    rows = np.asarray(rows, np.float64).reshape(2, 7)
    t = (1 - weight) * rows[0, :3] + weight * rows[1, :3]
    q = _slerp_wxyz(rows[0, [6, 3, 4, 5]], rows[1, [6, 3, 4, 5]], float(weight))
    c2w = np.eye(4)
    c2w[:3, :3] = quat_wxyz_to_rotmat(q)
    c2w[:3, 3] = t
    return c2w


def footage_camera(
    K: np.ndarray,
    width: int,
    height: int,
    pose: str,
    value: np.ndarray,
    pixel_centre: float = 0.0,
    weight: float = 0.0,
) -> Camera:
    """A :class:`Camera` from a pose as a footage format stores it.

    pose: "c2w_opencv" / "c2w_opengl" ((4, 4)), "w2c_colmap" ((7,) qw qx qy qz tx ty tz) or "tum"
    ((2, 7) rows, blended by ``weight``). pixel_centre: where the format puts the first pixel's
    centre (0.5 for COLMAP and nerfstudio): the principal point moves by it to OpenCV's 0.
    """
    value = np.asarray(value, np.float64)
    if pose == "c2w_opencv":
        c2w = value
    elif pose == "c2w_opengl":
        c2w = opengl_to_opencv_c2w(value)
    elif pose == "w2c_colmap":
        w2c = np.eye(4)
        w2c[:3, :3] = quat_wxyz_to_rotmat(value[:4])
        w2c[:3, 3] = value[4:7]
        c2w = invert_pose(w2c)
    elif pose == "tum":
        c2w = tum_c2w(value, weight)
    else:
        raise FootageError(f"unknown pose convention {pose!r}; known: {', '.join(POSE_KINDS)}")
    K = np.asarray(K, np.float64).copy()
    K[0, 2] -= pixel_centre
    K[1, 2] -= pixel_centre
    return Camera(K, c2w, int(width), int(height))
