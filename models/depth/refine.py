"""Depth edges that follow image edges: every estimator's output passes through here.

Estimators blur depth discontinuities: a network's output is upsampled (bicubic), the layout
prior is computed at a quarter of the size, and both put pixels on a ramp between foreground
and background. Warped into a new view those pixels become "flying" streaks, and the step sits
where the estimator guessed, not where the object's outline is.

:func:`snap_depth_edges` makes every depth step a one-pixel step on an image edge: near each
discontinuity (second difference of inverse depth, which is zero on any plane, so slanted
floors are left alone) every pixel takes either the near or the far depth of its neighbourhood,
whichever side its colour matches (a two-layer split, like a joint bilateral filter reduced to
two candidates). :func:`snap_reference` is the slow per-pixel twin the tests compare against.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["edge_band", "snap_depth_edges", "snap_reference"]


def edge_band(depth: np.ndarray, radius: int, rel_jump: float = 0.04) -> np.ndarray:
    """(H, W) bool: pixels within ``radius`` of a depth discontinuity of ``depth`` (H, W) > 0."""
    inv = 1.0 / np.maximum(depth.astype(np.float32), 1e-6)
    d2x = np.abs(cv2.Sobel(inv, cv2.CV_32F, 2, 0, ksize=1, borderType=cv2.BORDER_REFLECT_101))
    d2y = np.abs(cv2.Sobel(inv, cv2.CV_32F, 0, 2, ksize=1, borderType=cv2.BORDER_REFLECT_101))
    edge = (np.maximum(d2x, d2y) > rel_jump * inv).astype(np.uint8)
    edge[[0, -1], :] = 0  # reflected borders fake a second difference on slopes
    edge[:, [0, -1]] = 0
    k = 2 * radius + 1
    return cv2.dilate(edge, np.ones((k, k), np.uint8)) > 0


def snap_depth_edges(
    depth: np.ndarray, rgb: np.ndarray, radius: int = 3, rel_jump: float = 0.04
) -> np.ndarray:
    """Depth (H, W) float32 whose discontinuities are sharp and lie on image edges.

    Args:
        depth: (H, W) z-depth > 0; rgb: (H, W, 3) uint8 photo at the same size.
        radius: how far (pixels) a step may move to meet an image edge; also the half-width of
            the window whose nearest and farthest depths are the two layers.
        rel_jump: discontinuity threshold (second difference of inverse depth, relative).

    Pixels away from discontinuities are returned unchanged. In the band, each pixel's two
    candidates are the minimum and maximum depth of its (2r+1)^2 window; the window's pixels
    nearer than its mid-depth form the near layer, the rest the far layer, and the pixel joins
    the layer whose mean colour is closer to its own (on a tie, the layer nearer its own
    depth; a window holding one layer only leaves the pixel alone).
    """
    depth = np.asarray(depth, np.float32)
    band = edge_band(depth, radius, rel_jump)
    if not band.any():
        return depth.copy()
    k = 2 * radius + 1
    kernel = np.ones((k, k), np.uint8)
    near = cv2.erode(depth, kernel, borderType=cv2.BORDER_REPLICATE)
    far = cv2.dilate(depth, kernel, borderType=cv2.BORDER_REPLICATE)
    mid = np.sqrt(near * far)  # geometric middle: depth steps are ratios
    # Each pixel's own side relative to its window's middle, then mean colours per side.
    is_near = (depth < mid).astype(np.float32)
    col = rgb.astype(np.float32)
    box = (k, k)
    n_near = cv2.boxFilter(is_near, -1, box, normalize=False, borderType=cv2.BORDER_REPLICATE)
    n_far = float(k * k) - n_near
    d_near = np.zeros(depth.shape, np.float32)
    d_far = np.zeros(depth.shape, np.float32)
    for c in range(3):
        ch = col[..., c]
        s_all = cv2.boxFilter(ch, -1, box, normalize=False, borderType=cv2.BORDER_REPLICATE)
        s_near = cv2.boxFilter(
            ch * is_near, -1, box, normalize=False, borderType=cv2.BORDER_REPLICATE
        )
        m_near = s_near / np.maximum(n_near, 1.0)
        m_far = (s_all - s_near) / np.maximum(n_far, 1.0)
        d_near += (ch - m_near) ** 2
        d_far += (ch - m_far) ** 2
    # Colour decides; on a tie, the side nearer the pixel's own depth. A window with one
    # layer only (no step inside it) leaves the pixel alone.
    own_near = np.abs(np.log(depth / near)) <= np.abs(np.log(far / depth))
    take_near = (d_near < d_far) | ((d_near == d_far) & own_near)
    both = (n_near > 0) & (n_far > 0)
    take_far = ~take_near & both
    take_near &= both
    out = depth.copy()
    out[band & take_near] = near[band & take_near]
    out[band & take_far] = far[band & take_far]
    return out


def snap_reference(
    depth: np.ndarray, rgb: np.ndarray, radius: int = 3, rel_jump: float = 0.04
) -> np.ndarray:
    """Slow twin of :func:`snap_depth_edges`: the same rule, one pixel and one window at a time
    (replicated borders). Tiny images only."""
    depth = np.asarray(depth, np.float32)
    H, W = depth.shape
    band = edge_band(depth, radius, rel_jump)
    pad_d = np.pad(depth, radius, mode="edge")
    pad_c = np.pad(
        rgb.astype(np.float32), ((radius, radius), (radius, radius), (0, 0)), mode="edge"
    )
    # Every pixel's near/far split uses its own window's middle.
    mids = np.zeros((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            win = pad_d[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
            mids[y, x] = np.sqrt(np.float32(win.min()) * np.float32(win.max()))
    pad_near = np.pad(depth < mids, radius, mode="edge")
    out = depth.copy()
    for y in range(H):
        for x in range(W):
            if not band[y, x]:
                continue
            win_d = pad_d[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
            win_n = pad_near[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
            win_c = pad_c[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
            if win_n.all() or not win_n.any():
                continue  # one layer only
            c = rgb[y, x].astype(np.float32)
            dn = float(((c - win_c[win_n].mean(0)) ** 2).sum())
            df = float(((c - win_c[~win_n].mean(0)) ** 2).sum())
            lo, hi, d = win_d.min(), win_d.max(), depth[y, x]
            own_near = abs(np.log(d / lo)) <= abs(np.log(hi / d))
            out[y, x] = lo if dn < df or (dn == df and own_near) else hi
    return out
