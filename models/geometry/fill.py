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
from numba import njit

_NONE = 1 << 62  # "no crossing" span


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


def nearest_known(known: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """(H, W) int: coordinate along ``axis`` of the nearest known pixel before each pixel in
    scan direction (after it when ``reverse``), -1 when there is none."""
    n = known.shape[axis]
    coord = np.arange(n).reshape((1, n) if axis == 1 else (n, 1))
    if not reverse:
        return np.maximum.accumulate(np.where(known, coord, -1), axis=axis)
    flipped = np.flip(np.where(known, n - 1 - coord, -1), axis=axis)
    last = np.flip(np.maximum.accumulate(flipped, axis=axis), axis=axis)
    return np.where(last >= 0, n - 1 - last, -1)


def hole_crossings(
    depth: np.ndarray,
    known: np.ndarray,
    step: float = 0.08,
    max_span: int | None = None,
    reference: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each hole pixel's hole is crossed, and which border of the crossing is the occluder.

    Along the row and the column through an unknown pixel, the nearest known pixels with depth
    on its two sides bound the hole there. The pixel takes the *shorter* of the two crossings
    (both when equally long): that is the hole's own width at the pixel. A vertical strip
    opened beside a pole is crossed along its rows, from the pole to the surface behind it, so
    it takes that surface's depth however far up the strip reaches into the sky; it takes the
    sky only on rows where the sky is beside it. A hole with known pixels on one side only
    (the frame's edge after a turn, the floor below a new view) is not a disocclusion.

    Args:
        depth: (H, W) float, z-depth (0 = unknown depth); known: (H, W) bool.
        step: relative depth difference above which the nearer end of a crossing occludes.
        max_span: crossings longer than this (px between their ends) give no ``far`` (a wide
            gap between two buildings is not a strip beside one; None: no limit).
    Returns:
        far: (H, W) float32, for unknown pixels the farther end's depth of their crossing (what
            the hole reveals), 0 where no axis has known pixels on both sides (or the crossing
            is longer than ``max_span``);
        occluder: (H, W) float32, for known pixels that are the nearer end (by more than
            ``step``) of a crossing, the largest depth across it; 0 elsewhere.
    Compiled (four scans and one pass, :func:`_crossings_kernel`); ``reference``: the numpy
    twin :func:`hole_crossings_reference` (whole-array scans), the same bits.
    """
    if reference:
        return hole_crossings_reference(depth, known, step, max_span)
    depth = np.ascontiguousarray(depth, np.float32)
    known = np.ascontiguousarray(known, np.bool_)
    far = np.zeros(depth.shape, np.float32)
    occluder = np.zeros(depth.shape, np.float32)
    span = -1 if max_span is None else int(max_span)
    _crossings_kernel(depth, known, np.float32(1 - step), span, far, occluder)
    return far, occluder


@njit(cache=True, nogil=True)
def _crossings_kernel(depth, known, thr, max_span, far, occluder):
    """:func:`hole_crossings` in place on ``far``, ``occluder`` (H, W) float32 zeros. ``thr``
    float32 ``1 - step`` (the twin multiplies in float32 too); ``max_span`` < 0: no limit."""
    H, W = depth.shape
    ends = np.full((4, H, W), -1, np.int32)  # row before / after, column before / after
    for y in range(H):
        last = -1
        for x in range(W):
            if known[y, x] and depth[y, x] > 0:
                last = x
            ends[0, y, x] = last
        last = -1
        for x in range(W - 1, -1, -1):
            if known[y, x] and depth[y, x] > 0:
                last = x
            ends[1, y, x] = last
    for y in range(H):  # row by row: the column scans read memory in order
        for x in range(W):
            ends[2, y, x] = (
                y if known[y, x] and depth[y, x] > 0 else (ends[2, y - 1, x] if y else -1)
            )
    for y in range(H - 1, -1, -1):
        for x in range(W):
            kd = known[y, x] and depth[y, x] > 0
            ends[3, y, x] = y if kd else (ends[3, y + 1, x] if y < H - 1 else -1)
    for y in range(H):
        for x in range(W):
            if known[y, x]:
                continue
            ar, br, ac, bc = ends[0, y, x], ends[1, y, x], ends[2, y, x], ends[3, y, x]
            s_r = br - ar if ar >= 0 and br >= 0 else _NONE
            s_c = bc - ac if ac >= 0 and bc >= 0 else _NONE
            s = min(s_r, s_c)
            if s == _NONE:
                continue
            f = np.float32(0.0)
            for axis in range(2):
                if (s_r if axis == 0 else s_c) != s:
                    continue
                ya, xa, yb, xb = (y, ar, y, br) if axis == 0 else (ac, x, bc, x)
                da, db = depth[ya, xa], depth[yb, xb]
                f = max(f, max(da, db))
                if da < db * thr:
                    occluder[ya, xa] = max(occluder[ya, xa], db)
                if db < da * thr:
                    occluder[yb, xb] = max(occluder[yb, xb], da)
            far[y, x] = np.float32(0.0) if 0 <= max_span < s else f


def hole_crossings_reference(
    depth: np.ndarray, known: np.ndarray, step: float = 0.08, max_span: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The numpy twin of :func:`hole_crossings` (the same outputs, by whole-array scans)."""
    H, W = depth.shape
    depth = np.asarray(depth, np.float32)
    kd = known & (depth > 0)
    hole = ~known
    far = np.zeros((H, W), np.float32)
    occluder = np.zeros((H, W), np.float32)
    ends, spans = [], []
    for axis in (1, 0):
        a = nearest_known(kd, axis, False)
        b = nearest_known(kd, axis, True)
        ends.append((a, b))
        spans.append(np.where(hole & (a >= 0) & (b >= 0), b - a, np.iinfo(np.int64).max))
    shortest = np.minimum(spans[0], spans[1])
    for axis, (a, b), span in zip((1, 0), ends, spans, strict=True):
        ys, xs = np.nonzero((span == shortest) & (span < np.iinfo(np.int64).max))
        ia, ib = a[ys, xs], b[ys, xs]
        pa = (ys, ia) if axis == 1 else (ia, xs)
        pb = (ys, ib) if axis == 1 else (ib, xs)
        da, db = depth[pa], depth[pb]
        np.maximum.at(far, (ys, xs), np.maximum(da, db))
        for near, d_near, d_far in ((pa, da, db), (pb, db, da)):
            sel = d_near < d_far * (1 - step)
            np.maximum.at(occluder, (near[0][sel], near[1][sel]), d_far[sel])
    if max_span is not None:
        far[shortest > max_span] = 0.0
    return far, occluder


def bound_to_crossing(fill: np.ndarray, far: np.ndarray, tol: float = 0.1) -> np.ndarray:
    """(H, W) float32: where a pixel has a crossing (``far`` > 0, :func:`hole_crossings`), the
    ``fill`` depth if it is within a factor ``1 + tol`` of the crossing's far depth, else that
    far depth; ``fill`` elsewhere.

    A smooth or planar fill reads the hole's whole border (the sky above a strip, the road
    below it); the crossing says which surface the hole reveals. Close to it the fill's own
    slope is kept (a facade continues in perspective). Not clipped to the band's edge: a
    target 1 + tol farther than the surface it reveals would make that surface look like a
    nearer layer to the painter (its ``fg_tol``).
    """
    ok = np.abs(np.log(np.maximum(fill, 1e-6) / np.maximum(far, 1e-6))) <= np.log1p(tol)
    return np.where((far > 0) & ~ok, far, fill).astype(np.float32)


def near_side(
    depth: np.ndarray, known: np.ndarray, step: float = 0.08, band: int = 8, layer: float = 0.5
) -> np.ndarray:
    """(H, W) bool: the known pixels on the near side of a disocclusion, never sources for it.

    Those within ``band`` px of an occluding end of a hole crossing (:func:`hole_crossings`)
    that are nearer than the background it hides (by ``step``) *and* in the occluder's own
    depth layer (nearer than ``1 + layer`` times its edge): the body of the pole behind its
    edge, not the wall beside the strip that happens to be near where the pole crosses the sky.
    """
    _, occluder = hole_crossings(depth, known, step)
    k = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    far = cv2.dilate(occluder, k)
    edge = cv2.dilate(np.where(occluder > 0, depth, 0.0).astype(np.float32), k)
    return known & (depth > 0) & (depth < far * (1 - step)) & (depth < edge * (1 + layer))


def background_known(
    depth: torch.Tensor, known: torch.Tensor, step: float = 0.08, band: int = 8
) -> torch.Tensor:
    """The known pixels a hole may be filled from: those within ``band`` px of a hole, minus
    the near side of its disocclusions (:func:`near_side`).

    Disocclusions open behind foreground objects, so only the background side of their border
    may continue into them; pixels farther than ``band`` from any hole are not sources at all
    (push-pull would otherwise carry the foreground in through its coarse levels).
    """
    if bool(known.all()) or not bool(known.any()):
        return known
    d = depth.detach().cpu().float().numpy()
    near = torch.from_numpy(near_side(d, known.cpu().numpy(), step, band)).to(known.device)
    k = 2 * band + 1
    near_hole = F.max_pool2d((~known).float()[None, None], k, stride=1, padding=band)[0, 0] > 0
    ring = known & near_hole
    sources = ring & ~near
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
    far, _ = hole_crossings(depth.detach().cpu().float().numpy(), known.cpu().numpy())
    out = torch.from_numpy(bound_to_crossing(out.cpu().numpy(), far)).to(depth)
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
