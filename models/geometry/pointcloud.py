"""Fused preview point clouds from per-frame geometry (for previews and exports only).

Memory itself is never fused; this builds the ``pointcloud.ply`` of the world bundle and the
studio's previews: every frame's pixels are unprojected, and a voxel grid keeps one averaged
point per occupied voxel, so the cloud's size is bounded by the scene, not the frame count.
"""

from __future__ import annotations

import numpy as np

from models.geometry.cameras import Camera, transform_points, unproject_depth


def frame_points(
    rgb: np.ndarray, depth: np.ndarray, camera: Camera, stride: int = 2, max_depth: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) float32 and colours (N, 3) uint8 of every ``stride``-th pixel with
    0 < depth < ``max_depth``."""
    d = depth[::stride, ::stride].astype(np.float32)
    K = camera.K.copy()
    # The subsampled grid: pixel (x, y) of the subsampled image is pixel (x*s, y*s) of the full.
    K[:2] /= stride
    xyz = unproject_depth(d, K)
    keep = (d > 0) & (d < max_depth) & np.isfinite(d)
    xyz_world = transform_points(camera.c2w.astype(np.float32), xyz[keep])
    return xyz_world.astype(np.float32), rgb[::stride, ::stride][keep]


class VoxelCloud:
    """Incremental voxel-downsampled cloud: ``add`` frames, then ``points()``.

    Each voxel keeps the mean position and colour of the points that fell in it.
    """

    def __init__(self, voxel_size: float) -> None:
        if not voxel_size > 0:
            raise ValueError("voxel size must be positive")
        self.voxel_size = float(voxel_size)
        self._sums: dict[str, np.ndarray] = {}
        self._keys = np.zeros((0,), np.int64)
        self._xyz = np.zeros((0, 3), np.float64)
        self._rgb = np.zeros((0, 3), np.float64)
        self._n = np.zeros((0,), np.int64)

    def add(self, xyz: np.ndarray, rgb: np.ndarray) -> None:
        if len(xyz) == 0:
            return
        ijk = np.floor(xyz / self.voxel_size).astype(np.int64)
        # 21 bits per axis: +-1M voxels each way, far more than any scene at sane voxel sizes.
        ijk = np.clip(ijk, -(1 << 20), (1 << 20) - 1) + (1 << 20)
        keys = (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]
        all_keys = np.concatenate([self._keys, keys])
        uniq, inv = np.unique(all_keys, return_inverse=True)
        m = len(uniq)
        xyz_all = np.concatenate([self._xyz, xyz.astype(np.float64)])
        rgb_all = np.concatenate([self._rgb, rgb.astype(np.float64)])
        n_all = np.concatenate([self._n, np.ones(len(keys), np.int64)])
        xyz_sum = np.stack([np.bincount(inv, xyz_all[:, c], m) for c in range(3)], 1)
        rgb_sum = np.stack([np.bincount(inv, rgb_all[:, c], m) for c in range(3)], 1)
        count = np.bincount(inv, n_all, m).astype(np.int64)
        self._keys, self._xyz, self._rgb, self._n = uniq, xyz_sum, rgb_sum, count

    def __len__(self) -> int:
        return len(self._keys)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) float32 mean positions and (N, 3) uint8 mean colours."""
        if len(self._keys) == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        n = self._n[:, None].astype(np.float64)
        xyz = (self._xyz / n).astype(np.float32)
        rgb = np.clip(np.round(self._rgb / n), 0, 255).astype(np.uint8)
        return xyz, rgb
