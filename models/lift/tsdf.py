"""TSDF fusion of posed depth frames into sparse voxel blocks, and mesh extraction.

A truncated signed distance field (Curless & Levoy 1996; KinectFusion) is kept only where depth
points fall: space is cut into cubic *blocks* of ``block_size``^3 voxels (8^3 by default) and a
block exists only if some depth point lies within the truncation distance of it (voxel hashing,
Niessner et al. 2013). Blocks live in flat numpy arrays ``tsdf``/``weight``/``color`` of shape
(capacity, b, b, b[, 3]) with a sorted array of packed block keys for lookup, so every step of
integration is a handful of vectorised numpy operations over all voxels of the touched blocks.

Conventions (models/cameras.py): OpenCV cameras, ``c2w`` 4x4, ``K`` 3x3 in pixels, z-depth in
metres. Voxel (i, j, k) of block (bx, by, bz) sits at world ``((bx, by, bz) * b + (i, j, k)) *
voxel_size`` (voxel corners on a global lattice, so volumes built by different code agree
voxel-for-voxel). The signed distance is the *z-difference* ``depth - z_cam`` (as Open3D does),
divided by the pixel's truncation band, clipped to +1 in front and only observed down to -1 behind
the surface.

Depth-proportional truncation: the band of a pixel with depth ``d`` is ``max(trunc, rel_trunc *
d)``. Depth estimates err in proportion to depth (a monocular or aligned estimate is off by a few
per cent, not a few centimetres), so a fixed band thin enough for near detail lets the frames of a
far facade, which disagree by metres, carve each other's surface away (holes); a band that grows
with depth fuses them, while near surfaces keep the thin band of ``trunc``. ``max_band`` caps it:
the blocks a pixel touches grow with its band.

Mesh extraction (marching cubes) works on dense *tiles* of up to ``tile_blocks``^3 blocks, each
padded with one voxel of its +x/+y/+z neighbours, so a cube straddling a block or tile seam sees
its real 8 corners: seams are closed, and a cube is owned by exactly one tile (no duplicates).
Vertices shared between tiles are welded by their exact lattice position. A cube is triangulated
only if all 8 corners were observed (weight > 0), so unobserved space never makes phantom walls.

The slow obvious twins (``fuse_reference`` with per-voxel Python loops on a dense grid, and
``extract_mesh_reference`` with one marching-cubes call over a dense grid) are what the tests
compare the fast paths against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from models.lift.tsdf_mesh import UNOBSERVED, decimate, extract_mesh, extract_mesh_reference

__all__ = [
    "TSDFError",
    "TSDFVolume",
    "auto_max_depth",
    "decimate",
    "extract_mesh",
    "extract_mesh_reference",
    "fuse",
    "fuse_reference",
]

# Packed block keys: 21 bits per axis (offset so negatives fit) in one int64.
_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)
# Depths beyond this multiple of a frame's median depth are sky / backdrop, not surfaces.
SKY_FACTOR = 10.0
# Voxels integrated per vectorised batch: bounds temporary memory (~40 bytes per voxel).
_BATCH_VOXELS = 1 << 21


class TSDFError(ValueError):
    """Bad input to fusion (no valid depth, mismatched shapes, bad voxel size)."""


def _pack(keys: np.ndarray) -> np.ndarray:
    """(N, 3) int block coords -> (N,) int64 keys (order of packed keys = lexicographic)."""
    k = keys.astype(np.int64) + _KEY_OFFSET
    if k.size and (k.min() < 0 or k.max() >= (1 << _KEY_BITS)):
        raise TSDFError("the scene is too large for this voxel size (block index out of range)")
    return (k[:, 0] << (2 * _KEY_BITS)) | (k[:, 1] << _KEY_BITS) | k[:, 2]


def _unpack(packed: np.ndarray) -> np.ndarray:
    """(N,) int64 keys -> (N, 3) int32 block coords."""
    mask = (1 << _KEY_BITS) - 1
    out = np.stack([packed >> (2 * _KEY_BITS), (packed >> _KEY_BITS) & mask, packed & mask], 1)
    return (out - _KEY_OFFSET).astype(np.int32)


def auto_max_depth(depth: np.ndarray) -> float:
    """Far limit for one frame: ``SKY_FACTOR`` x the median valid depth (drops sky backdrops)."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    return float(np.median(valid)) * SKY_FACTOR if valid.size else 0.0


def _check_frame(rgb: np.ndarray | None, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> None:
    if depth.ndim != 2 or min(depth.shape) < 1:
        raise TSDFError(f"depth must be an (H, W) map, got shape {depth.shape}")
    if rgb is not None and rgb.shape[:2] != depth.shape:
        raise TSDFError(f"colour {rgb.shape[:2]} and depth {depth.shape} sizes differ")
    if np.asarray(K).shape != (3, 3) or np.asarray(c2w).shape != (4, 4):
        raise TSDFError("K must be 3x3 and c2w 4x4")
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(c2w))):
        raise TSDFError("camera K or c2w contains NaN/inf")


@dataclass
class TSDFVolume:
    """Sparse TSDF: blocks of ``block_size``^3 voxels allocated on demand.

    Arrays hold ``capacity >= num_blocks`` blocks; only the first ``num_blocks`` are in use.
    tsdf: (cap, b, b, b) float32 in [-1, 1] (distance / trunc; UNOBSERVED = 2 if never seen); weight: (cap, b, b, b) float32
    (observations); color: (cap, b, b, b, 3) float32 RGB 0..255; keys: (cap, 3) int32 block coords.
    """

    voxel_size: float
    trunc: float
    block_size: int = 8
    # Band grows with depth: min(max(trunc, rel_trunc * depth), max_band) per pixel (rel_trunc
    # 0 = fixed band). max_band bounds the cost of far surfaces (blocks grow with the band).
    rel_trunc: float = 0.0
    max_band: float = float("inf")
    num_blocks: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    tsdf: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    weight: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    color: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    # Sorted packed keys and the block index of each, for vectorised lookup by searchsorted.
    _sorted_packed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _sorted_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if not (np.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise TSDFError(
                f"voxel_size must be a positive number of metres, got {self.voxel_size}"
            )
        if not (np.isfinite(self.trunc) and self.trunc >= self.voxel_size):
            raise TSDFError(f"trunc ({self.trunc}) must be at least one voxel ({self.voxel_size})")
        if not (np.isfinite(self.rel_trunc) and 0.0 <= self.rel_trunc < 1.0):
            raise TSDFError(f"rel_trunc must be in [0, 1), got {self.rel_trunc}")
        if not self.max_band >= self.trunc:
            raise TSDFError(f"max_band ({self.max_band}) must be at least trunc ({self.trunc})")
        b = self.block_size
        if self.tsdf.size == 0:
            self.tsdf = np.zeros((0, b, b, b), np.float32)
            self.weight = np.zeros((0, b, b, b), np.float32)
            self.color = np.zeros((0, b, b, b, 3), np.float32)

    def band(self, depth: np.ndarray) -> np.ndarray:
        """Truncation band (metres) of pixels at ``depth`` (any shape):
        min(max(trunc, rel_trunc * depth), max_band)."""
        band = np.maximum(np.float32(self.trunc), np.float32(self.rel_trunc) * depth)
        return np.minimum(band, np.float32(min(self.max_band, 3e38)))

    @property
    def block_length(self) -> float:
        """Edge of one block in metres."""
        return self.block_size * self.voxel_size

    def active(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of the blocks in use: keys (B, 3), tsdf (B, b, b, b), weight, color (.., 3)."""
        n = self.num_blocks
        return self.keys[:n], self.tsdf[:n], self.weight[:n], self.color[:n]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(N,) int64 block index of each (N, 3) block key, -1 where not allocated."""
        packed = _pack(keys)
        if self._sorted_packed.size == 0:
            return np.full(len(packed), -1, np.int64)
        pos = np.searchsorted(self._sorted_packed, packed)
        pos = np.minimum(pos, len(self._sorted_packed) - 1)
        hit = self._sorted_packed[pos] == packed
        return np.where(hit, self._sorted_index[pos], -1)

    def allocate(self, keys: np.ndarray) -> np.ndarray:
        """Make sure the (N, 3) unique block keys exist; returns their (N,) block indices."""
        idx = self.lookup(keys)
        new = np.flatnonzero(idx < 0)
        if new.size:
            n0, n1 = self.num_blocks, self.num_blocks + new.size
            if n1 > len(self.keys):  # grow geometrically so appends stay amortised O(1)
                cap = max(n1, 2 * len(self.keys), 256)
                self.keys = _grow(self.keys, cap, 0)
                self.tsdf = _grow(self.tsdf, cap, UNOBSERVED)
                self.weight = _grow(self.weight, cap, 0)
                self.color = _grow(self.color, cap, 0)
            self.keys[n0:n1] = keys[new]
            self.num_blocks = n1
            idx[new] = np.arange(n0, n1)
            packed = _pack(self.keys[:n1])
            order = np.argsort(packed, kind="stable")
            self._sorted_packed, self._sorted_index = packed[order], order
        return idx

    def integrate(
        self,
        rgb: np.ndarray | None,
        depth: np.ndarray,
        K: np.ndarray,
        c2w: np.ndarray,
        max_depth: float | None = None,
    ) -> int:
        """Fuse one frame. rgb (H, W, 3) uint8 or None, depth (H, W) z-depth metres (0/NaN =
        invalid), K (3, 3), c2w (4, 4). ``max_depth`` None = ``auto_max_depth(depth)``.
        Returns the number of voxels updated."""
        _check_frame(rgb, depth, K, c2w)
        height, width = depth.shape
        depth = np.asarray(depth, np.float32)
        far = auto_max_depth(depth) if max_depth is None else float(max_depth)
        valid = np.isfinite(depth) & (depth > 0) & (depth <= far)
        if not valid.any():
            return 0
        depth = np.where(valid, depth, 0.0).astype(np.float32)
        K = np.asarray(K, np.float64)
        c2w = np.asarray(c2w, np.float64)
        block_idx = self.allocate(self._touched_blocks(depth, valid, K, c2w))

        w2c = np.linalg.inv(c2w)
        R, t = w2c[:3, :3], w2c[:3, 3]
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        f_min = min(fx, fy)
        b = self.block_size
        grid = np.stack(np.meshgrid(*[np.arange(b)] * 3, indexing="ij"), -1).reshape(-1, 3)
        # Camera coords = R @ (block_origin + local) + t: per-block part + per-voxel part, so the
        # 3x3 product runs once per block and once per local offset, not once per voxel.
        local_cam = (grid * self.voxel_size) @ R.T  # (b^3, 3)
        lx, ly, lz = (local_cam[:, i].astype(np.float32)[None] for i in range(3))
        depth_flat = depth.ravel()
        band_flat = self.band(depth_flat)
        rgb_flat = None if rgb is None else np.asarray(rgb).reshape(-1, 3)
        # 1-D views: one flat gather/scatter index is cheaper than (block, voxel) pairs.
        tsdf_flat = self.tsdf.reshape(-1)
        weight_flat = self.weight.reshape(-1)
        color_flat = self.color.reshape(-1, 3)
        per_batch = max(1, _BATCH_VOXELS // (b**3))
        updated = 0
        for s in range(0, len(block_idx), per_batch):
            idx = block_idx[s : s + per_batch]
            origin_cam = (self.keys[idx] * self.block_length) @ R.T + t  # (n, 3) float64
            z = origin_cam[:, 2:3].astype(np.float32) + lz  # (n, b^3)
            inv_z = 1.0 / np.maximum(z, 1e-6)
            u = (origin_cam[:, 0:1].astype(np.float32) + lx) * inv_z * fx + cx
            v = (origin_cam[:, 1:2].astype(np.float32) + ly) * inv_z * fy + cy
            # Nearest pixel, bounds checked after rounding (as the reference does) and before the
            # int cast (astype truncates -0.7 to a false 0). A voxel up to one voxel footprint
            # (``edge`` pixels) outside the image takes the border pixel: otherwise the cubes
            # at the frustum's edge miss a corner and the mesh stops short of the image border.
            np.rint(u, out=u)
            np.rint(v, out=v)
            edge = np.float32(self.voxel_size * f_min) * inv_z
            inside = (z > 0) & (u >= -edge) & (u <= width - 1 + edge)
            inside &= (v >= -edge) & (v <= height - 1 + edge)
            np.clip(u, 0, width - 1, out=u)
            np.clip(v, 0, height - 1, out=v)
            sel = np.flatnonzero(inside)
            pix = v.ravel()[sel].astype(np.int64) * width
            pix += u.ravel()[sel].astype(np.int64)
            d = depth_flat[pix]
            tau = band_flat[pix]
            sdf = d - z.ravel()[sel]
            keep = (d > 0) & (sdf >= -tau)
            sel, pix, sdf, tau = sel[keep], pix[keep], sdf[keep], tau[keep]
            flat = idx[sel // b**3] * b**3 + sel % b**3  # voxel index in the flat arrays
            obs = np.minimum(sdf / tau, 1.0).astype(np.float32)
            w_old = weight_flat[flat]
            w_new = w_old + 1.0
            # Running weighted means (weight 1 per observation, as Open3D integrates).
            # (UNOBSERVED x weight 0 = 0, so a first observation just stores obs.)
            tsdf_flat[flat] = (tsdf_flat[flat] * w_old + obs) / w_new
            if rgb_flat is not None:
                c_old = color_flat[flat]
                c_obs = rgb_flat[pix].astype(np.float32)
                color_flat[flat] = c_old + (c_obs - c_old) / w_new[:, None]
            weight_flat[flat] = w_new
            updated += len(sel)
        return updated

    def _touched_blocks(
        self, depth: np.ndarray, valid: np.ndarray, K: np.ndarray, c2w: np.ndarray
    ) -> np.ndarray:
        """(N, 3) unique keys of the blocks that the truncation band of this frame crosses.

        As in voxel hashing, each sampled pixel's ray is walked from ``depth - band`` to
        ``depth + band`` (its own band, ``band(depth)``) in steps of at most half a block, and the
        blocks of the samples are
        touched; blocks merely near the band laterally are not (their voxels would only see
        tsdf = +1 or nothing). Pixels are subsampled with a stride whose spacing at the far depths
        stays under half a block (at most 4 px, Open3D's default).
        """
        z90 = float(np.percentile(depth[valid], 90))
        half_block = self.block_length / 2
        stride = int(np.clip(half_block * min(K[0, 0], K[1, 1]) / max(z90, 1e-6), 1, 4))
        sub = valid[::stride, ::stride]
        d = depth[::stride, ::stride][sub].astype(np.float64)
        vs, us = np.nonzero(sub)
        ray = np.stack([(us * stride - K[0, 2]) / K[0, 0], (vs * stride - K[1, 2]) / K[1, 1]], 1)
        tau = self.band(d)
        # Per pixel: n samples spread evenly over [-band, +band] (n >= 2, spacing <= half_block).
        n = np.ceil(2 * tau / half_block).astype(np.int64) + 1
        keys = []
        for j in range(int(n.max())):
            live = n > j  # pixels that still have a j-th sample
            ray, d, tau, n = ray[live], d[live], tau[live], n[live]
            z = d - tau + j * (2 * tau / (n - 1))
            xyz_cam = np.concatenate([ray * z[:, None], z[:, None]], 1)
            xyz_world = xyz_cam @ c2w[:3, :3].T + c2w[:3, 3]
            keys.append(_pack(np.floor(xyz_world / self.block_length).astype(np.int64)))
        return _unpack(np.unique(np.concatenate(keys)))


def _grow(a: np.ndarray, cap: int, fill: float) -> np.ndarray:
    out = np.full((cap, *a.shape[1:]), fill, a.dtype)
    out[: len(a)] = a
    return out


Frame = tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]


def fuse(
    frames: Iterable[Frame],
    voxel_size: float,
    trunc: float | None = None,
    max_depth: float | None = None,
    block_size: int = 8,
    rel_trunc: float = 0.0,
    max_band: float = float("inf"),
) -> TSDFVolume:
    """Fuse frames (rgb (H, W, 3) uint8 or None, depth (H, W) m, K (3, 3), c2w (4, 4)) into a
    sparse TSDF. ``trunc`` (the near band) defaults to 4 voxels; each pixel's band is
    ``min(max(trunc, rel_trunc * depth), max_band)``; ``max_depth`` None = per-frame ``auto_max_depth`` (drops
    sky / backdrop depths). Raises TSDFError if nothing was fused."""
    trunc = 4.0 * voxel_size if trunc is None else float(trunc)
    volume = TSDFVolume(
        voxel_size=float(voxel_size),
        trunc=trunc,
        block_size=block_size,
        rel_trunc=rel_trunc,
        max_band=max_band,
    )
    total = 0
    for rgb, depth, K, c2w in frames:
        total += volume.integrate(rgb, depth, K, c2w, max_depth=max_depth)
    if total == 0:
        raise TSDFError("no valid depth to fuse: every frame was empty, invalid or too far")
    return volume


def fuse_reference(
    frames: Iterable[Frame],
    voxel_size: float,
    origin_index: tuple[int, int, int],
    shape: tuple[int, int, int],
    trunc: float | None = None,
    max_depth: float | None = None,
    rel_trunc: float = 0.0,
    max_band: float = float("inf"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow obvious twin of ``fuse`` on a dense grid: one Python loop step per voxel per frame.

    Voxel (i, j, k) sits at world ``(origin_index + (i, j, k)) * voxel_size`` (the lattice of
    ``TSDFVolume``). Returns tsdf (X, Y, Z) float32, weight (X, Y, Z), color (X, Y, Z, 3).
    Use only on tiny grids (a few thousand voxels).
    """
    trunc = 4.0 * voxel_size if trunc is None else float(trunc)
    tsdf = np.zeros(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    color = np.zeros((*shape, 3), np.float32)
    for rgb, depth, K, c2w in frames:
        depth = np.asarray(depth, np.float32)
        far = auto_max_depth(depth) if max_depth is None else float(max_depth)
        w2c = np.linalg.inv(np.asarray(c2w, np.float64))
        height, width = depth.shape
        for i in range(shape[0]):
            for j in range(shape[1]):
                for k in range(shape[2]):
                    p = (np.array(origin_index) + (i, j, k)) * voxel_size
                    x, y, z = w2c[:3, :3] @ p + w2c[:3, 3]
                    if z <= 0:
                        continue
                    u = round(K[0, 0] * x / z + K[0, 2])
                    v = round(K[1, 1] * y / z + K[1, 2])
                    # Up to one voxel footprint outside the image: the border pixel.
                    edge = voxel_size * min(K[0, 0], K[1, 1]) / z
                    if not (-edge <= u <= width - 1 + edge and -edge <= v <= height - 1 + edge):
                        continue
                    u, v = min(max(u, 0), width - 1), min(max(v, 0), height - 1)
                    d = float(depth[v, u])
                    if not (np.isfinite(d) and 0 < d <= far):
                        continue
                    band = min(max(trunc, rel_trunc * d), max_band)  # this pixel's band
                    if d - z < -band:
                        continue
                    obs = min((d - z) / band, 1.0)
                    w = weight[i, j, k]
                    tsdf[i, j, k] = (tsdf[i, j, k] * w + obs) / (w + 1)
                    if rgb is not None:
                        color[i, j, k] = (color[i, j, k] * w + rgb[v, u]) / (w + 1)
                    weight[i, j, k] = w + 1
    return tsdf, weight, color
