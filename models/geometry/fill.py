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


def push_pull(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels by pyramid push-pull (smooth membrane interpolation).

    Args:
        values: (H, W, C) float; known: (H, W) bool, at least one True.
        Unknown pixels with no known pixel anywhere get the global mean of the known ones.
    Returns:
        (H, W, C): known pixels unchanged, unknown ones interpolated from their surroundings.
    """
    x = values.permute(2, 0, 1)[None] * known[None, None].float()
    w = known[None, None].float()
    pyramid = []
    # Pool down to a single cell (odd sizes are zero-padded: padding carries no weight), so
    # every unknown pixel, however far from the known ones, ends up with an estimate.
    while max(x.shape[-2:]) > 1:
        ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
        pyramid.append((x, w, (ph, pw)))
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
            w = F.pad(w, (0, pw, 0, ph))
        x = F.avg_pool2d(x, 2)
        w = F.avg_pool2d(w, 2)
    filled = x / w.clamp(min=1e-12)
    for x, w, (ph, pw) in reversed(pyramid):
        H, W = x.shape[-2:]
        up = F.interpolate(filled, size=(H + ph, W + pw), mode="bilinear", align_corners=False)
        up = up[..., :H, :W]
        # A pixel's own (pooled) evidence weighs by its coverage; the rest comes from above.
        a = w.clamp(max=1.0)
        filled = x / w.clamp(min=1e-12) * a + up * (1 - a)
    out = filled[0].permute(1, 2, 0)
    return torch.where(known[..., None], values, out)


def _far_field(
    depth: torch.Tensor, known: torch.Tensor, reach: int, work: int = 4, iters: int = 48
) -> torch.Tensor:
    """(H, W) the farthest known depth reachable across unknown regions (at 1/work size).

    Max-pooled to a coarse grid, then repeatedly dilated through unknown cells only, so a hole
    of any width carries the depth of its far border over to its near border, and then on for
    ``reach`` more pixels into the known side.
    """
    H, W = depth.shape
    d = torch.where(known, depth, torch.zeros_like(depth))[None, None]
    coarse = F.max_pool2d(d, work, ceil_mode=True)
    hole = F.max_pool2d((~known).float()[None, None], work, ceil_mode=True) > 0
    for _ in range(iters):
        grown = F.max_pool2d(coarse, 3, stride=1, padding=1)
        nxt = torch.where(hole, torch.maximum(coarse, grown), coarse)
        if torch.equal(nxt, coarse):
            break
        coarse = nxt
    r = -(-reach // work) + 1  # coarse cells covering ``reach`` pixels from any offset
    coarse = F.max_pool2d(coarse, 2 * r + 1, stride=1, padding=r)
    return F.interpolate(coarse, size=(H, W), mode="nearest")[0, 0]


def background_known(
    depth: torch.Tensor, known: torch.Tensor, step: float = 0.08, band: int = 8
) -> torch.Tensor:
    """The known pixels a hole may be filled from: those within ``band`` px of a hole, minus
    foreground (``step`` relative nearer than the farthest depth across the hole).

    Disocclusions open behind foreground objects, so only the background side of their border
    may continue into them; pixels farther than ``band`` from any hole are not sources at all
    (push-pull would otherwise carry the foreground in through its coarse levels).
    """
    if bool(known.all()) or not bool(known.any()):
        return known
    far = _far_field(depth, known, band)
    k = 2 * band + 1
    near_hole = F.max_pool2d((~known).float()[None, None], k, stride=1, padding=band)[0, 0] > 0
    ring = known & near_hole
    sources = ring & ~(depth < far * (1 - step))
    return sources if bool(sources.any()) else ring


def fill_depth(depth: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Depth (H, W) for unknown pixels, continued from the background side (push-pull)."""
    if bool(known.all()):
        return depth
    if not bool(known.any()):
        raise ValueError("cannot fill depth: no known pixel")
    bg = background_known(depth, known)
    if not bool(bg.any()):
        bg = known
    # Log depth: a membrane between near and far borders should not favour either end.
    logd = torch.where(bg, depth.clamp(min=1e-6).log(), torch.zeros_like(depth))
    out = push_pull(logd[..., None], bg)[..., 0].exp()
    return torch.where(known, depth, out)


def inpaint_rgb(
    rgb: torch.Tensor,
    known: torch.Tensor,
    depth: torch.Tensor | None = None,
    work_width: int = 192,
    radius: int = 5,
) -> torch.Tensor:
    """Paint unknown pixels of rgb (H, W, 3) float [0, 1] from the background side.

    Two layers: a full-size push-pull near the border (sharp continuation) and OpenCV's Telea
    inpainting at a coarse working size for structure deep inside (holes can be a third of the
    frame; Telea's cost grows with hole area). Known pixels are returned untouched.
    Deterministic. (Mirroring high frequencies in across the border was tried: it ghosts
    building outlines into the sky, worse than a smooth fill.)
    """
    if bool(known.all()):
        return rgb
    src = background_known(depth, known) if depth is not None else known
    if not bool(src.any()):
        return torch.full_like(rgb, 0.5)
    H, W = known.shape
    smooth = push_pull(rgb, src)
    img = (smooth.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    # Telea fills the holes and the foreground rim excluded from the sources; pixels far from
    # any hole keep their colour (they are outside its reach anyway).
    rim = known & ~src & (F.max_pool2d((~known).float()[None, None], 17, 1, 8)[0, 0] > 0)
    hole = ((~known) | rim).numpy().astype(np.uint8) * 255
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
