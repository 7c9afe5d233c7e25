"""Coarse-to-fine exemplar completion at one resolution: pyramid, EM, field upsampling.

Each level runs EM (Wexler et al. 2007): PatchMatch finds, for every hole pixel's patch, the
most similar allowed source patch (:mod:`models.synthesis.exemplar.patchmatch`), then every hole
pixel becomes the weighted mean of what the matches of the patches covering it put there. The
coarsest level starts from a smooth fill and a random field; each finer level starts from the
upsampled result and the doubled field, so large holes get structure first, texture last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import cv2
import numpy as np

from models.synthesis.exemplar import guide
from models.synthesis.exemplar.config import PainterConfig


@dataclass
class Level:
    """One pyramid level. img (h, w, 3) float32; known (h, w) bool, fully seen here; ok (h, w)
    bool, allowed source pixels; real (h, w) bool, those that trace back to a real observation
    (the others, earlier paint, cost ``lam_paint`` as sources); ref (h, w) bool, real background
    pixels whose texture strength the hole should have; logd (h, w) float32; nrm (h, w, 3)."""

    img: np.ndarray
    known: np.ndarray
    ok: np.ndarray
    real: np.ndarray
    ref: np.ndarray
    logd: np.ndarray
    nrm: np.ndarray


def _downsample(level: Level) -> Level:
    """The next coarser level (half size, area averaging; partly seen pixels become hole)."""
    h, w = level.known.shape
    size = (max(1, (w + 1) // 2), max(1, (h + 1) // 2))

    def full(mask: np.ndarray) -> np.ndarray:  # every pixel below is in the mask
        return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999

    kf = level.known.astype(np.float32)
    cov = cv2.resize(kf, size, interpolation=cv2.INTER_AREA)
    img = cv2.resize(level.img * kf[..., None], size, interpolation=cv2.INTER_AREA)
    img = img / np.maximum(cov, 1e-6)[..., None]
    logd = cv2.resize(level.logd, size, interpolation=cv2.INTER_AREA)
    nrm = cv2.resize(level.nrm, size, interpolation=cv2.INTER_AREA)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
    known = cov > 0.999
    return Level(
        img.astype(np.float32), known, full(level.ok), full(level.real), full(level.ref), logd, nrm
    )


def local_energy(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(h, w) float32 mean squared colour gradient over the 5x5 window of each pixel, seen
    pixels only (the texture strength of the patch around it)."""
    g = np.zeros(known.shape, np.float32)
    g[:, :-1] += ((img[:, 1:] - img[:, :-1]) ** 2).mean(-1)
    g[:-1] += ((img[1:] - img[:-1]) ** 2).mean(-1)
    kf = known.astype(np.float32)
    kf[:, :-1] *= known[:, 1:]
    kf[:-1] *= known[1:]
    num = cv2.blur(g * kf, (5, 5))
    den = cv2.blur(kf, (5, 5))
    return num / np.maximum(den, 1e-6)


def features(lv: Level, cfg: PainterConfig) -> np.ndarray:
    """(h, w, 6) float32 guide features, pre-scaled by the square roots of their weights:
    log depth, normal, log texture energy (the hole's carried in from the real background
    around it: a textured surround asks for textured sources, a clear sky for smooth ones),
    and "is earlier paint" (holes are 0: real sources are preferred, paint is taken where it
    continues much better, e.g. across the seam with the previous frame's paint)."""
    le = np.log(local_energy(lv.img, lv.known & lv.ok) + cfg.energy_floor)
    w = (lv.ref & lv.known).astype(np.float32)
    if not w.any():
        w = lv.known.astype(np.float32)
    hole_e = guide.push_pull_np(le[..., None], w)[..., 0]
    le = np.where(lv.known, le, hole_e)
    return np.ascontiguousarray(
        np.concatenate(
            [
                math.sqrt(cfg.lam_depth) * lv.logd[..., None],
                math.sqrt(cfg.lam_normal) * lv.nrm,
                math.sqrt(cfg.lam_energy) * le[..., None],
                math.sqrt(cfg.lam_paint) * (lv.known & ~lv.real)[..., None],
            ],
            -1,
        ),
        dtype=np.float32,
    )


def sources_of(known: np.ndarray, ok: np.ndarray, r: int) -> np.ndarray:
    """Source centres: ``ok`` pixels whose whole (unscaled) patch is ``known``. Callers pass
    the allowed pixels as ``known`` too, so a source patch never reads a crack's smooth fill
    (sparse, dotted routing is not texture to copy)."""
    k = 2 * r + 1
    inner = cv2.erode(known.astype(np.uint8), np.ones((k, k), np.uint8), borderValue=0)
    return ((inner > 0) & ok).astype(np.uint8)


def targets_of(hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres (T, 2) int32, the hole pixels in raster order, and the index map (h, w).

    Centres in the hole only: every hole pixel is covered by its own patch, and the patches
    next to the border overlap the seen pixels, which is what continues the border inwards."""
    targets = np.argwhere(hole).astype(np.int32)
    tid = np.full(hole.shape, -1, np.int32)
    tid[targets[:, 0], targets[:, 1]] = np.arange(len(targets), dtype=np.int32)
    return np.ascontiguousarray(targets), tid


def target_weights(hole: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Patches centred nearer the seen border are more reliable (Wexler's 1.3^-distance)."""
    dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    return np.power(1.3, -dist[targets[:, 0], targets[:, 1]]).astype(np.float64)


def _em(
    lv: Level, nnf: np.ndarray | None, cfg: PainterConfig, iters: int, seed: int,
    kern: ModuleType, prm: np.ndarray, rad0: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """EM at one level: returns (targets, field, costs, filled image)."""
    r = cfg.patch // 2
    hole = ~lv.known
    targets, tid = targets_of(hole)
    src_ok = sources_of(lv.known & lv.ok, lv.ok, r)
    src_list = np.ascontiguousarray(np.argwhere(src_ok > 0).astype(np.int32))
    feat = features(lv, cfg)
    T = len(targets)
    if nnf is None:  # coarsest level: random sources
        rng = np.random.default_rng(seed)
        nnf = src_list[rng.integers(0, len(src_list), T)].copy()
    nnf = np.ascontiguousarray(nnf, dtype=np.int32)
    cost = np.empty(T, np.float64)
    known_u8 = lv.known.astype(np.uint8)
    hole_u8 = hole.astype(np.uint8)
    tw = target_weights(hole, targets)
    img = lv.img
    it0 = 0
    for _ in range(iters):
        kern.eval_costs(img, known_u8, src_ok, lv.logd, feat, targets, nnf, cost, r, prm)
        kern.patchmatch(
            img, known_u8, src_ok, lv.logd, feat, targets, tid, nnf, cost, src_list, r,
            prm, seed, it0, cfg.pm_iters, rad0,
        )  # fmt: skip
        it0 += cfg.pm_iters
        finite = cost[np.isfinite(cost)]
        if finite.size == 0:
            break
        area = float((2 * r + 1) ** 2 * 3)
        sig2 = max(float(np.percentile(finite, 75)) / area, 1e-5)
        out = img.copy()
        kern.vote(img, hole_u8, lv.logd, targets, nnf, cost, tw, r, prm, sig2, out)
        img = out
    kern.eval_costs(img, known_u8, src_ok, lv.logd, feat, targets, nnf, cost, r, prm)
    return targets, nnf, cost, img


def _upsample_field(
    targets_c: np.ndarray, nnf_c: np.ndarray, shape_c: tuple[int, int], fine: Level, r: int,
    seed: int,
) -> np.ndarray:  # fmt: skip
    """Initial field of the finer level: each target inherits its coarse parent's match,
    doubled, plus its offset inside the parent; orphans get a random source."""
    targets, _ = targets_of(~fine.known)
    tid_c = np.full(shape_c, -1, np.int64)
    tid_c[targets_c[:, 0], targets_c[:, 1]] = np.arange(len(targets_c))
    py = np.minimum(targets[:, 0] // 2, shape_c[0] - 1)
    px = np.minimum(targets[:, 1] // 2, shape_c[1] - 1)
    parent = tid_c[py, px]
    nnf = np.empty_like(targets)
    has = parent >= 0
    nnf[has] = nnf_c[parent[has]] * 2 + (targets[has] - 2 * np.stack([py, px], -1)[has])
    src_list = np.argwhere(sources_of(fine.known & fine.ok, fine.ok, r) > 0).astype(np.int32)
    if len(src_list):
        rng = np.random.default_rng(seed + 1)
        nnf[~has] = src_list[rng.integers(0, len(src_list), int((~has).sum()))]
    else:  # no allowed source at all: every cost is INF and the vote keeps the estimate
        nnf[~has] = 0
    h, w = fine.known.shape
    nnf[:, 0] = np.clip(nnf[:, 0], 0, h - 1)
    nnf[:, 1] = np.clip(nnf[:, 1], 0, w - 1)
    return nnf


def build_levels(lv0: Level, depth_px: float, r: int, min_size: int) -> list[Level]:
    """Level 0 and coarser ones, until the deepest hole pixel (``depth_px`` from the seen
    border at level 0) is about a patch radius deep, or the level gets too small."""
    n = max(1, math.ceil(math.log2(max(depth_px, 1.0) / (r + 1))) + 1)
    levels = [lv0]
    while len(levels) < n and min(levels[-1].known.shape) // 2 >= min_size:
        nxt = _downsample(levels[-1])
        if not has_sources(nxt, r) or nxt.known.all():
            break
        levels.append(nxt)
    return levels


def has_sources(lv: Level, r: int) -> bool:
    """Whether any allowed source patch exists at this level."""
    return bool(sources_of(lv.known & lv.ok, lv.ok, r).any())


def complete(
    levels: list[Level], smooth_weight: np.ndarray, cfg: PainterConfig, seed: int, kern: ModuleType,
    prm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Fill the hole of ``levels[0]`` coarse to fine.

    ``smooth_weight`` (h0, w0) float32 marks the pixels the coarsest smooth fill may read
    (background sources). Returns level 0's (targets, field, costs, filled image).
    """
    coarsest = levels[-1]
    h, w = coarsest.known.shape
    wc = cv2.resize(smooth_weight, (w, h), interpolation=cv2.INTER_AREA)
    wc = ((wc > 0.5) & coarsest.known).astype(np.float32)
    if not wc.any():
        wc = coarsest.known.astype(np.float32)
    smooth = guide.extrude_fill(coarsest.img, wc > 0, ~coarsest.known)
    coarsest.img = np.where(coarsest.known[..., None], coarsest.img, smooth).astype(np.float32)
    targets, nnf, cost, img = _em(coarsest, None, cfg, cfg.em_coarse, seed, kern, prm, 0)
    for li in range(len(levels) - 2, -1, -1):
        fine, prev = levels[li], levels[li + 1]
        fh, fw = fine.known.shape
        up = cv2.resize(img, (fw, fh), interpolation=cv2.INTER_LINEAR)
        fine.img = np.where(fine.known[..., None], fine.img, up).astype(np.float32)
        nnf = _upsample_field(targets, nnf, prev.known.shape, fine, cfg.patch // 2, seed + li)
        iters = cfg.em_half if li == 0 else cfg.em_coarse
        seed_l = seed + 7919 * (li + 1)
        targets, nnf, cost, img = _em(fine, nnf, cfg, iters, seed_l, kern, prm, cfg.search_radius)
    return targets, nnf, cost, img
