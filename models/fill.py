"""Hole filling for never-seen pixels: push-pull interpolation and background-first inpainting.

Disocclusion holes open *behind* foreground objects, so they must be filled from the background
side. Pixels on the near side of a depth step next to a hole are therefore removed from the
known set before filling, for colour and for depth alike.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def push_pull(values: torch.Tensor, known: torch.Tensor, levels: int = 12) -> torch.Tensor:
    """Fill unknown pixels by pyramid push-pull (smooth membrane interpolation).

    Args:
        values: (H, W, C) float; known: (H, W) bool.
    Returns:
        (H, W, C): known pixels unchanged, unknown ones interpolated from their surroundings.
    """
    x = values.permute(2, 0, 1)[None] * known[None, None].float()
    w = known[None, None].float()
    pyramid = [(x, w)]
    for _ in range(levels):
        if min(x.shape[-2:]) <= 1:
            break
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
        pyramid.append((x, w))
    filled = pyramid[-1][0] / pyramid[-1][1].clamp(min=1e-8)
    for x, w in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=x.shape[-2:], mode="bilinear", align_corners=False)
        # A pixel's own (pooled) evidence weighs by its coverage; the rest comes from above.
        a = w.clamp(max=1.0)
        filled = x / w.clamp(min=1e-8) * a + up * (1 - a)
    out = filled[0].permute(1, 2, 0)
    return torch.where(known[..., None], values, out)


def background_known(depth: torch.Tensor, known: torch.Tensor, step: float = 0.08) -> torch.Tensor:
    """Known pixels minus near-side pixels of depth steps that border a hole.

    A known pixel within 3 px of a hole whose depth is ``step`` (relative) nearer than the
    farthest depth around it is foreground: it must not bleed into the disocclusion.
    """
    if bool(known.all()) or not bool(known.any()):
        return known
    far = torch.where(known, depth, torch.zeros_like(depth))
    far = F.max_pool2d(far[None, None], 7, stride=1, padding=3)[0, 0]
    hole_near = F.max_pool2d((~known).float()[None, None], 7, stride=1, padding=3)[0, 0] > 0
    foreground = known & hole_near & (depth < far * (1 - step))
    return known & ~foreground


def fill_depth(depth: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Depth (H, W) for unknown pixels, continued from the background side (push-pull)."""
    if bool(known.all()):
        return depth
    if not bool(known.any()):
        raise ValueError("cannot fill depth: no known pixel")
    bg = background_known(depth, known)
    # Interpolate inverse depth: far regions then do not dominate the average.
    inv = torch.where(bg, 1.0 / depth.clamp(min=1e-6), torch.zeros_like(depth))
    filled = push_pull(inv[..., None], bg)[..., 0]
    out = 1.0 / filled.clamp(min=1e-6)
    return torch.where(known, depth, out)


def inpaint_rgb(
    rgb: torch.Tensor,
    known: torch.Tensor,
    depth: torch.Tensor | None = None,
    work_width: int = 192,
    radius: int = 5,
) -> torch.Tensor:
    """Paint unknown pixels of rgb (H, W, 3) float [0, 1] from the background side.

    Structure comes from OpenCV's Telea inpainting at a coarse working size (holes can be a
    third of the frame; Telea's cost grows with hole area), detail near the hole border from a
    full-size push-pull; known pixels are returned untouched.
    """
    if bool(known.all()):
        return rgb
    src = background_known(depth, known) if depth is not None else known
    if not bool(src.any()):
        return torch.full_like(rgb, 0.5)
    H, W = known.shape
    smooth = push_pull(rgb, src)
    img = (smooth.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    hole = (~src).numpy().astype(np.uint8) * 255
    scale = min(1.0, work_width / W)
    if scale < 1.0:
        size = (max(8, round(W * scale)), max(8, round(H * scale)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        small_hole = cv2.resize(hole, size, interpolation=cv2.INTER_AREA) > 0
        painted = cv2.inpaint(small, small_hole.astype(np.uint8), radius, cv2.INPAINT_TELEA)
        painted = cv2.resize(painted, (W, H), interpolation=cv2.INTER_LINEAR)
    else:
        painted = cv2.inpaint(img, hole, radius, cv2.INPAINT_TELEA)
    painted_t = torch.from_numpy(painted).float() / 255.0
    # Near the border the full-size push-pull is sharper; deep inside, the inpainted structure.
    dist = cv2.distanceTransform(hole, cv2.DIST_L2, 3)
    a = torch.from_numpy(np.clip(dist / 6.0, 0, 1))[..., None]
    out = smooth * (1 - a) + painted_t * a
    return torch.where(known[..., None], rgb, out.clamp(0, 1))
