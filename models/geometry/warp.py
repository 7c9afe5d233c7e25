"""Forward warping of a frame (rgb + z-depth) into another camera.

Forward-backward warp, in three steps:

1. *splat*: every source pixel is projected into the target and written into a z-buffer with a
   footprint sized by how much the surface is magnified (``s = f_t z_s / (f_s z_t)``). A 1-pixel
   splat leaves cracks when the camera moves closer, and far background shows through them; sizing
   the footprint by ``s`` closes them.
2. *backward sample*: each covered target pixel is unprojected with its z-buffer depth and
   projected back into the source, which is sampled bilinearly (sub-pixel accurate, no
   nearest-pixel jitter). Where the 2x2 neighbourhood straddles a depth edge the nearest pixel
   is used instead, so foreground and background colours never mix.
3. *check*: a pixel whose back-projected depth disagrees with the source depth there (it was
   occluded in the source, or the splat came from another surface) is dropped.

The result says, per target pixel, where its colour came from (source u, v): that is the
correspondence the synthesis step routes pixels through.

:func:`forward_warp_reference` is the slow, obvious per-pixel twin used by the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.geometry.cameras import project_points, transform_points, unproject_depth

NEAR = 1e-3  # metres: points closer than this to the target camera are dropped


@dataclass
class WarpResult:
    """A source frame seen from a target camera.

    rgb: (H, W, 3) float32 in [0, 1]; depth: (H, W) float32 target z-depth (0 where invalid);
    valid: (H, W) bool; src_uv: (H, W, 2) float32 source pixel coordinates (u, v);
    scale: (H, W) float32 magnification of the source at that pixel (1 = same resolution,
    > 1 = the target sees the surface larger than the source did).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    src_uv: torch.Tensor
    scale: torch.Tensor


def relative_transform(c2w_src: np.ndarray, c2w_tgt: np.ndarray) -> torch.Tensor:
    """(4, 4) float32 source-camera -> target-camera transform, composed in float64.

    Composing in float64 keeps an identity motion exactly the identity, so a revisited pose
    reproduces its frame bit for bit.
    """
    w2c_tgt = np.linalg.inv(np.asarray(c2w_tgt, np.float64))
    return torch.from_numpy((w2c_tgt @ np.asarray(c2w_src, np.float64)).astype(np.float32))


def depth_edges(depth: torch.Tensor, rel_jump: float = 0.04) -> torch.Tensor:
    """(H, W) bool: pixels next to a depth discontinuity (or with unknown depth).

    Tested on the second difference of inverse depth, which is zero on any plane however
    slanted (a floor seen at a grazing angle is not an edge), and about the step size on both
    sides of a discontinuity: ``|d[i-1] - 2 d[i] + d[i+1]| > rel_jump * d[i]``, along x or y.
    """
    inv = 1.0 / depth.clamp(min=1e-6)
    # Pad by linear extrapolation: a plane stays a plane up to the border (replicate padding
    # would turn the border's second difference into a first difference).
    pad = torch.nn.functional.pad(inv[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    if min(inv.shape) >= 2:
        pad[0, 1:-1] = 2 * inv[0] - inv[1]
        pad[-1, 1:-1] = 2 * inv[-1] - inv[-2]
        pad[1:-1, 0] = 2 * inv[:, 0] - inv[:, 1]
        pad[1:-1, -1] = 2 * inv[:, -1] - inv[:, -2]
    c = pad[1:-1, 1:-1]
    d2x = (pad[1:-1, :-2] - 2 * c + pad[1:-1, 2:]).abs()
    d2y = (pad[:-2, 1:-1] - 2 * c + pad[2:, 1:-1]).abs()
    return (torch.maximum(d2x, d2y) > rel_jump * c) | (depth <= 0)


def splat_depth(
    uv: torch.Tensor,
    z: torch.Tensor,
    scale: torch.Tensor,
    width: int,
    height: int,
    max_radius: int = 3,
    margin: float = 0.25,
) -> torch.Tensor:
    """Z-buffer (H, W) of points at pixel positions ``uv`` (N, 2) with depth ``z`` (N,).

    Each point covers the target pixels whose centres lie within ``max(scale, 1) / 2 + margin``
    of it along both axes (always its nearest pixel). Empty pixels hold +inf. ``uv`` must lie in
    (-1, width) x (-1, height).
    """
    R = max_radius
    # Padded buffer, so offsets never need a bounds test. uv just above -1 rounds to pixel -1,
    # and its footprint reaches R further: the pad is R + 1 (R alone indexed out of bounds).
    P = R + 1
    Wp = width + 2 * P
    zbuf = torch.full(((height + 2 * P) * Wp,), math.inf)
    half = scale.clamp(min=1.0, max=2 * R) * 0.5 + margin
    base = torch.round(uv)
    frac = base - uv  # (N, 2) in [-0.5, 0.5]
    flat = (base[:, 1].long() + P) * Wp + base[:, 0].long() + P
    radius = int(min(R, math.floor(float(half.max()) + 0.5))) if len(half) else 0
    # Points whose footprint reaches offset d along an axis: |d + frac| <= half.
    reach_x = {d: (frac[:, 0] + d).abs() <= half for d in range(-radius, radius + 1) if d}
    reach_y = {d: (frac[:, 1] + d).abs() <= half for d in range(-radius, radius + 1) if d}
    zbuf.scatter_reduce_(0, flat, z, reduce="amin")
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            if dx and dy:
                m = reach_x[dx] & reach_y[dy]
            else:
                m = reach_x[dx] if dx else reach_y[dy]
            sel = torch.nonzero(m).squeeze(1)
            if sel.numel():
                zbuf.scatter_reduce_(0, flat[sel] + (dy * Wp + dx), z[sel], reduce="amin")
    return zbuf.view(height + 2 * P, Wp)[P : P + height, P : P + width]


def _normalised_grid(uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(..., 2) pixel coordinates -> grid_sample's [-1, 1] coordinates (align_corners=True)."""
    return torch.stack(
        [uv[..., 0] * (2.0 / (width - 1)) - 1.0, uv[..., 1] * (2.0 / (height - 1)) - 1.0], -1
    )


def forward_warp(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_tgt: np.ndarray,
    c2w_tgt: np.ndarray,
    width: int,
    height: int,
    *,
    depth_tol: float = 0.03,
    edges: torch.Tensor | None = None,
) -> WarpResult:
    """Warp a source frame into a target camera.

    Args:
        rgb: (Hs, Ws, 3) float32 [0, 1]; depth: (Hs, Ws) float32 z-depth, 0 = unknown.
        K_src, c2w_src: source intrinsics (for Ws x Hs) and pose; K_tgt, c2w_tgt: the target's.
        width, height: target image size.
        depth_tol: relative depth disagreement above which a back-projected pixel is dropped.
        edges: (Hs, Ws) bool depth-edge mask of the source (computed when None). Pixels on a
            depth edge still occlude, but are not routed where parallax could have moved them:
            their colour mixes foreground and background, and sensor depth there is unreliable
            (measured on TUM: +1 dB).
    """
    Hs, Ws = depth.shape
    T = relative_transform(c2w_src, c2w_tgt)
    xyz_tgt = transform_points(T, unproject_depth(depth, K_src).reshape(-1, 3))
    uv, z = project_points(xyz_tgt, K_tgt)
    zs = depth.reshape(-1)
    ok = (zs > 0) & (z > NEAR)
    ok &= (uv[:, 0] > -1) & (uv[:, 0] < width) & (uv[:, 1] > -1) & (uv[:, 1] < height)
    ok_idx = torch.nonzero(ok).squeeze(1)
    f_s = math.sqrt(float(K_src[0, 0] * K_src[1, 1]))
    f_t = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]))
    scale = (f_t / f_s) * zs[ok_idx] / z[ok_idx]
    zbuf = splat_depth(uv[ok_idx], z[ok_idx], scale, width, height)

    # Backward, densely over the target: unproject with the z-buffer depth, look up the source.
    has = torch.isfinite(zbuf)
    zt = torch.where(has, zbuf, torch.ones_like(zbuf))
    xyz_t = unproject_depth(zt, K_tgt)
    T_inv = torch.linalg.inv(T.double()).float()
    uv_s, z_s = project_points(transform_points(T_inv, xyz_t), K_src)
    inside = (uv_s[..., 0] >= -0.5) & (uv_s[..., 0] <= Ws - 0.5) & (uv_s[..., 1] >= -0.5)
    inside &= (uv_s[..., 1] <= Hs - 0.5) & (z_s > NEAR) & has
    uv_s = torch.stack([uv_s[..., 0].clamp(0, Ws - 1), uv_s[..., 1].clamp(0, Hs - 1)], -1)

    if edges is None:
        edges = depth_edges(depth)
    near_idx = (uv_s[..., 1].round() * Ws + uv_s[..., 0].round()).long()
    d_near = depth.reshape(-1)[near_idx]
    valid = inside & (d_near > 0) & ((d_near - z_s).abs() <= depth_tol * z_s)
    # Edge pixels are dropped only where parallax could have moved them: seen from (nearly) the
    # same centre (a revisit, a pure rotation) their depth errors cannot shift them.
    baseline = float(T[:3, 3].double().norm())
    valid &= ~(edges.reshape(-1)[near_idx] & (baseline * f_t / zt > 0.5))

    # Bilinear where the 2x2 source neighbourhood is one surface, nearest where it straddles an
    # edge (so foreground and background colours never mix).
    src = torch.cat([rgb, edges[..., None].float()], -1).permute(2, 0, 1)[None]
    grid = _normalised_grid(uv_s, Ws, Hs)[None]
    bil = torch.nn.functional.grid_sample(src, grid, mode="bilinear", align_corners=True)[0]
    col = bil[:3].permute(1, 2, 0)
    on_edge = bil[3] > 0
    edge_idx = torch.nonzero((on_edge & valid).reshape(-1)).squeeze(1)
    if edge_idx.numel():
        col = col.reshape(-1, 3).clone()
        col[edge_idx] = rgb.reshape(-1, 3)[near_idx.reshape(-1)[edge_idx]]
        col = col.view(height, width, 3)

    vf = valid[..., None].float()
    return WarpResult(
        col * vf,
        zt * valid,
        valid,
        torch.where(valid[..., None], uv_s, torch.full_like(uv_s, -1.0)),
        (f_t * z_s) / (f_s * zt) * valid,
    )


def forward_warp_reference(
    rgb: np.ndarray,
    depth: np.ndarray,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_tgt: np.ndarray,
    c2w_tgt: np.ndarray,
    width: int,
    height: int,
    max_radius: int = 3,
    margin: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Slow twin of the z-buffer splat: (depth (H, W), nearest-splat rgb (H, W, 3)), float64.

    One point at a time, the footprint rule written out literally. For tests on tiny images.
    """
    T = np.linalg.inv(c2w_tgt) @ c2w_src
    f_ratio = math.sqrt(K_tgt[0, 0] * K_tgt[1, 1] / (K_src[0, 0] * K_src[1, 1]))
    zbuf = np.full((height, width), np.inf)
    col = np.zeros((height, width, 3))
    for y in range(depth.shape[0]):
        for x in range(depth.shape[1]):
            d = depth[y, x]
            if d <= 0:
                continue
            p = np.array(
                [(x - K_src[0, 2]) / K_src[0, 0] * d, (y - K_src[1, 2]) / K_src[1, 1] * d, d]
            )
            q = T[:3, :3] @ p + T[:3, 3]
            if q[2] <= NEAR:
                continue
            u = q[0] / q[2] * K_tgt[0, 0] + K_tgt[0, 2]
            v = q[1] / q[2] * K_tgt[1, 1] + K_tgt[1, 2]
            half = min(max(f_ratio * d / q[2], 1.0), 2.0 * max_radius) * 0.5 + margin
            for py in range(int(math.floor(v - half)), int(math.ceil(v + half)) + 1):
                for px in range(int(math.floor(u - half)), int(math.ceil(u + half)) + 1):
                    if not (0 <= px < width and 0 <= py < height):
                        continue
                    near = px == round(u) and py == round(v)
                    if (near or (abs(px - u) <= half and abs(py - v) <= half)) and q[2] < zbuf[
                        py, px
                    ]:
                        zbuf[py, px] = q[2]
                        col[py, px] = rgb[y, x]
    return zbuf, col
