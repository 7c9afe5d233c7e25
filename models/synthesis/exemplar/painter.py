"""Geometry-aware exemplar completion: paint never-seen pixels with texture copied from seen ones.

One frame, coarse to fine (Wexler et al. 2007, with PatchMatch nearest-neighbour fields)::

    guides      background sources, planar depth for the hole, normals     (guide.py)
    split       thin cracks -> normalised convolution (cheap, smooth)
                regions     -> exemplar completion below
    pyramid     area-downsampled colour, coverage, log depth, normals; coarsest level where
                the deepest hole pixel is a few px from the border
    coarsest    hole initialised by a smooth background-first fill; random field
    each level  EM: PatchMatch (sources restricted by depth layer, orientation and scale)
                then patch voting; the field is upsampled to the next level
    smooth      where the hole's seen border is smooth (sky, a blank wall) the smooth fill is
                kept, so no texture is invented in a clear sky

Deterministic under ``seed``. ``kernels`` selects the compiled path (default) or the plain
Python reference (tests only: same field, same output).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import cv2
import numpy as np

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
from models.synthesis.exemplar.guide import normals_from_depth
from models.synthesis.exemplar.lookup import View, lookup_views


@dataclass
class PaintResult:
    """rgb: (H, W, 3) float32 [0, 1], known pixels untouched; depth: (H, W) float32, known
    depth kept and the hole continued from the background surfaces; meta: what was done."""

    rgb: np.ndarray
    depth: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _kernels(name: str) -> ModuleType:
    if name == "reference":
        from models.synthesis.exemplar import reference

        return reference
    from models.synthesis.exemplar import patchmatch

    return patchmatch


def _border_energy(rgb: np.ndarray, known: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """(H, W) local gradient energy of the seen image, carried into the hole from its
    background border (push-pull), at a quarter size: how textured the hole's surround is."""
    H, W = known.shape
    size = (max(4, W // 4), max(4, H // 4))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ks = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999
    gx = np.zeros_like(small)
    gy = np.zeros_like(small)
    gx[:, 1:] = small[:, 1:] - small[:, :-1]
    gy[1:] = small[1:] - small[:-1]
    g = (gx**2 + gy**2).mean(-1) / 16.0  # per full-size pixel step
    g = np.where(ks, g, 0.0).astype(np.float32)
    w = (cv2.resize(bg.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5) & ks
    local = cv2.blur(g, (3, 3)) / np.maximum(cv2.blur(ks.astype(np.float32), (3, 3)), 1e-6)
    e = guide.push_pull_np(local[..., None], w.astype(np.float32))[..., 0]
    return cv2.resize(e, (W, H), interpolation=cv2.INTER_LINEAR)


def _half(rgb: np.ndarray, seen: np.ndarray, ok: np.ndarray, depth: np.ndarray):
    """Half-size colour, seen/ok masks (fully seen 2x2 blocks) and depth (seen pixels only)."""
    h, w = seen.shape
    size = ((w + 1) // 2, (h + 1) // 2)
    sf = seen.astype(np.float32)
    cov = cv2.resize(sf, size, interpolation=cv2.INTER_AREA)
    img = cv2.resize(rgb * sf[..., None], size, interpolation=cv2.INTER_AREA)
    img = (img / np.maximum(cov, 1e-6)[..., None]).astype(np.float32)
    okh = cv2.resize(ok.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999
    dk = (depth > 0).astype(np.float32)
    dcov = cv2.resize(dk, size, interpolation=cv2.INTER_AREA)
    logd = np.log(np.maximum(depth, 1e-6)) * dk
    logd = cv2.resize(logd, size, interpolation=cv2.INTER_AREA) / np.maximum(dcov, 1e-6)
    dh = np.where(dcov > 0.999, np.exp(logd), 0.0).astype(np.float32)
    return img, cov > 0.999, okh, dh


def _up(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a half-size map to full ``shape`` (H, W)."""
    H, W = shape
    return cv2.resize(values, (W, H), interpolation=cv2.INTER_LINEAR)


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
        stretch: (H, W) float32 magnification of routed pixels (None: unknown).
        c2w, views: the target's pose and memory frames to look real pixels up in (optional).
        observed: (H, W) bool, known pixels that trace back to a real observation (None: all).
            Texture is copied from those; earlier paint is context, never a source, so a smear
            painted once cannot propagate.
        up_cam: (3,) the world's up in camera coordinates (None: unknown). Where the seen
            floor's plane passes in front of the continued surfaces, the hole is floor.
    """
    cfg = config or PainterConfig()
    kern = _kernels(kernels)
    t0 = time.perf_counter()
    rgb = np.ascontiguousarray(rgb, np.float32)
    H, W = known.shape
    hole = ~known
    depth = np.where(known, depth, 0.0).astype(np.float32)
    meta: dict[str, Any] = {"painted": float(hole.mean()), "painter": "exemplar"}
    if not hole.any():
        return PaintResult(rgb.copy(), depth, meta)
    if not known.any():
        meta["note"] = "nothing of this view was seen before: flat grey"
        return PaintResult(np.full_like(rgb, 0.5), np.ones_like(depth), meta)
    real = known.copy() if observed is None else known & observed
    # Geometry at half size: what is background, the hole's planar depth, normals.
    _, seen_h, _, d_h = _half(rgb, known, known, depth)
    has_h = d_h > 0
    band_h = max(2, cfg.band // 2)
    if has_h.any():
        bg_h = guide.background_sources(d_h, has_h, band=band_h)
        dfill_h = guide.fill_depth_planar(d_h, has_h, bg_h & guide.near_hole(has_h, band_h))
    else:
        bg_h, dfill_h = seen_h, np.ones(seen_h.shape, np.float32)
    K_h = K.copy()
    K_h[:2] /= 2.0
    nrm_h = normals_from_depth(dfill_h, K_h)
    if up_cam is not None and has_h.any():
        z_floor = guide.floor_depth(d_h, has_h, K_h, up_cam, nrm_h)
        if z_floor is not None:
            floor = ~has_h & (z_floor < dfill_h)
            dfill_h = np.where(floor, z_floor, dfill_h).astype(np.float32)
            nrm_h = normals_from_depth(dfill_h, K_h)
            meta["floor"] = float(floor.mean())
    inv = _up(1.0 / dfill_h, (H, W))
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
    ring = bg & guide.near_hole(seen, cfg.band)
    wring = (ring if ring.any() else seen).astype(np.float32)
    cracks, regions = guide.split_holes(~seen, cfg.crack_radius)
    out = guide.fill_cracks(rgb, wring, ~seen)  # smooth everywhere first; regions repainted
    meta.update(cracks=float(cracks.mean()), regions=float(regions.mean()))
    if regions.any() and seen.mean() < cfg.min_known:
        out[regions] = guide.push_pull_np(rgb, wring)[regions]
        meta["note"] = (
            f"almost nothing of this view was seen before ({seen.mean():.1%}): smooth fill"
        )
    elif regions.any():
        src = real if real.mean() >= cfg.min_known else seen
        if stretch is not None:
            src = src & ~(stretch > cfg.max_stretch)
        note = _paint_regions(
            out, seen, src, regions, dfill_h, nrm_h, wring, bg & real, seed, cfg, kern, meta
        )
        if note:
            meta["note"] = note
    meta["ms"] = (time.perf_counter() - t0) * 1e3
    return PaintResult(out, depth_f, meta)


def _paint_regions(
    out: np.ndarray, seen: np.ndarray, ok: np.ndarray, regions: np.ndarray, dfill_h: np.ndarray,
    nrm_h: np.ndarray, wbg: np.ndarray, texture_ref: np.ndarray, seed: int, cfg: PainterConfig,
    kern: ModuleType, meta: dict[str, Any],
) -> str | None:  # fmt: skip
    """Exemplar completion of ``regions`` into ``out`` (H, W, 3), in place: matched at half
    size, copied at full size from the ``ok`` pixels. ``wbg`` weighs the smooth fill's pixels,
    ``texture_ref`` the real background pixels whose texture decides where the smooth fill
    stays. Returns a note when it fell back to the smooth fill."""
    H, W = seen.shape
    r = cfg.patch // 2
    fill = ~regions  # cracks are filled: they count as seen context (never as sources)
    img_h, fill_h, ok_h, _ = _half(out, fill, ok & fill, np.zeros((H, W), np.float32))
    ref_h = _half(out, texture_ref, texture_ref, np.zeros((H, W), np.float32))[2]
    logd = np.log(np.maximum(dfill_h, 1e-6)).astype(np.float32)
    lv0 = Level(img_h, fill_h, ok_h & fill_h, ref_h, logd, nrm_h)
    depth_px = float(cv2.distanceTransform(regions.astype(np.uint8), cv2.DIST_L2, 3).max()) / 2
    levels = build_levels(lv0, depth_px, r, cfg.min_level_size)
    if not has_sources(levels[-1], r):
        out[regions] = guide.push_pull_np(out, wbg)[regions]
        return "no seen patch to copy from: smooth fill"
    lo, hi = cfg.scale_range
    prm = np.array([cfg.fg_tol, lo, hi], np.float64)
    targets, nnf, cost, img = complete(
        levels, cv2.resize(wbg, img_h.shape[1::-1]), cfg, seed, kern, prm
    )
    # Full size: copy from the full-size seen pixels through the half-size field.
    hole_h = ~fill_h
    _, tid = targets_of(hole_h)
    full = _up(img, (H, W))
    cn = cost / float((2 * r + 1) ** 2 * 3)
    finite = cn[np.isfinite(cn)]
    sig2 = max(float(np.percentile(finite, 75)), 1e-5) if finite.size else 1.0
    tw = target_weights(hole_h, targets)
    src_f = (ok & fill & seen).astype(np.uint8)
    reg8 = regions.astype(np.uint8)
    kern.copy_up(out, src_f, logd, targets, tid, nnf, cn, tw, prm, sig2, reg8, full)
    # Smooth surround (sky, a blank wall): keep the smooth fill there, blend towards texture.
    energy = _border_energy(out, texture_ref, texture_ref)
    a = np.clip(energy / cfg.smooth_energy - 1.0, 0.0, 1.0)[..., None]
    if (a[..., 0][regions] < 1).any():
        smooth = guide.push_pull_np(out, wbg * fill)
        full = a * full + (1 - a) * smooth
    out[regions] = np.clip(full[regions], 0.0, 1.0)
    meta.update(levels=len(levels) + 1, textured=float(a[..., 0][regions].mean()))
    return None
