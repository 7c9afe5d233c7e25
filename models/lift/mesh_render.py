"""A small CPU rasteriser for vertex-coloured triangle meshes, for evaluating the lifted mesh
at the world's cameras (no OpenGL or GPU needed), and its slow per-pixel twin.

Vectorised like the splat renderer's binning: every triangle in front of the near plane is
projected; each (triangle, pixel) pair of its screen bounding box is formed in one batch (large
triangles are split across batches to bound memory), tested with edge functions at the pixel
centre (OpenCV convention: pixel (x, y) is centred at (x, y)), and the nearest fragment per
pixel wins (perspective-correct depth: 1/z is affine in screen space). Colours are interpolated
with perspective-correct barycentrics. Triangles crossing the near plane are dropped.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["render_mesh", "render_mesh_reference"]

NEAR = 0.01
_PAIRS_PER_BATCH = 1 << 22


def _project(vertices: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    cam = np.asarray(vertices, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = np.stack([cam[:, 0] / zs * K[0, 0] + K[0, 2], cam[:, 1] / zs * K[1, 1] + K[1, 2]], 1)
    return uv, z


def _edge(s: np.ndarray, e: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Edge function of the segment s -> e (N, 2) at pixel centres (px, py) (N,)."""
    return (e[:, 0] - s[:, 0]) * (py - s[:, 1]) - (e[:, 1] - s[:, 1]) * (px - s[:, 0])


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
) -> dict[str, np.ndarray]:
    """Render a mesh at one camera.

    Args:
        vertices (V, 3) world metres; faces (F, 3) int; colors (V, 3) uint8; c2w (4, 4) OpenCV;
        K (3, 3) for ``width`` x ``height``.

    Returns:
        {"rgb": (H, W, 3) uint8 (black where empty), "depth": (H, W) float32 z (0 where empty),
        "mask": (H, W) bool}.
    """
    uv, z = _project(vertices, c2w, K)
    f = np.asarray(faces, np.int64)
    front = (z[f] > NEAR).all(1)
    f = f[front]
    p = uv[f]  # (F, 3, 2)
    x0 = np.clip(np.ceil(p[..., 0].min(1)), 0, width)
    x1 = np.clip(np.floor(p[..., 0].max(1)), -1, width - 1)
    y0 = np.clip(np.ceil(p[..., 1].min(1)), 0, height)
    y1 = np.clip(np.floor(p[..., 1].max(1)), -1, height - 1)
    keep = (x1 >= x0) & (y1 >= y0)
    f, p, x0, x1, y0, y1 = f[keep], p[keep], x0[keep], x1[keep], y0[keep], y1[keep]
    nx = (x1 - x0 + 1).astype(np.int64)
    area = nx * (y1 - y0 + 1).astype(np.int64)
    zbuf = torch.full((height * width,), float("inf"), dtype=torch.float64)
    col = np.asarray(colors, np.float64)
    out_rgb = np.zeros((height * width, 3))
    starts = np.concatenate([[0], np.cumsum(area)])
    # Batches of whole triangles, each batch holding at most _PAIRS_PER_BATCH pairs.
    bounds = [0]
    while bounds[-1] < len(f):
        limit = starts[bounds[-1]] + _PAIRS_PER_BATCH
        nxt = int(np.searchsorted(starts, limit, side="right")) - 1
        bounds.append(max(nxt, bounds[-1] + 1))
    frags = []  # per batch: (pixel index, depth, face index, barycentrics)
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        cnt = area[b0:b1]
        owner = np.repeat(np.arange(b0, b1), cnt)
        local = np.arange(int(cnt.sum())) - np.repeat(starts[b0:b1] - starts[b0], cnt)
        px = x0[owner] + local % nx[owner]
        py = y0[owner] + local // nx[owner]
        a, b, c = p[owner, 0], p[owner, 1], p[owner, 2]

        w0, w1, w2 = _edge(b, c, px, py), _edge(c, a, px, py), _edge(a, b, px, py)
        tot = w0 + w1 + w2
        inside = (np.abs(tot) > 1e-12) & (
            ((w0 >= 0) & (w1 >= 0) & (w2 >= 0)) | ((w0 <= 0) & (w1 <= 0) & (w2 <= 0))
        )
        if not inside.any():
            continue
        owner, px, py = owner[inside], px[inside], py[inside]
        lam = np.stack([w0[inside], w1[inside], w2[inside]], 1) / tot[inside, None]
        inv_z = (lam / z[f[owner]]).sum(1)  # 1/z is affine in screen space
        depth = 1.0 / inv_z
        pix = (py * width + px).astype(np.int64)
        zbuf.scatter_reduce_(0, torch.from_numpy(pix), torch.from_numpy(depth), reduce="amin")
        frags.append((pix, depth, owner, lam))
    for pix, depth, owner, lam in frags:
        win = depth <= zbuf.numpy()[pix]
        pix, depth, owner, lam = pix[win], depth[win], owner[win], lam[win]
        # perspective-correct colour: barycentrics weighted by 1/z
        wz = lam / z[f[owner]]
        wz /= wz.sum(1, keepdims=True)
        out_rgb[pix] = (wz[..., None] * col[f[owner]]).sum(1)
    zb = zbuf.numpy().reshape(height, width)
    mask = np.isfinite(zb)
    return {
        "rgb": np.clip(np.rint(out_rgb), 0, 255).astype(np.uint8).reshape(height, width, 3),
        "depth": np.where(mask, zb, 0.0).astype(np.float32),
        "mask": mask,
    }


def render_mesh_reference(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
) -> dict[str, np.ndarray]:
    """Slow twin of :func:`render_mesh`: every pixel against every triangle, plain loops."""
    uv, z = _project(vertices, c2w, K)
    depth = np.zeros((height, width))
    rgb = np.zeros((height, width, 3))
    for y in range(height):
        for x in range(width):
            best = np.inf
            for tri in np.asarray(faces, np.int64):
                if (z[tri] <= NEAR).any():
                    continue
                (ax, ay), (bx, by), (cx, cy) = uv[tri]
                w0 = (cx - bx) * (y - by) - (cy - by) * (x - bx)
                w1 = (ax - cx) * (y - cy) - (ay - cy) * (x - cx)
                w2 = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
                tot = w0 + w1 + w2
                if abs(tot) <= 1e-12 or not (min(w0, w1, w2) >= 0 or max(w0, w1, w2) <= 0):
                    continue
                lam = np.array([w0, w1, w2]) / tot
                d = 1.0 / float((lam / z[tri]).sum())
                if d < best:
                    best = d
                    wz = lam / z[tri]
                    rgb[y, x] = (wz / wz.sum()) @ np.asarray(colors, np.float64)[tri]
            depth[y, x] = best if np.isfinite(best) else 0.0
    return {
        "rgb": np.clip(np.rint(rgb), 0, 255).astype(np.uint8),
        "depth": depth.astype(np.float32),
        "mask": depth > 0,
    }
