"""Real pixels for the hole from memory frames, through the hole's estimated depth.

A memory frame can have seen a surface in colour without knowing its geometry: a depth
sensor's invalid pixels (window glare, beyond range, the frame's registration border) are kept
out of memory's geometry, so the warp can never route them. The painter has a depth for every
hole pixel (the background surfaces continued as planes); through it, each hole pixel projects
into the memory frames, and where a frame saw that spot *without depth* its real colour is the
best exemplar there is: the same surface, photographed. Where the frame knows depth there, the
warp already decided (routed it, or found it occluded), so those pixels are never taken here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class View:
    """A memory frame as the painter reads it: rgb (H, W, 3) uint8, depth (H, W) float32
    (0 = no geometry), K (3, 3), c2w (4, 4)."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    c2w: np.ndarray


def lookup_views(
    hole: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, views: list[View]
) -> tuple[np.ndarray, np.ndarray]:
    """Colours for hole pixels seen (without depth) by a memory frame.

    Args:
        hole: (H, W) bool pixels to look up; depth: (H, W) float32 their estimated z-depth;
        K, c2w: the target camera; views: memory frames, earlier ones preferred.
    Returns:
        rgb (H, W, 3) float32 [0, 1] (0 where not found) and found (H, W) bool.
    """
    H, W = hole.shape
    rgb = np.zeros((H, W, 3), np.float32)
    found = np.zeros((H, W), bool)
    ys, xs = np.nonzero(hole)
    if ys.size == 0 or not views:
        return rgb, found
    z = depth[ys, xs].astype(np.float64)
    cam = np.stack([(xs - K[0, 2]) / K[0, 0] * z, (ys - K[1, 2]) / K[1, 1] * z, z], -1)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    todo = z > 0
    for v in views:
        if not todo.any():
            break
        if (v.depth > 0).all():  # a frame with depth everywhere: the warp decided already
            continue
        hs, ws = v.depth.shape
        w2c = np.linalg.inv(v.c2w)
        p = world @ w2c[:3, :3].T + w2c[:3, 3]
        zs = p[:, 2]
        front = zs > 1e-3
        u = np.where(front, p[:, 0] / np.where(front, zs, 1.0) * v.K[0, 0] + v.K[0, 2], -1.0)
        vv = np.where(front, p[:, 1] / np.where(front, zs, 1.0) * v.K[1, 1] + v.K[1, 2], -1.0)
        inside = todo & front & (u >= 0) & (u <= ws - 1) & (vv >= 0) & (vv <= hs - 1)
        ui = np.clip(np.round(u), 0, ws - 1).astype(np.int64)
        vi = np.clip(np.round(vv), 0, hs - 1).astype(np.int64)
        ok = inside & (v.depth[vi, ui] <= 0)
        if not ok.any():
            continue
        col = _sample(v.rgb, u[ok], vv[ok])
        rgb[ys[ok], xs[ok]] = col / 255.0
        found[ys[ok], xs[ok]] = True
        todo &= ~ok
    return rgb, found


def _sample(img: np.ndarray, u: np.ndarray, v: np.ndarray, width: int = 1024) -> np.ndarray:
    """Bilinear samples (N, 3) float32 of ``img`` at (u, v) (cv2.remap takes maps of fewer
    than 32767 rows, so the N points are laid out ``width`` to a row)."""
    n = u.size
    rows = -(-n // width)
    mx = np.zeros(rows * width, np.float32)
    my = np.zeros(rows * width, np.float32)
    mx[:n], my[:n] = u, v
    out = cv2.remap(
        img, mx.reshape(rows, width), my.reshape(rows, width), cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    return out.reshape(-1, 3)[:n].astype(np.float32)
