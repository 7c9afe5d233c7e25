"""Dataset exports of a world bundle for outside tools: nerfstudio and COLMAP (text).

Layouts (``out_dir`` is created whole or not at all: built in a hidden sibling, then renamed)::

    nerfstudio:  out_dir/transforms.json, out_dir/images/frame_NNNNN.png, out_dir/sparse_pc.ply
    COLMAP:      out_dir/images/frame_NNNNN.png, out_dir/sparse/0/{cameras,images,points3D}.txt

Both keep the bundle's world frame; poses are converted only through :mod:`models.geometry.cameras`
(OpenGL c2w for nerfstudio, w2c quaternions for COLMAP). Both tools put pixel centres at +0.5,
so their principal point is half a pixel right of and below OpenCV's
(:func:`~models.geometry.cameras.opencv_to_corner_intrinsics`). Every frame image is decoded
before it is copied: a damaged one stops the export with a one-line error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.geometry.cameras import (
    invert_pose,
    opencv_to_corner_intrinsics,
    opencv_to_opengl_c2w,
    rotmat_to_quat_wxyz,
)
from storage.errors import StorageError
from storage.formats.bundle import BundleInfo, read_bundle
from storage.formats.datasets import write_colmap_text, write_nerfstudio_transforms
from storage.formats.images import load_image_rgb
from storage.formats.ply import read_pointcloud_ply

__all__ = ["export_colmap", "export_nerfstudio", "staging_dir"]


@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; on success it replaces ``out_dir``.

    An existing non-empty ``out_dir`` is refused unless ``overwrite``; on any error the staging
    folder is deleted and ``out_dir`` is untouched (no partial export is ever visible).
    """
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise StorageError(
            f"{out} already exists and is not an empty folder; choose another output folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:10]}")
    temp.mkdir()
    try:
        yield temp
        aside = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:10]}")
        if out.exists():
            os.replace(out, aside)
        try:
            os.replace(temp, out)
        except BaseException:
            if aside.exists():
                os.replace(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _copy_frames(bundle: BundleInfo, images_dir: Path) -> list[str]:
    """Copy the frame PNGs (byte for byte) as images/frame_NNNNN.png; return the names."""
    images_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i in bundle.indices:
        name = f"frame_{i:05d}.png"
        src = bundle.path(bundle.frame(i)["rgb"])
        if not src.is_file():
            raise StorageError(f"the world is incomplete: frame image {src} is missing")
        load_image_rgb(src)  # a damaged or truncated PNG stops here (PhotoError), not downstream
        shutil.copyfile(src, images_dir / name)
        names.append(name)
    return names


def _poses(bundle: BundleInfo) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV c2w (N, 4, 4) and pixel-corner K (N, 3, 3) of every frame, validated."""
    c2ws = np.stack([bundle.c2w(i) for i in bundle.indices])
    Ks = np.stack([opencv_to_corner_intrinsics(bundle.K(i)) for i in bundle.indices])
    if not (np.isfinite(c2ws).all() and np.isfinite(Ks).all()):
        raise StorageError("the world has cameras with NaN or infinite values; cannot export")
    return c2ws, Ks


def export_nerfstudio(
    bundle_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write a nerfstudio dataset folder (see module docstring); returns transforms.json's path.

    The fused ``pointcloud.ply`` (same world frame) is copied as ``sparse_pc.ply`` and referenced
    by ``ply_file_path`` when the bundle has one.
    """
    bundle = read_bundle(bundle_dir)
    c2ws, Ks = _poses(bundle)
    with staging_dir(out_dir, overwrite) as temp:
        names = _copy_frames(bundle, temp / "images")
        ply = None
        if bundle.path("pointcloud.ply").is_file():
            shutil.copyfile(bundle.path("pointcloud.ply"), temp / "sparse_pc.ply")
            ply = "sparse_pc.ply"
        write_nerfstudio_transforms(
            temp / "transforms.json",
            np.stack([opencv_to_opengl_c2w(c) for c in c2ws]),
            Ks,
            bundle.width,
            bundle.height,
            [f"images/{n}" for n in names],
            ply_file_path=ply,
            extra={"loci_up": bundle.world.get("up")},
        )
    return Path(out_dir) / "transforms.json"


def export_colmap(
    bundle_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write a COLMAP text model plus images (see module docstring); returns ``out_dir``.

    points3D.txt holds the fused preview cloud (error 0, empty tracks); empty if there is none.
    """
    bundle = read_bundle(bundle_dir)
    c2ws, Ks = _poses(bundle)
    w2cs = np.stack([invert_pose(c) for c in c2ws])
    qvecs = np.stack([rotmat_to_quat_wxyz(w[:3, :3]) for w in w2cs])
    xyz = rgb = None
    if bundle.path("pointcloud.ply").is_file():
        xyz, rgb = read_pointcloud_ply(bundle.path("pointcloud.ply"))
    with staging_dir(out_dir, overwrite) as temp:
        names = _copy_frames(bundle, temp / "images")
        write_colmap_text(
            temp / "sparse" / "0", Ks, bundle.width, bundle.height, names, qvecs, w2cs[:, :3, 3],
            xyz, rgb,
        )  # fmt: skip
    return Path(out_dir)
