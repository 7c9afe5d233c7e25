"""Weight-free texture metrics for painted pixels: is it texture, or a smear?

* :func:`masked_swd`: sliced Wasserstein distance between the distributions of 7x7 patches of
  two images, per Laplacian pyramid band, over the patches centred in a mask (as used to
  evaluate image generators: Karras et al. 2018, "Progressive growing of GANs", section 5). A
  smear has patches of near-zero detail where the reference has texture, so its distribution
  is far from the reference's; a texture copied from elsewhere has the right distribution even
  where it is not pixel-aligned. Patches of both images are normalised with the *reference's*
  per-channel mean and deviation, so colour and contrast differences count too.
* :func:`gradient_energy_ratio`: mean squared gradient in the painted pixels over that in the
  seen pixels of the same image (a smear is near 0, texture like its surroundings near 1).

Images are uint8 (H, W, 3) or float [0, 1]; masks (H, W) bool. Deterministic under ``seed``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return (img.astype(np.float32) / 255.0) if img.dtype == np.uint8 else img.astype(np.float32)


def laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` band-pass images, finest first (each the difference between a Gaussian level
    and the upsampled next one); the last is the low-pass residual. (H, W, 3) float32."""
    gauss = [_float(img)]
    for _ in range(levels - 1):
        gauss.append(cv2.pyrDown(gauss[-1]))
    bands = []
    for i in range(levels - 1):
        h, w = gauss[i].shape[:2]
        bands.append(gauss[i] - cv2.pyrUp(gauss[i + 1], dstsize=(w, h)))
    bands.append(gauss[-1])
    return bands


def _mask_pyramid(mask: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [mask.astype(bool)]
    for _ in range(levels - 1):
        m = out[-1].astype(np.float32)
        h, w = m.shape
        out.append(cv2.resize(m, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA) > 0.5)
    return out


def patch_descriptors(band: np.ndarray, centres: np.ndarray, size: int = 7) -> np.ndarray:
    """(N, size*size*C) patches of ``band`` (H, W, C) around ``centres`` (N, 2) (y, x);
    the image is reflected at its border."""
    r = size // 2
    pad = cv2.copyMakeBorder(band, r, r, r, r, cv2.BORDER_REFLECT_101).reshape(
        band.shape[0] + 2 * r, band.shape[1] + 2 * r, -1
    )
    dy, dx = np.mgrid[0:size, 0:size]
    ys = centres[:, 0, None] + dy.reshape(1, -1)
    xs = centres[:, 1, None] + dx.reshape(1, -1)
    return pad[ys, xs].reshape(len(centres), -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_dirs: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance of point sets a (N, D) and b (M, D): the mean over random
    unit directions of the 1-D Wasserstein distance of the projections (quantiles compared at
    ``min(N, M)`` evenly spaced levels)."""
    if len(a) == 0 or len(b) == 0:
        return math.nan
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((a.shape[1], n_dirs))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa = np.sort(a.astype(np.float64) @ dirs, axis=0)
    pb = np.sort(b.astype(np.float64) @ dirs, axis=0)
    n = min(len(pa), len(pb))
    q = (np.arange(n) + 0.5) / n
    ia = np.minimum((q * len(pa)).astype(int), len(pa) - 1)
    ib = np.minimum((q * len(pb)).astype(int), len(pb) - 1)
    return float(np.abs(pa[ia] - pb[ib]).mean())


def masked_swd(
    image: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    reference_mask: np.ndarray | None = None,
    levels: int = 3,
    patch: int = 7,
    max_patches: int = 4096,
    n_dirs: int = 256,
    seed: int = 0,
) -> dict[str, float | list[float] | int]:
    """Sliced Wasserstein distance of patch distributions, per Laplacian band.

    Args:
        image, reference: (H, W, 3) uint8 or float [0, 1] (sizes may differ when the masks do).
        mask: (H, W) bool, patch centres taken in ``image``; reference_mask: those in
            ``reference`` (default: ``mask``, i.e. the same pixels of an aligned reference).
        levels: pyramid bands (the last one is the low-pass residual); patch: side in px.
        max_patches: patches per band and image (a seeded random subset when more).
    Returns:
        {"swd": mean over bands (nan when a band has no patch), "per_level": [...],
         "patches": patches used at the finest band}.
    """
    rm = mask if reference_mask is None else reference_mask
    rng = np.random.default_rng(seed)
    bands_a = laplacian_pyramid(image, levels)
    bands_b = laplacian_pyramid(reference, levels)
    masks_a = _mask_pyramid(mask, levels)
    masks_b = _mask_pyramid(rm, levels)
    per_level, counts = [], []
    for ba, bb, ma, mb in zip(bands_a, bands_b, masks_a, masks_b, strict=True):
        ca, cb = np.argwhere(ma), np.argwhere(mb)
        if len(ca) > max_patches:
            ca = ca[rng.choice(len(ca), max_patches, replace=False)]
        if len(cb) > max_patches:
            cb = cb[rng.choice(len(cb), max_patches, replace=False)]
        counts.append(min(len(ca), len(cb)))
        if len(ca) < 2 or len(cb) < 2:
            per_level.append(math.nan)
            continue
        da = patch_descriptors(ba, ca, patch).reshape(len(ca), -1, 3)
        db = patch_descriptors(bb, cb, patch).reshape(len(cb), -1, 3)
        mu = db.mean(axis=(0, 1))
        sd = db.std(axis=(0, 1)) + 1e-6
        da = ((da - mu) / sd).reshape(len(ca), -1)
        db = ((db - mu) / sd).reshape(len(cb), -1)
        per_level.append(sliced_wasserstein(da, db, n_dirs, seed))
    finite = [x for x in per_level if math.isfinite(x)]
    swd = float(np.mean(per_level)) if len(finite) == len(per_level) else math.nan
    return {"swd": swd, "per_level": per_level, "patches": counts[0]}


def _grad_energy(img: np.ndarray) -> np.ndarray:
    """(H, W) squared gradient magnitude (forward differences, channel mean), 0 at the last
    row and column."""
    f = _float(img)
    gx = np.zeros(f.shape[:2], np.float32)
    gy = np.zeros(f.shape[:2], np.float32)
    gx[:, :-1] = ((f[:, 1:] - f[:, :-1]) ** 2).mean(-1)
    gy[:-1] = ((f[1:] - f[:-1]) ** 2).mean(-1)
    return gx + gy


def gradient_energy(img: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared gradient over the pixels of ``mask`` whose 3x3 neighbourhood lies in it
    (so a seam at the mask's border does not count); nan when there is none."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0) > 0
    return float(_grad_energy(img)[inner].mean()) if inner.any() else math.nan


def gradient_energy_ratio(img: np.ndarray, painted: np.ndarray, seen: np.ndarray) -> float:
    """Gradient energy of the painted pixels over that of the seen pixels, same image."""
    e_seen = gradient_energy(img, seen)
    if not math.isfinite(e_seen) or e_seen <= 0:
        return math.nan
    return gradient_energy(img, painted) / e_seen


def background_ring(
    painted: np.ndarray, seen: np.ndarray, depth: np.ndarray, width: int = 24, tol: float = 0.15
) -> np.ndarray:
    """(H, W) bool: the seen pixels a painted region should look like. Those within ``width``
    px of a painted pixel and on its depth layer or behind it (depth at least the nearest
    painted pixel's times ``exp(-tol)``): a disocclusion continues the background, not the
    object in front of it, and the pixels beside a hole share its blur and magnification,
    which the frame as a whole (near walls magnified by a forward walk, a far view through a
    window barely) does not.

    painted, seen: (H, W) bool; depth: (H, W) metres (> 0 on both)."""
    painted = np.asarray(painted, bool)
    if not painted.any():
        return np.zeros_like(painted)
    dist, label = cv2.distanceTransformWithLabels(
        (~painted).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    # Labels number the painted pixels in scan order (1-based): the nearest one's depth.
    near_depth = np.asarray(depth, np.float32).ravel()[np.flatnonzero(painted)][label - 1]
    behind = np.asarray(depth) >= near_depth * math.exp(-tol)
    return np.asarray(seen, bool) & ~painted & (dist <= width) & behind
