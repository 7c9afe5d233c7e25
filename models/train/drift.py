"""The drift probe: how far the painted regions of a long walk drift in colour and texture.

A walk (e.g. 200 frames out and back) is generated; in each frame the *painted* pixels are those
not traced to the photo (``FrameEvent.source_mask`` False: painted now, or painted earlier and
routed since). Against the painted pixels of the first ``early`` fraction of the walk it reports,
per frame and for the last ``late`` fraction as a whole:

* **colour shift**: CIE76 Delta E between the mean CIELAB colours (1 is about a just
  noticeable difference);
* **texture distance**: the sliced Wasserstein distance between the distributions of 7x7 RGB
  patches (values in [0, 1]) lying wholly inside the painted region, at scales 1 and 2 (at most
  4096 patches per set, drawn with a fixed seed).

A painter that drifts shows both growing along the path. For context, the same distances between
the photo's pixels and the early painted pixels are reported (how different paint is at all).
:func:`patch_swd_reference` is the slow, obvious twin of :func:`patch_swd` the tests compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7
SCALES = (1, 2)
PROJECTIONS = 64
MAX_PATCHES = 4096
MIN_PAINTED = 64  # painted pixels a frame needs to be measured


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> float CIELAB (L in [0, 100])."""
    flat = rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(rgb.shape)


def mean_lab(frames: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """Mean CIELAB colour (3,) of the masked pixels of (rgb (H, W, 3) uint8, mask (H, W))."""
    px = [rgb[mask] for rgb, mask in frames if mask.any()]
    if not px:
        return None
    return _to_lab(np.concatenate(px)).reshape(-1, 3).mean(0)


def _patches(rgb: np.ndarray, mask: np.ndarray, scale: int, seed: int = 0) -> torch.Tensor:
    """(N, 3 * PATCH * PATCH) patches (channel-major, like ``F.unfold``) of rgb at 1/scale whose
    pixels all lie inside ``mask``; at most :data:`MAX_PATCHES`, drawn with ``seed``."""
    img = torch.from_numpy(rgb).float().permute(2, 0, 1) / 255.0
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    if scale > 1:
        img = F.avg_pool2d(img[None], scale)[0]
        m = -F.max_pool2d(-m, scale)  # a coarse pixel counts only if all its pixels do
    if min(img.shape[-2:]) < PATCH:
        return torch.zeros(0, 3 * PATCH * PATCH)
    # Top-left corners of windows wholly inside the mask (a min-pool over the window).
    inside = -F.max_pool2d(-m, PATCH, stride=1)[0, 0] >= 1
    ys, xs = inside.nonzero(as_tuple=True)
    if len(ys) == 0:
        return torch.zeros(0, 3 * PATCH * PATCH)
    if len(ys) > MAX_PATCHES:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(ys), generator=g)[:MAX_PATCHES]
        ys, xs = ys[pick], xs[pick]
    d = torch.arange(PATCH)
    Y = (ys[:, None] + d)[:, :, None].expand(-1, PATCH, PATCH)
    X = (xs[:, None] + d)[:, None, :].expand(-1, PATCH, PATCH)
    return img[:, Y, X].permute(1, 0, 2, 3).reshape(len(ys), -1)


def _pool(frames: Sequence[tuple[np.ndarray, np.ndarray]], scale: int, seed: int) -> torch.Tensor:
    pats = [_patches(rgb, mask, scale, seed + i) for i, (rgb, mask) in enumerate(frames)]
    allp = torch.cat(pats) if pats else torch.zeros(0, 3 * PATCH * PATCH)
    if len(allp) > MAX_PATCHES:
        g = torch.Generator().manual_seed(seed)
        allp = allp[torch.randperm(len(allp), generator=g)[:MAX_PATCHES]]
    return allp


def _sliced_w1(a: torch.Tensor, b: torch.Tensor, seed: int) -> float:
    """Sliced 1-Wasserstein distance of two point sets (N, D), (M, D): mean over random unit
    directions of the W1 distance of the projections, compared at matched quantiles."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], PROJECTIONS, generator=g)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = (a @ dirs).sort(0)
    pb, _ = (b @ dirs).sort(0)
    n = max(len(pa), len(pb))
    q = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    ia = (q * len(pa)).long().clamp(max=len(pa) - 1)
    ib = (q * len(pb)).long().clamp(max=len(pb) - 1)
    return float((pa[ia] - pb[ib]).abs().mean())


def patch_swd(
    a: Sequence[tuple[np.ndarray, np.ndarray]] | dict[int, torch.Tensor],
    b: Sequence[tuple[np.ndarray, np.ndarray]] | dict[int, torch.Tensor],
    seed: int = 0,
) -> float:
    """Texture distance between the masked regions of frame sets ``a`` and ``b`` (or their
    :func:`patch_pools`): the sliced Wasserstein distance of 7x7 patch distributions, averaged
    over :data:`SCALES` (nan when a side has no whole patch inside its mask)."""
    pa = a if isinstance(a, dict) else patch_pools(a, seed)
    pb = b if isinstance(b, dict) else patch_pools(b, seed + 1)
    dists = [_sliced_w1(pa[s], pb[s], seed + 7 * s) for s in SCALES if len(pa[s]) and len(pb[s])]
    return float(np.mean(dists)) if dists else float("nan")


def patch_pools(
    frames: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> dict[int, torch.Tensor]:
    """Patches of ``frames`` per scale (at most :data:`MAX_PATCHES` each), for reuse."""
    return {s: _pool(frames, s, seed) for s in SCALES}


def patch_swd_reference(a: np.ndarray, mask_a: np.ndarray, b: np.ndarray, mask_b: np.ndarray,
                        scale: int = 1, seed: int = 0) -> float:  # fmt: skip
    """Slow twin of one scale of :func:`patch_swd` for single frames, with plain loops: every
    patch, every direction, quantile matching by index."""

    def patches(rgb: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        img = rgb.astype(np.float64) / 255.0
        m = mask.astype(bool)
        if scale > 1:
            H, W = (rgb.shape[0] // scale) * scale, (rgb.shape[1] // scale) * scale
            img = img[:H, :W].reshape(H // scale, scale, W // scale, scale, 3).mean((1, 3))
            m = m[:H, :W].reshape(H // scale, scale, W // scale, scale).all((1, 3))
        out = []
        for y in range(img.shape[0] - PATCH + 1):
            for x in range(img.shape[1] - PATCH + 1):
                if m[y : y + PATCH, x : x + PATCH].all():
                    # channel-major like torch's unfold: all of R, then G, then B
                    out.append(img[y : y + PATCH, x : x + PATCH].transpose(2, 0, 1).ravel())
        return out

    pa, pb = patches(a, mask_a), patches(b, mask_b)
    g = torch.Generator().manual_seed(seed + 7 * scale)
    dirs = torch.randn(3 * PATCH * PATCH, PROJECTIONS, generator=g)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).double().numpy()
    total = 0.0
    for k in range(PROJECTIONS):
        xa = sorted(float(p @ dirs[:, k]) for p in pa)
        xb = sorted(float(p @ dirs[:, k]) for p in pb)
        n = max(len(xa), len(xb))
        acc = 0.0
        for i in range(n):
            q = (i + 0.5) / n
            acc += abs(
                xa[min(int(q * len(xa)), len(xa) - 1)] - xb[min(int(q * len(xb)), len(xb) - 1)]
            )
        total += acc / n
    return total / PROJECTIONS


def _num(x: float, digits: int) -> float | None:
    """Rounded, or None when not finite (JSON has no NaN)."""
    return round(float(x), digits) if math.isfinite(x) else None


@dataclass
class DriftReport:
    """per_frame: [{"index", "painted", "delta_e", "swd"}] (distances to the early painted
    pixels; None where a frame has too little paint); summary: early-vs-late and maxima."""

    per_frame: list[dict[str, Any]]
    summary: dict[str, Any]


def drift_report(
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    photo: np.ndarray | None = None,
    early: float = 0.1,
    late: float = 0.1,
    seed: int = 0,
) -> DriftReport:
    """Drift of the painted regions of ``frames`` [(rgb (H, W, 3) uint8, painted (H, W) bool)]
    in path order (the seed frame excluded); ``photo``: the seed frame, for context."""
    n = len(frames)
    if n < 2:
        raise ValueError("the drift probe needs a walk of at least 2 frames")
    painted = [(rgb, m) for rgb, m in frames]
    has = [int(m.sum()) >= MIN_PAINTED for _, m in painted]
    k_early = max(1, math.ceil(early * n))
    k_late = max(1, math.ceil(late * n))
    early_set = [f for f, ok in zip(painted[:k_early], has[:k_early], strict=True) if ok]
    late_set = [f for f, ok in zip(painted[n - k_late :], has[n - k_late :], strict=True) if ok]
    ref_lab = mean_lab(early_set)
    early_pools = patch_pools(early_set, seed)  # made once, compared with every frame
    per_frame = []
    for i, ((rgb, m), ok) in enumerate(zip(painted, has, strict=True)):
        rec: dict[str, Any] = {"index": i + 1, "painted": round(float(m.mean()), 5)}
        if ok and ref_lab is not None:
            rec["delta_e"] = _num(np.linalg.norm(mean_lab([(rgb, m)]) - ref_lab), 4)
            rec["swd"] = _num(patch_swd(early_pools, [(rgb, m)], seed), 5)
        else:
            rec["delta_e"] = rec["swd"] = None
        per_frame.append(rec)

    def finite(key: str) -> list[float]:
        return [r[key] for r in per_frame if r[key] is not None and math.isfinite(r[key])]

    summary: dict[str, Any] = {
        "frames": n,
        "frames_measured": sum(has),
        "early_frames": k_early,
        "late_frames": k_late,
        "painted_mean": round(float(np.mean([m.mean() for _, m in painted])), 5),
    }
    if early_set and late_set and ref_lab is not None:
        summary["delta_e_early_late"] = _num(np.linalg.norm(mean_lab(late_set) - ref_lab), 4)
        summary["swd_early_late"] = _num(patch_swd(early_pools, late_set, seed), 5)
    summary["delta_e_max"] = max(finite("delta_e"), default=None)
    summary["swd_max"] = max(finite("swd"), default=None)
    if photo is not None and early_set:
        seen = [(photo, np.ones(photo.shape[:2], bool))]
        summary["swd_photo_vs_early_paint"] = _num(patch_swd(seen, early_pools, seed), 5)
    return DriftReport(per_frame, summary)
