"""Geometry-aware exemplar completion: paint never-seen pixels with texture copied from seen ones.

One frame (:func:`paint_exemplar`)::

    windows     small holes (<= 5 % of the frame) are painted in windows with 48 px of seen
                context around each group, the rest whole                    (windows.py)
    geometry    at half size: what is background (disocclusions), the hole's depth (the
                background surfaces continued as planes, the seen floor continued as a floor),
                normals                                                      (guide.py)
    look up     hole pixels a memory frame saw in colour but not in depth: their real colour
                                                                             (lookup.py)
    split       thin cracks -> the cheap path (weighted mean of background neighbours)
                regions     -> exemplar completion:
    complete    at half size, coarse to fine (Wexler et al. 2007 with PatchMatch): EM of
                nearest-neighbour search (sources restricted by depth layer, preferring the
                same depth, orientation and texture strength, read at the perspective scale)
                and patch voting                                             (complete.py)
    copy up     full-size pixels copied from the full-size sources through the half-size field
    detail      in holes enclosed by seen pixels (disocclusions), paint sharper than the seen
                background around it is low-passed down to its texture strength (a soft,
                magnified surround gets soft paint)                              (detail.py)

Texture is copied only from pixels that trace back to real observations; earlier paint is
context, so a smear painted once cannot spread. The texture-strength feature keeps a clear sky
or a blank wall smooth: its surround asks for smooth sources. Deterministic under ``seed``.
``kernels`` selects the compiled path (default) or the plain-Python reference (tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from models.geometry.fill import bound_to_crossing, hole_crossings
from models.synthesis.exemplar import guide
from models.synthesis.exemplar.complete import (
    Level,
    build_levels,
    complete,
    has_sources,
    target_weights,
    targets_of,
)
from models.synthesis.exemplar.config import PainterConfig
from models.synthesis.exemplar.detail import cap_detail
from models.synthesis.exemplar.lookup import View, lookup_views
from models.synthesis.exemplar.windows import hole_windows


@dataclass
class PaintResult:
    """rgb: (H, W, 3) float32 [0, 1], known pixels untouched; depth: (H, W) float32, known
    depth kept and the hole continued from the background surfaces; meta: what was done
    (fractions of the frame, timings, and a ``note`` when it fell back to a smooth fill)."""

    rgb: np.ndarray
    depth: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _kernels(name: str) -> ModuleType:
    if name == "reference":
        from models.synthesis.exemplar import reference

        return reference
    from models.synthesis.exemplar import patchmatch

    return patchmatch


def _half_size(shape: tuple[int, int]) -> tuple[int, int]:
    return (shape[1] + 1) // 2, (shape[0] + 1) // 2  # cv2's (width, height)


def _full(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Half-size bool: every full-size pixel below is in ``mask``."""
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999


def _half_depth(depth: np.ndarray) -> np.ndarray:
    """Half-size depth (geometric mean of each 2x2 block), 0 unless all four are known."""
    size = _half_size(depth.shape)
    has = depth > 0
    logd = np.where(has, np.log(np.maximum(depth, 1e-6)), 0.0).astype(np.float32)
    mean = cv2.resize(logd, size, interpolation=cv2.INTER_AREA)
    return np.where(_full(has, size), np.exp(mean), 0.0).astype(np.float32)


def _up(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a half-size map to full ``shape`` (H, W)."""
    return cv2.resize(values, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def paint_exemplar(
    rgb: np.ndarray,
    known: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    seed: int = 0,
    stretch: np.ndarray | None = None,
    config: PainterConfig | None = None,
    kernels: str = "compiled",
    c2w: np.ndarray | None = None,
    views: list[View] | None = None,
    observed: np.ndarray | None = None,
    up_cam: np.ndarray | None = None,
) -> PaintResult:
    """Fill the pixels where ``known`` is False.

    Args:
        rgb: (H, W, 3) float32 [0, 1] (values under unknown pixels are ignored).
        known: (H, W) bool. depth: (H, W) float32 metres, > 0 where known (0 = unknown depth;
            such pixels are still colour sources).
        K: (3, 3) intrinsics. seed: makes the result deterministic.
        stretch: (H, W) float32 magnification of routed pixels (None: unknown); pixels
            magnified more than ``config.max_stretch`` are not texture sources.
        c2w, views: the target's pose and memory frames to look real pixels up in (optional).
        observed: (H, W) bool, known pixels that trace back to a real observation (None: all).
            Texture is copied from those; earlier paint is context, never a source.
        up_cam: (3,) the world's up in camera coordinates (None: unknown). Where the seen
            floor's plane passes in front of the continued surfaces, the hole is floor.
    """
    cfg = config or PainterConfig()
    hole = ~known
    boxes = None
    if known.any():
        boxes = hole_windows(hole, cfg.window_margin, cfg.window_share, max_hole=cfg.window_hole)
    args = (rgb, known, depth, K, seed, stretch, cfg, kernels, c2w, views, observed, up_cam)
    if boxes is None:
        return _paint_whole(*args)
    # Each group of holes in its own window (K's principal point moved to the window's corner):
    # the cost follows what has to be painted, not the frame size (models.synthesis.exemplar.
    # windows). Known pixels stay as they are outside the windows, as inside.
    t0 = time.perf_counter()
    H, W = hole.shape
    out = np.clip(np.asarray(rgb, np.float32), 0.0, 1.0)
    depth_out = np.where(known, depth, 0.0).astype(np.float32)
    meta: dict[str, Any] = {
        "painted": float(hole.mean()),
        "painter": "exemplar",
        "depth_hint": "surfaces",
        "windows": len(boxes),
    }
    notes, shares = [], 0.0
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        win = (slice(y0, y1), slice(x0, x1))
        K_w = np.array(K, np.float64)
        K_w[0, 2] -= x0
        K_w[1, 2] -= y0
        res = _paint_whole(
            rgb[win], known[win], depth[win], K_w, seed + 104_729 * i,
            None if stretch is None else stretch[win], cfg, kernels, c2w, views,
            None if observed is None else observed[win], up_cam,
        )  # fmt: skip
        out[win], depth_out[win] = res.rgb, res.depth
        share = (y1 - y0) * (x1 - x0) / (H * W)
        shares += share
        for key in ("floor", "ceiling", "looked_up", "cracks", "regions"):
            if key in res.meta:
                meta[key] = meta.get(key, 0.0) + res.meta[key] * share
        meta["levels"] = max(meta.get("levels", 0), res.meta.get("levels", 0))
        if res.meta.get("note") and res.meta["note"] not in notes:
            notes.append(res.meta["note"])
    meta["window_share"] = shares
    if notes:
        meta["note"] = "; ".join(notes)
    meta["ms"] = (time.perf_counter() - t0) * 1e3
    return PaintResult(out, depth_out, meta)


def _paint_whole(
    rgb: np.ndarray,
    known: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    seed: int,
    stretch: np.ndarray | None,
    cfg: PainterConfig,
    kernels: str,
    c2w: np.ndarray | None,
    views: list[View] | None,
    observed: np.ndarray | None,
    up_cam: np.ndarray | None,
) -> PaintResult:
    """:func:`paint_exemplar` on the whole of the given frame (or window)."""
    kern = _kernels(kernels)
    t0 = time.perf_counter()
    rgb = np.ascontiguousarray(rgb, np.float32)
    H, W = known.shape
    hole = ~known
    depth = np.where(known, depth, 0.0).astype(np.float32)
    meta: dict[str, Any] = {
        "painted": float(hole.mean()),
        "painter": "exemplar",
        "depth_hint": "surfaces",  # the depth continues surfaces (see models.pipeline)
    }
    if not hole.any():
        return PaintResult(rgb.copy(), depth, meta)
    if not known.any():
        meta["note"] = "nothing of this view was seen before: flat grey"
        return PaintResult(np.full_like(rgb, 0.5), np.ones_like(depth), meta)
    real = known.copy() if observed is None else known & observed

    # Geometry at half size.
    d_h = _half_depth(depth)
    has_h = d_h > 0
    band_h = max(2, cfg.band // 2)
    K_h = K.astype(np.float64).copy()
    K_h[:2] /= 2.0
    if has_h.any():
        bg_h = guide.background_sources(d_h, has_h, band=band_h)
        ring_h = bg_h & guide.near_hole(has_h, band_h)
        dfill_h = guide.fill_depth_planar(d_h, has_h, ring_h)
        planar_h = dfill_h
        if cfg.far_radius > 0:  # beside a near object the hole continues what is behind it
            far_h = guide.far_layer(d_h, ring_h, cfg.far_radius)
            dfill_h = np.where(has_h, dfill_h, np.maximum(dfill_h, far_h)).astype(np.float32)
        # ... but not the backdrop seen somewhere around it: a hole whose depth went more than
        # ``cross_ratio`` times past the far end of its own crossing (the sky above a strip
        # beside a pole, while the facade is beside it) reveals that far end (the facade).
        cross_h, _ = hole_crossings(d_h, has_h, max_span=2 * cfg.far_radius)
        beyond = ~has_h & (cross_h > 0) & (dfill_h > cross_h * cfg.cross_ratio)
        dfill_h = np.where(beyond, bound_to_crossing(planar_h, cross_h), dfill_h)
        dfill_h = dfill_h.astype(np.float32)
    else:
        bg_h, dfill_h = np.ones(d_h.shape, bool), np.ones(d_h.shape, np.float32)
        cross_h = np.zeros(d_h.shape, np.float32)
    nrm_h = guide.normals_from_depth(dfill_h, K_h)
    if up_cam is not None and has_h.any():
        up = np.asarray(up_cam, np.float64)
        for name, n_cam in (("floor", up), ("ceiling", -up)):
            z_plane = guide.plane_depth(d_h, has_h, K_h, n_cam, nrm_h)
            if z_plane is not None:
                on = ~has_h & (z_plane < dfill_h)
                dfill_h = np.where(on, z_plane, dfill_h).astype(np.float32)
                meta[name] = float(on.mean())
        nrm_h = guide.normals_from_depth(dfill_h, K_h)
    # Bilinear inside surfaces, nearest across depth steps (never a depth between two layers).
    inv = _up(1.0 / dfill_h, (H, W))
    inv_n = cv2.resize(1.0 / dfill_h, (W, H), interpolation=cv2.INTER_NEAREST)
    inv = np.where(np.abs(inv - inv_n) > 0.1 * inv_n, inv_n, inv)
    depth_f = np.where(depth > 0, depth, 1.0 / np.maximum(inv, 1e-6)).astype(np.float32)

    # Real pixels first: memory frames that saw the hole in colour but not in depth.
    seen = known.copy()
    if views and c2w is not None:
        got, found = lookup_views(hole, depth_f, K, c2w, views)
        rgb = np.where(found[..., None], got, rgb)
        seen |= found
        real |= found
        meta["looked_up"] = float(found.mean())
    bg = ((_up(bg_h.astype(np.float32), (H, W)) > 0.5) | ~known) & seen
    cracks, regions = guide.split_holes(~seen, cfg.crack_radius)
    out = rgb.copy()
    _fill_cracks(out, bg, seen, cracks, cfg, kern)
    meta.update(cracks=float(cracks.mean()), regions=float(regions.mean()))
    if regions.any():
        ring = bg & guide.near_hole(seen, cfg.band)
        wring = (ring if ring.any() else seen).astype(np.float32)
        if seen.mean() < cfg.min_known:
            note = f"almost nothing of this view was seen before ({seen.mean():.1%}): smooth fill"
        else:
            src = seen if stretch is None else seen & ~(stretch > cfg.max_stretch)
            note = _paint_regions(
                out, regions, src, real, bg & real, dfill_h, nrm_h, wring, seed, cfg, kern, meta
            )
        if note:
            out[regions] = guide.push_pull_np(out, wring)[regions]
            meta["note"] = note
        elif cfg.detail_slack > 0:
            # Copied texture no sharper than the seen background around it (detail.py), where
            # the hole is enclosed by it (crossed by seen pixels on both sides, as a
            # disocclusion is): a turn's new side continues into what nothing saw, and the
            # seam beside it says little about the detail there. The cracks' weighted means
            # and a smooth fallback are soft already.
            enclosed = regions & (_up((cross_h > 0).astype(np.float32), (H, W)) > 0.5)
            if enclosed.any():
                out = cap_detail(out, enclosed, bg & real, depth_f, slack=cfg.detail_slack)
    meta["ms"] = (time.perf_counter() - t0) * 1e3
    return PaintResult(np.clip(out, 0.0, 1.0), depth_f, meta)


def _fill_cracks(
    out: np.ndarray, bg: np.ndarray, seen: np.ndarray, cracks: np.ndarray, cfg: PainterConfig,
    kern: ModuleType,
) -> None:  # fmt: skip
    """The cheap path, in place: each crack pixel from its background neighbours (any seen
    neighbour when none is background; push-pull for the rare pixel no window reaches)."""
    if not cracks.any():
        return
    yx = np.ascontiguousarray(np.argwhere(cracks).astype(np.int32))
    weight = np.where(bg, 1.0, np.where(seen, 1e-3, 0.0)).astype(np.float32)
    done = kern.fill_cracks(out, weight, yx, cfg.crack_radius + 2, out) > 0
    if not done.all():
        rest = yx[~done]
        out[rest[:, 0], rest[:, 1]] = guide.push_pull_np(out, weight)[rest[:, 0], rest[:, 1]]


def _paint_regions(
    out: np.ndarray, regions: np.ndarray, sources: np.ndarray, real: np.ndarray,
    texture_ref: np.ndarray, dfill_h: np.ndarray, nrm_h: np.ndarray, wring: np.ndarray,
    seed: int, cfg: PainterConfig, kern: ModuleType, meta: dict[str, Any],
) -> str | None:  # fmt: skip
    """Exemplar completion of ``regions`` into ``out`` (H, W, 3), in place: matched at half
    size, copied at full size from the ``sources`` pixels (``real`` ones preferred).
    ``texture_ref`` marks the real background pixels whose texture strength the hole should
    have. Returns a note when no source exists (the caller then keeps the smooth fill)."""
    H, W = regions.shape
    r = cfg.patch // 2
    size = _half_size((H, W))
    context = ~regions  # cracks are filled: seen context at every level, never sources
    cov = cv2.resize(context.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    img_h = cv2.resize(out * context[..., None], size, interpolation=cv2.INTER_AREA)
    img_h = (img_h / np.maximum(cov, 1e-6)[..., None]).astype(np.float32)
    known_h = cov > 0.999
    ok_h = _full(sources, size) & known_h
    logd = np.log(np.maximum(dfill_h, 1e-6)).astype(np.float32)
    lv0 = Level(img_h, known_h, ok_h, _full(real, size), _full(texture_ref, size), logd, nrm_h)
    depth_px = float(cv2.distanceTransform(regions.astype(np.uint8), cv2.DIST_L2, 3).max()) / 2
    levels = build_levels(lv0, depth_px, r, cfg.min_level_size)
    if not has_sources(levels[-1], r):
        return "no seen patch to copy from: smooth fill"
    lo, hi = cfg.scale_range
    prm = np.array([cfg.fg_tol, lo, hi, cfg.fg_penalty], np.float64)
    targets, nnf, cost, img = complete(levels, cv2.resize(wring, size), cfg, seed, kern, prm)
    # Full size: each region pixel copied from the full-size sources through the field.
    hole_h = ~known_h
    _, tid = targets_of(hole_h)
    full = _up(img, (H, W))  # where no match reads a source: the half-size result
    cn = cost / float((2 * r + 1) ** 2 * 3)
    finite = cn[np.isfinite(cn)]
    sig2 = max(float(np.percentile(finite, 75)), 1e-5) if finite.size else 1.0
    tw = target_weights(hole_h, targets)
    src_f = (sources & context).astype(np.uint8)
    reg8 = regions.astype(np.uint8)
    kern.copy_up(out, src_f, logd, targets, tid, nnf, cn, tw, prm, sig2, cfg.vote_tau, reg8, full)
    out[regions] = full[regions]
    # No colour step at the border (the previous frame's paint, the seen surround): the
    # low frequencies bend to meet it, computed at half size (they are smooth).
    half = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    bg_h = cv2.resize(wring, size, interpolation=cv2.INTER_AREA) > 0.5
    corr = guide.seam_correction(half, ~known_h, bg_h)
    out[regions] += _up(corr, (H, W))[regions]
    meta["levels"] = len(levels) + 1
    return None
