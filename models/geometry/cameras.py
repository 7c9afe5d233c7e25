"""The camera convention of Loci, and every conversion out of it.

Convention (see DESIGN.md): OpenCV cameras (x right, y down, z forward), poses as ``c2w``
(camera-to-world, 4x4), ``w2c`` only where a library wants view matrices, ``K`` 3x3 in pixels for
the image size it is stored with, depth is z-depth in metres. Nothing else in the code base
converts between conventions: OpenGL/nerfstudio, glTF (Y-up), USD/MuJoCo (Z-up) all live here.

Functions on points accept numpy arrays or torch tensors (the arithmetic is the same); functions on
poses work on numpy float64 arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# OpenCV camera axes -> OpenGL camera axes (x right, y up, z backward). Its own inverse.
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
DEFAULT_HFOV_DEG = 60.0
# A full-frame sensor is 36 mm wide: the reference of EXIF's FocalLengthIn35mmFilm.
FULL_FRAME_WIDTH_MM = 36.0


class CameraError(ValueError):
    """A camera, intrinsics or pose that cannot be used (NaN, singular, wrong shape)."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: intrinsics for an image size, and its camera-to-world pose.

    Attributes:
        K: (3, 3) float64, pixels, for an image of ``width`` x ``height``.
        c2w: (4, 4) float64, OpenCV axes.
        width, height: image size in pixels.
    """

    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    _w2c: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        c2w = np.asarray(self.c2w, dtype=np.float64)
        if K.shape != (3, 3) or c2w.shape != (4, 4):
            raise CameraError(f"K must be 3x3 and c2w 4x4, got {K.shape} and {c2w.shape}")
        if not (np.isfinite(K).all() and np.isfinite(c2w).all()):
            raise CameraError("camera contains NaN or infinite values")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraError("focal lengths must be positive")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise CameraError(f"image size must be positive, got {self.width}x{self.height}")
        R = c2w[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise CameraError("c2w rotation is not a proper rotation (orthonormal, det +1)")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "_w2c", invert_pose(c2w))

    @property
    def w2c(self) -> np.ndarray:
        """(4, 4) world-to-camera (view matrix)."""
        return self._w2c

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return self.c2w[:3, 3].copy()

    @property
    def forward(self) -> np.ndarray:
        """(3,) unit viewing direction (camera +z) in world coordinates."""
        return self.c2w[:3, 2].copy()

    def resized(self, width: int, height: int) -> Camera:
        """The same camera for an image resized to ``width`` x ``height``."""
        K = scale_intrinsics(self.K, (self.width, self.height), (width, height))
        return Camera(K, self.c2w, width, height)

    def with_pose(self, c2w: np.ndarray) -> Camera:
        return Camera(self.K, c2w, self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return {"K": self.K.tolist(), "c2w": self.c2w.tolist()}


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (c2w <-> w2c), exact for rotations."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def relative_pose(c2w_src: np.ndarray, c2w_tgt: np.ndarray) -> np.ndarray:
    """(4, 4) float64 source-camera -> target-camera transform ``inv(c2w_tgt) @ c2w_src``.

    Composed in float64, so an identity motion is exactly the identity (a revisited pose
    reproduces its frame bit for bit).
    """
    return np.linalg.inv(np.asarray(c2w_tgt, np.float64)) @ np.asarray(c2w_src, np.float64)


# ---------------------------------------------------------------------------------------------
# Intrinsics


def intrinsics_from_fov(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """K for a centred pinhole with square pixels and horizontal field of view ``hfov_deg``."""
    if not 1.0 < hfov_deg < 179.0:
        raise CameraError(f"field of view must be between 1 and 179 degrees, got {hfov_deg}")
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def intrinsics_from_exif(
    width: int,
    height: int,
    focal_35mm: float | None = None,
    focal_mm: float | None = None,
    sensor_width_mm: float | None = None,
) -> np.ndarray | None:
    """K from EXIF focal length, or None when EXIF does not determine it.

    ``focal_35mm`` (FocalLengthIn35mmFilm) refers to a 36 mm wide frame along the long image side;
    ``focal_mm`` needs the sensor width to mean anything.
    """
    long_side = max(width, height)
    f_px = None
    if focal_35mm and focal_35mm > 0:
        f_px = focal_35mm / FULL_FRAME_WIDTH_MM * long_side
    elif focal_mm and focal_mm > 0 and sensor_width_mm and sensor_width_mm > 0:
        f_px = focal_mm / sensor_width_mm * long_side
    if f_px is None or not math.isfinite(f_px):
        return None
    # Reject nonsense EXIF (e.g. focal of 1 mm on a 35 mm scale): keep fov within 10..150 degrees.
    hfov = 2 * math.degrees(math.atan(width / (2 * f_px)))
    if not 10.0 <= hfov <= 150.0:
        return None
    return np.array(
        [[f_px, 0.0, (width - 1) / 2.0], [0.0, f_px, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def scale_intrinsics(
    K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
) -> np.ndarray:
    """K for the same camera after resizing the image from (width, height) to (width, height).

    Pixel centres sit at integer coordinates (OpenCV), so the principal point maps as
    (c + 0.5) * s - 0.5.
    """
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 1] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def fov_degrees(K: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """(horizontal, vertical) field of view in degrees."""
    return (
        2 * math.degrees(math.atan(width / (2 * K[0, 0]))),
        2 * math.degrees(math.atan(height / (2 * K[1, 1]))),
    )


# ---------------------------------------------------------------------------------------------
# Points


def transform_points(T: Any, xyz: Any) -> Any:
    """Apply a 4x4 rigid transform to points (..., 3). numpy or torch, same type out."""
    return xyz @ T[:3, :3].T + T[:3, 3]


def pixel_grid(width: int, height: int, xp: Any = np) -> tuple[Any, Any]:
    """Pixel coordinates u (H, W), v (H, W), float32.

    OpenCV's convention: pixel (x, y) has its centre at (x, y), as cv2.projectPoints assumes.
    ``xp`` is numpy or torch.
    """
    if xp is np:
        v, u = np.mgrid[0:height, 0:width].astype(np.float32)
        return u, v
    v, u = xp.meshgrid(
        xp.arange(height, dtype=xp.float32), xp.arange(width, dtype=xp.float32), indexing="ij"
    )
    return u, v


def unproject_depth(depth: Any, K: Any) -> Any:
    """Camera-frame points (H, W, 3) from a z-depth map (H, W) in metres. numpy or torch."""
    H, W = depth.shape
    if isinstance(depth, np.ndarray):
        u, v = pixel_grid(W, H)
        stack = np.stack
    else:
        import torch

        u, v = pixel_grid(W, H, torch)
        stack = torch.stack
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    x = (u - cx) / fx * depth
    y = (v - cy) / fy * depth
    return stack([x, y, depth], -1)


def project_points(xyz_cam: Any, K: Any) -> tuple[Any, Any]:
    """Pixel coordinates (..., 2) and z-depth (...) of camera-frame points (..., 3).

    Points behind the camera get z <= 0; callers mask them. Matches cv2.projectPoints
    (no distortion) in front of the camera.
    """
    z = xyz_cam[..., 2]
    zs = z.clamp(min=1e-8) if not isinstance(z, np.ndarray) else np.maximum(z, 1e-8)
    u = xyz_cam[..., 0] / zs * float(K[0, 0]) + float(K[0, 2])
    v = xyz_cam[..., 1] / zs * float(K[1, 1]) + float(K[1, 2])
    if isinstance(z, np.ndarray):
        return np.stack([u, v], -1), z
    import torch

    return torch.stack([u, v], -1), z


# ---------------------------------------------------------------------------------------------
# Poses


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV c2w at ``eye`` looking at ``target``; ``up`` is the world up (camera -y)."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    n = np.linalg.norm(z)
    if n < 1e-12:
        raise CameraError("look_at: eye and target coincide")
    z /= n
    up = np.asarray(up, dtype=np.float64)
    x = np.cross(-up, z)  # right = down x forward (camera y points down, along -up)
    if np.linalg.norm(x) < 1e-9:
        raise CameraError("look_at: viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3, 3) taking direction ``a`` to direction ``b``."""
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1 + 1e-12:  # opposite: rotate pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0, 0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def axis_angle(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation (3, 3) about ``axis`` by ``angle_rad`` (right hand)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * K + (1 - math.cos(angle_rad)) * K @ K


def rotmat_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_wxyz_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# ---------------------------------------------------------------------------------------------
# Conversions to other conventions (the only place they happen)


def opencv_to_opengl_c2w(c2w: np.ndarray) -> np.ndarray:
    """OpenCV c2w -> OpenGL/nerfstudio/Blender c2w (camera looks along -z, y up). Same world."""
    return np.asarray(c2w, dtype=np.float64) @ CV_TO_GL


def opencv_to_corner_intrinsics(K: np.ndarray) -> np.ndarray:
    """K for tools whose pixel centres sit at +0.5 (COLMAP, nerfstudio; the image's top-left
    corner is (0, 0)): the same camera, with the principal point moved by half a pixel.

    OpenCV (and Loci) put the centre of the top-left pixel at (0, 0), so a point seen at pixel
    (u, v) here is at (u + 0.5, v + 0.5) there: cx' = cx + 0.5, cy' = cy + 0.5.
    """
    out = np.array(K, dtype=np.float64)
    out[0, 2] += 0.5
    out[1, 2] += 0.5
    return out


def opengl_to_opencv_c2w(c2w_gl: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opencv_to_opengl_c2w`."""
    return np.asarray(c2w_gl, dtype=np.float64) @ CV_TO_GL


def _horizontal(v: np.ndarray, up: np.ndarray) -> np.ndarray:
    h = v - np.dot(v, up) * up
    n = np.linalg.norm(h)
    return h / n if n > 1e-9 else h


def world_to_zup(up: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """4x4 rotation taking Loci world coordinates to a Z-up frame (USD, MuJoCo, Isaac Sim).

    ``up`` (the world's up vector) maps to +Z; the horizontal part of ``forward`` (default: the
    first camera's viewing direction, world +z) maps to +Y, so the seed photo looks down +Y.
    """
    up = np.asarray(up, float) / np.linalg.norm(up)
    fwd = _horizontal(np.asarray([0.0, 0, 1] if forward is None else forward, float), up)
    if np.linalg.norm(fwd) < 1e-9:  # looking straight up/down: any horizontal axis will do
        fwd = _horizontal(np.array([1.0, 0, 0]), up)
        if np.linalg.norm(fwd) < 1e-9:
            fwd = _horizontal(np.array([0.0, 1, 0]), up)
    right = np.cross(fwd, up)
    M = np.eye(4)
    M[:3, :3] = np.stack([right, fwd, up])  # rows: new X, Y, Z expressed in the old frame
    return M


def world_to_gltf(up: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """4x4 rotation taking Loci world coordinates to glTF's Y-up frame (+Y up, seed looks at -Z)."""
    zup = world_to_zup(up, forward)
    # Z-up (X right, Y forward, Z up) -> Y-up (X right, Y up, Z backward)
    zup_to_yup = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    return zup_to_yup @ zup


def c2w_for_zup_camera(
    c2w: np.ndarray, up: np.ndarray, forward: np.ndarray | None = None
) -> np.ndarray:
    """OpenCV c2w -> camera transform in the Z-up frame with OpenGL camera axes (USD, MuJoCo)."""
    return world_to_zup(up, forward) @ np.asarray(c2w, float) @ CV_TO_GL


def c2w_for_gltf_camera(
    c2w: np.ndarray, up: np.ndarray, forward: np.ndarray | None = None
) -> np.ndarray:
    """OpenCV c2w -> glTF camera node transform (Y-up world, camera looks along -Z)."""
    return world_to_gltf(up, forward) @ np.asarray(c2w, float) @ CV_TO_GL


def spz_to_gltf(up: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """4x4 taking points as an ``.spz`` file stores them (RUB: our world with y and z flipped)
    to the glTF Y-up frame of :func:`world_to_gltf`: what a browser viewer applies to the splats
    so that they sit in the same gravity-aligned frame as the mesh and the cameras."""
    return world_to_gltf(up, forward) @ CV_TO_GL


def gl_projection(
    K: np.ndarray, width: int, height: int, near: float = 0.01, far: float = 1000.0
) -> np.ndarray:
    """OpenGL/three.js projection matrix (4x4, camera looks along -z) that draws exactly what the
    OpenCV intrinsics ``K`` see in a ``width`` x ``height`` image, principal point included.

    OpenCV puts pixel centres at integers (the image spans -0.5..W-0.5), so the image edge at
    NDC -1 is pixel -0.5; NDC y points up while pixel rows go down.
    """
    K = np.asarray(K, dtype=np.float64)
    if not (0 < near < far):
        raise CameraError(f"need 0 < near < far, got near={near}, far={far}")
    fx, fy = K[0, 0], K[1, 1]
    cx, cy = K[0, 2] + 0.5, K[1, 2] + 0.5
    return np.array(
        [
            [2 * fx / width, 0.0, 1 - 2 * cx / width, 0.0],
            [0.0, 2 * fy / height, 2 * cy / height - 1, 0.0],
            [0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )
