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

from .cameras import project_points, transform_points, unproject_depth

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
    pad = torch.nn.functional.pad(inv[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
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

    Each point covers the target pixels whose centres lie within half its footprint ``scale``
    (N,) of it (at least the nearest pixel). Empty pixels hold +inf.
    """
    zbuf = torch.full((height * width,), math.inf)
    half = scale.clamp(min=1.0, max=2 * max_radius) * 0.5 + margin
    base = torch.round(uv)
    radius = int(min(max_radius, math.floor(float(half.max()) + 0.5))) if len(half) else 0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                sel = slice(None)
                px, py, zz = base[:, 0], base[:, 1], z
            else:
                # Only points whose footprint reaches this offset take part.
                sel = torch.nonzero(
                    ((base[:, 0] + dx - uv[:, 0]).abs() <= half)
                    & ((base[:, 1] + dy - uv[:, 1]).abs() <= half)
                ).squeeze(1)
                if sel.numel() == 0:
                    continue
                px, py, zz = base[sel, 0] + dx, base[sel, 1] + dy, z[sel]
            inb = (px >= 0) & (px < width) & (py >= 0) & (py < height)
            idx = (py[inb] * width + px[inb]).long()
            zbuf.scatter_reduce_(0, idx, zz[inb], reduce="amin")
    return zbuf.view(height, width)


def _sample(image: torch.Tensor, uv: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample image (H, W, C) at pixel coordinates uv (N, 2) -> (N, C)."""
    H, W = image.shape[:2]
    grid = torch.empty(1, 1, uv.shape[0], 2)
    grid[0, 0, :, 0] = uv[:, 0] * (2.0 / (W - 1)) - 1.0
    grid[0, 0, :, 1] = uv[:, 1] * (2.0 / (H - 1)) - 1.0
    out = torch.nn.functional.grid_sample(
        image.permute(2, 0, 1)[None], grid, mode=mode, padding_mode="border", align_corners=True
    )
    return out[0, :, 0].T


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
    xyz_src: torch.Tensor | None = None,
) -> WarpResult:
    """Warp a source frame into a target camera.

    Args:
        rgb: (Hs, Ws, 3) float32 [0, 1]; depth: (Hs, Ws) float32 z-depth, 0 = unknown.
        K_src, c2w_src: source intrinsics (for Ws x Hs) and pose; K_tgt, c2w_tgt: the target's.
        width, height: target image size.
        depth_tol: relative depth disagreement above which a back-projected pixel is dropped.
        edges: (Hs, Ws) bool depth-edge mask of the source (computed when None). Pixels on a
            depth edge still occlude, but are never routed: their colour is a mix of foreground
            and background, and sensor depth there is unreliable (measured on TUM: +1 dB).
        xyz_src: (Hs, Ws, 3) camera-frame points of the source, when the caller caches them.
    """
    Hs, Ws = depth.shape
    T = relative_transform(c2w_src, c2w_tgt)
    if xyz_src is None:
        xyz_src = unproject_depth(depth, K_src)
    xyz_tgt = transform_points(T, xyz_src.reshape(-1, 3))
    uv, z = project_points(xyz_tgt, K_tgt)
    zs = depth.reshape(-1)
    ok = (zs > 0) & (z > NEAR)
    ok &= (uv[:, 0] > -1) & (uv[:, 0] < width) & (uv[:, 1] > -1) & (uv[:, 1] < height)
    ok_idx = torch.nonzero(ok).squeeze(1)
    f_ratio = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]) / float(K_src[0, 0] * K_src[1, 1]))
    scale = f_ratio * zs[ok_idx] / z[ok_idx]
    zbuf = splat_depth(uv[ok_idx], z[ok_idx], scale, width, height)

    # Backward: unproject covered target pixels with their z-buffer depth, look them up in the source.
    has = torch.isfinite(zbuf)
    tgt_idx = torch.nonzero(has.reshape(-1)).squeeze(1)
    zt = zbuf.reshape(-1)[tgt_idx]
    u_t = (tgt_idx % width).float()
    v_t = (tgt_idx // width).float()
    xyz_t = torch.stack(
        [
            (u_t - float(K_tgt[0, 2])) / float(K_tgt[0, 0]) * zt,
            (v_t - float(K_tgt[1, 2])) / float(K_tgt[1, 1]) * zt,
            zt,
        ],
        -1,
    )
    T_inv = torch.linalg.inv(T.double()).float()
    uv_s, z_s = project_points(transform_points(T_inv, xyz_t), K_src)
    inside = (uv_s[:, 0] >= -0.5) & (uv_s[:, 0] <= Ws - 0.5) & (uv_s[:, 1] >= -0.5)
    inside &= (uv_s[:, 1] <= Hs - 0.5) & (z_s > NEAR)
    uv_s = torch.stack([uv_s[:, 0].clamp(0, Ws - 1), uv_s[:, 1].clamp(0, Hs - 1)], -1)

    if edges is None:
        edges = depth_edges(depth)
    near_idx = (uv_s[:, 1].round() * Ws + uv_s[:, 0].round()).long()
    d_near = depth.reshape(-1)[near_idx]
    consistent = inside & (d_near > 0) & ((d_near - z_s).abs() <= depth_tol * z_s)
    # Edge pixels are dropped only where parallax could have moved them: seen from (nearly) the
    # same centre (a revisit, a pure rotation) their depth errors cannot shift them.
    baseline = float(T[:3, 3].double().norm())
    parallax = baseline * math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1])) / zt
    consistent &= ~(edges.reshape(-1)[near_idx] & (parallax > 0.5))
    on_edge = _sample(edges[..., None].float(), uv_s, "bilinear")[:, 0] > 0
    col = torch.where(
        on_edge[:, None], _sample(rgb, uv_s, "nearest"), _sample(rgb, uv_s, "bilinear")
    )

    out_rgb = torch.zeros(height * width, 3)
    out_depth = torch.zeros(height * width)
    out_uv = torch.full((height * width, 2), -1.0)
    out_scale = torch.zeros(height * width)
    keep = tgt_idx[consistent]
    out_rgb[keep] = col[consistent]
    out_depth[keep] = zt[consistent]
    out_uv[keep] = uv_s[consistent]
    f_s = math.sqrt(float(K_src[0, 0] * K_src[1, 1]))
    f_t = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]))
    out_scale[keep] = (f_t * z_s[consistent]) / (f_s * zt[consistent])
    valid = out_depth > 0
    return WarpResult(
        out_rgb.view(height, width, 3),
        out_depth.view(height, width),
        valid.view(height, width),
        out_uv.view(height, width, 2),
        out_scale.view(height, width),
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
            half = min(max(f_ratio * d / q[2], 1.0), 7.0) * 0.5 + 1e-3
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
