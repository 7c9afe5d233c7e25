"""Dataset exports for outside reconstruction tools: nerfstudio and COLMAP (text model).

* nerfstudio ``transforms.json``: OpenGL camera-to-world matrices (the caller converts them),
  shared intrinsics ``fl_x fl_y cx cy w h`` with ``camera_model`` "OPENCV" (zero distortion), or
  per-frame intrinsics when frames differ, ``ply_file_path`` to an initial point cloud.
* COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``): PINHOLE cameras, world-
  to-camera poses as a quaternion (qw qx qy qz) and translation, and the POINTS2D line after each
  image line even when empty (COLMAP's reader expects two lines per image).

numpy in, files out; every file is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from storage.atomic import atomic_write_json, atomic_write_text
from storage.errors import StorageError

__all__ = ["write_colmap_text", "write_nerfstudio_transforms"]


def _intrinsics(Ks: np.ndarray, n: int) -> np.ndarray:
    """(N, 3, 3) from one K (3, 3) or per-frame Ks (N, 3, 3)."""
    Ks = np.asarray(Ks, dtype=np.float64)
    if Ks.shape == (3, 3):
        Ks = np.broadcast_to(Ks, (n, 3, 3))
    if Ks.shape != (n, 3, 3) or not np.isfinite(Ks).all():
        raise StorageError(f"intrinsics must be (3, 3) or ({n}, 3, 3), got {Ks.shape}")
    return Ks


def write_nerfstudio_transforms(
    path: str | os.PathLike[str],
    c2ws_opengl: np.ndarray,
    Ks: np.ndarray,
    width: int,
    height: int,
    file_paths: Sequence[str],
    ply_file_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write nerfstudio's ``transforms.json``.

    Args:
        c2ws_opengl: (N, 4, 4) camera-to-world with OpenGL camera axes (x right, y up, z back).
        Ks: (3, 3) shared or (N, 3, 3) per-frame intrinsics in pixels for ``width`` x ``height``,
            with nerfstudio's pixel centres at +0.5 (the caller shifts OpenCV's principal point).
        file_paths: N image paths relative to the transforms.json folder.
        ply_file_path: optional point cloud path (relative) nerfstudio uses to seed splats.
    """
    c2ws = np.asarray(c2ws_opengl, dtype=np.float64)
    n = len(file_paths)
    if c2ws.shape != (n, 4, 4) or not np.isfinite(c2ws).all():
        raise StorageError(f"expected {n} finite 4x4 camera poses, got {c2ws.shape}")
    Ks = _intrinsics(Ks, n)
    shared = bool(np.allclose(Ks, Ks[0], rtol=0, atol=1e-9))

    def intr(K: np.ndarray) -> dict[str, float]:
        return {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}

    zero_dist = {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    doc: dict[str, Any] = {"camera_model": "OPENCV", "w": int(width), "h": int(height)}
    if shared:
        doc.update(intr(Ks[0]))
    doc.update(zero_dist)
    frames = []
    for i, name in enumerate(file_paths):
        frame: dict[str, Any] = {"file_path": str(name), "transform_matrix": c2ws[i].tolist()}
        if not shared:
            frame.update(intr(Ks[i]))
        frames.append(frame)
    doc["frames"] = frames
    if ply_file_path is not None:
        doc["ply_file_path"] = str(ply_file_path)
    doc.update(extra or {})
    return atomic_write_json(path, doc)


def write_colmap_text(
    out_dir: str | os.PathLike[str],
    Ks: np.ndarray,
    width: int,
    height: int,
    image_names: Sequence[str],
    qvecs_wxyz: np.ndarray,
    tvecs: np.ndarray,
    points_xyz: np.ndarray | None = None,
    points_rgb: np.ndarray | None = None,
) -> Path:
    """Write ``cameras.txt``, ``images.txt`` and ``points3D.txt`` into ``out_dir``.

    Args:
        Ks: (3, 3) shared (one camera) or (N, 3, 3) per image (one camera each unless equal),
            with COLMAP's pixel centres at +0.5 (the caller shifts OpenCV's principal point).
        image_names: N names relative to COLMAP's image folder.
        qvecs_wxyz: (N, 4) world-to-camera rotations as unit quaternions (w, x, y, z).
        tvecs: (N, 3) world-to-camera translations (OpenCV axes, COLMAP's convention).
        points_xyz, points_rgb: (P, 3) float world points and (P, 3) uint8 colours; each is
            written with error 0 and an empty track (they come from depth, not triangulation).
    """
    n = len(image_names)
    q = np.asarray(qvecs_wxyz, dtype=np.float64)
    t = np.asarray(tvecs, dtype=np.float64)
    if (
        q.shape != (n, 4)
        or t.shape != (n, 3)
        or not (np.isfinite(q).all() and np.isfinite(t).all())
    ):
        raise StorageError(f"expected ({n}, 4) quaternions and ({n}, 3) translations")
    if any(" " in name or "\n" in name for name in image_names):
        raise StorageError("COLMAP image names cannot contain spaces or line breaks")
    Ks = _intrinsics(Ks, n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # One camera per distinct K (usually a single one): COLMAP shares intrinsics by camera id.
    cam_ids: list[int] = []
    cameras: list[np.ndarray] = []
    for K in Ks:
        for j, other in enumerate(cameras):
            if np.allclose(K, other, rtol=0, atol=1e-9):
                cam_ids.append(j + 1)
                break
        else:
            cameras.append(K)
            cam_ids.append(len(cameras))
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]  # fmt: skip
    for j, K in enumerate(cameras):
        params = " ".join(repr(float(x)) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        lines.append(f"{j + 1} PINHOLE {int(width)} {int(height)} {params}")
    atomic_write_text(out / "cameras.txt", "\n".join(lines) + "\n")

    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {n}, mean observations per image: 0"]  # fmt: skip
    for i, name in enumerate(image_names):
        pose = " ".join(repr(float(x)) for x in (*q[i], *t[i]))
        lines.append(f"{i + 1} {pose} {cam_ids[i]} {name}")
        lines.append("")  # POINTS2D: none, but the line must exist
    atomic_write_text(out / "images.txt", "\n".join(lines) + "\n")

    xyz = np.zeros((0, 3)) if points_xyz is None else np.asarray(points_xyz, dtype=np.float64)
    rgb = np.zeros((0, 3), np.uint8) if points_rgb is None else np.asarray(points_rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape or not np.isfinite(xyz).all():
        raise StorageError("points must be finite (P, 3) with (P, 3) uint8 colours")
    header = ["# 3D point list with one line of data per point:",
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
              f"# Number of points: {len(xyz)}, mean track length: 0"]  # fmt: skip
    body = [
        f"{k + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0"
        for k, (p, c) in enumerate(zip(xyz.tolist(), rgb.astype(int).tolist(), strict=True))
    ]
    atomic_write_text(out / "points3D.txt", "\n".join(header + body) + "\n")
    return out
