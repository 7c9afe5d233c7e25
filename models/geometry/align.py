"""Robust scale/shift alignment of a depth estimate to reference depth.

A new frame's depth estimate (relative, or metric with its own bias) is put in the memory's
metric frame by fitting ``target ~ s * pred + t`` on the pixels memory already sees. Outliers
(occlusion boundaries, wrong estimates) are many, so the fit is trimmed: solve, drop the worst
residuals, solve again. Residuals are relative (divided by the target) so near and far pixels
count alike. :func:`far_side` picks the part of a hole's border its depth continues from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.geometry.zbuffer import box_max


@dataclass
class Alignment:
    scale: float
    shift: float
    inliers: int
    method: str

    def apply(self, depth: torch.Tensor) -> torch.Tensor:
        return depth * self.scale + self.shift


def _weighted_ls(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    A = torch.stack([p * w, w], -1).double()
    b = (t * w).double()
    sol = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    return float(sol[0]), float(sol[1])


def align_scale_shift(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    iters: int = 6,
    max_samples: int = 20000,
    min_pixels: int = 64,
) -> Alignment:
    """Fit ``target ~ scale * pred + shift`` over ``mask``; all (H, W).

    Falls back to a median scale (shift 0) when the affine fit is degenerate (too few pixels, a
    non-positive scale, or a shift that would make aligned depth non-positive).
    """
    m = mask & (target > 0) & (pred > 0) & torch.isfinite(pred) & torch.isfinite(target)
    p, t = pred[m].float(), target[m].float()
    if p.numel() == 0:
        return Alignment(1.0, 0.0, 0, "identity")
    if p.numel() > max_samples:  # deterministic subsample: every k-th pixel
        step = p.numel() // max_samples + 1
        p, t = p[::step], t[::step]
    median = Alignment(float(t.median() / p.median()), 0.0, int(p.numel()), "median")
    if p.numel() < min_pixels:
        return median
    w = 1.0 / t
    # Robust start (median ratio, median offset), then trimmed refits that keep residuals
    # within 3 robust sigmas (MAD): holds up with a third of the pixels being outliers.
    s = float((t / p).median())
    b = float((t - s * p).median())
    for _ in range(iters):
        r = (s * p + b - t) * w
        sigma = 1.4826 * float(r.abs().median())
        sel = r.abs() <= max(3.0 * sigma, 1e-6)
        if int(sel.sum()) < min_pixels:
            break
        s, b = _weighted_ls(p[sel], t[sel], w[sel])
        if not s > 0:
            return median
    pmin = float(pred[pred > 0].min()) if bool((pred > 0).any()) else 0.0
    if s * pmin + b <= 0:
        return median
    r = ((s * p + b - t) * w).abs()
    inliers = int((r <= max(3.0 * 1.4826 * float(r.median()), 1e-6)).sum())
    return Alignment(s, b, inliers, "trimmed-affine")


def far_side(
    depth: torch.Tensor, known: torch.Tensor, band: int = 8, step: float = 0.08
) -> torch.Tensor:
    """(H, W) bool: the known pixels within ``band`` of a hole that are not foreground, i.e.
    not ``step`` (relative) nearer than the farthest known depth within ``band`` pixels.

    A disocclusion opens behind the foreground, so its depth is continued from the far side of
    its border. (Two max-pools: a cheap local version of the painter's background test; a hole
    wider than 2 * band is bent towards both of its borders.)
    """
    if bool(known.all()) or not bool(known.any()):
        return known
    far = box_max(torch.where(known, depth, 0.0), band)
    near_hole = box_max((~known).float(), band) > 0
    side = known & near_hole & (depth >= far * (1 - step))
    return side if bool(side.any()) else known
