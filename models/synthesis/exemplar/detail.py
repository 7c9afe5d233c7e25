"""Paint no sharper than its surround: cap the painted pixels' detail at the seen background's.

Exemplar completion copies texture at the resolution of its sources. Where the surround is soft
(a defocused background, a photo magnified by walking towards it) a copied patch from a sharper
part of the frame shows as crisp speckle inside a blurred scene, and once in memory it is routed
forward frame after frame. Measured on the shared photos' forward walks, freshly painted
pixels carried up to 8 times the gradient energy of the seen ones (``loci eval painter``).

:func:`cap_detail` estimates, per pixel, the texture strength (mean squared gradient) of the
seen background around each hole, and low-passes the paint just enough to bring its own local
strength down to it: a blur stack ``sigmas``, and per pixel the blend of the two neighbouring
levels whose strengths bracket the cap. Paint already at or below the surround's strength is
left as it is (a clear sky keeps its smooth fill, a weak fill is never sharpened), and so are
seen pixels.

Strengths are local averages: the surround's by normalised Gaussian convolution over seen
background pixels away from depth edges (an object's silhouette is not the background's
texture), continued across large holes by push-pull; the paint's over the painted pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.synthesis.exemplar.guide import push_pull_np
from models.synthesis.exemplar.windows import hole_windows

EPS = 1e-12
SIGMAS = (0.6, 1.0, 1.6, 2.5, 4.0)  # the blur stack (px): 0.6 takes the top octave's edge off


def grad_energy(img: np.ndarray) -> np.ndarray:
    """(H, W) float32 squared gradient magnitude (forward differences, channel mean; the same
    measure as ``models.metrics.texture``), 0 at the last row and column."""
    f = np.ascontiguousarray(img, np.float32)
    H, W, C = f.shape
    flat = f.reshape(H, W * C)  # a row's channels side by side: one 2-D difference per axis
    e = np.zeros((H, W * C), np.float32)
    dx = cv2.subtract(flat[:, C:], flat[:, :-C])
    e[:, :-C] = cv2.multiply(dx, dx)
    dy = cv2.subtract(flat[1:], flat[:-1])
    e[:-1] += cv2.multiply(dy, dy)
    return cv2.transform(e.reshape(H, W, C), np.full((1, C), 1.0 / C, np.float32)).reshape(H, W)


def _inner(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose 3x3 neighbourhood lies in it (a seam does not count)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0) > 0


def _half(x: np.ndarray) -> np.ndarray:
    return cv2.resize(
        x, ((x.shape[1] + 1) // 2, (x.shape[0] + 1) // 2), interpolation=cv2.INTER_AREA
    )


def _full(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.resize(x, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def local_mean(
    values: np.ndarray, weight: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Gaussian convolution of (H, W) ``values`` over ``weight`` (H, W) float32:
    the local mean and the local weight (the Gaussian-weighted share of weighted pixels).
    Computed at half size (both are smooth at these reaches) and returned at full size."""
    num = cv2.GaussianBlur(_half(values * weight), (0, 0), sigma / 2)
    den = cv2.GaussianBlur(_half(weight), (0, 0), sigma / 2)
    return _full(num / np.maximum(den, EPS), values.shape), _full(den, values.shape)


def surround_strength(
    energy: np.ndarray, ref: np.ndarray, depth: np.ndarray | None, sigma: float, edge_tol: float
) -> np.ndarray:
    """(H, W) float32 mean ``energy`` (H, W) of the ``ref`` pixels (H, W) bool around every
    pixel, continued by push-pull where no ``ref`` pixel is within reach; pixels at depth steps
    of more than ``edge_tol`` (log depth, 3x3) are left out of the reference."""
    use = _inner(ref)
    if depth is not None:
        d = np.maximum(depth, 1e-6).astype(np.float32)
        k = np.ones((3, 3), np.uint8)
        use_d = use & (cv2.dilate(d, k) <= cv2.erode(d, k) * np.float32(np.exp(edge_tol)))
        use = use_d if use_d.any() else use
    if not use.any():
        use = ref
    mean, den = local_mean(energy, use.astype(np.float32), sigma)
    # Far inside a large hole the Gaussian no longer reaches the surround: push-pull carries
    # the nearest estimates in (weight saturates at a tenth of a full neighbourhood).
    w = np.minimum(den / 0.1, 1.0).astype(np.float32)
    return push_pull_np(mean[..., None], w)[..., 0]


def cap_detail(
    img: np.ndarray,
    painted: np.ndarray,
    ref: np.ndarray,
    depth: np.ndarray | None = None,
    sigma: float = 12.0,
    paint_sigma: float = 4.0,
    slack: float = 1.0,
    edge_tol: float = 0.15,
    sigmas: tuple[float, ...] = SIGMAS,
) -> np.ndarray:
    """Low-pass the ``painted`` pixels of ``img`` where they are sharper than the ``ref`` pixels
    around them.

    Args:
        img: (H, W, 3) float32 [0, 1], the painted frame. painted: (H, W) bool, the pixels that
            may change. ref: (H, W) bool, the seen pixels whose texture strength is the cap.
        depth: (H, W) metres (> 0), to leave depth edges out of the reference; None: keep them.
        sigma: reach (px) of the surround's estimate; paint_sigma: of the paint's own.
        slack: the paint may be this many times as strong as its surround.
    Returns:
        (H, W, 3) float32: ``img`` with painted pixels blended towards versions of the paint
        blurred within itself; every other pixel bit-identical.
    """
    out = np.array(img, np.float32, copy=True)
    if not painted.any() or not ref.any():
        return out
    energy = grad_energy(out)
    cap = slack * surround_strength(energy, ref, depth, sigma, edge_tol)
    inner = _inner(painted)
    w = (inner if inner.any() else painted).astype(np.float32)
    cur_e, _ = local_mean(energy, w, paint_sigma)
    pending = painted & (cur_e > cap)  # pixels still sharper than their cap
    if not pending.any():
        return out
    # The blur stack only around those pixels (what the largest blur and the paint's local
    # mean read), box by box: the slivers of a forward walk are scattered over the frame.
    reach = int(3 * (max(sigmas) + paint_sigma)) + 2
    for y0, y1, x0, x1 in hole_windows(pending, reach, max_share=1.0, max_count=1 << 30) or []:
        box = (slice(y0, y1), slice(x0, x1))
        out[box] = _cap_box(
            out[box], painted[box], pending[box], cap[box], w[box], cur_e[box], paint_sigma, sigmas
        )
    return out


def _cap_box(
    img: np.ndarray, painted: np.ndarray, pending: np.ndarray, cap: np.ndarray, w: np.ndarray,
    cur_e: np.ndarray, paint_sigma: float, sigmas: tuple[float, ...],
) -> np.ndarray:  # fmt: skip
    """:func:`cap_detail`'s blur stack on one box: ``pending`` pixels blended between the two
    levels whose local strengths bracket ``cap``; every other pixel as it was. The caller's
    arrays are not modified."""
    result = img.copy()
    pending = pending.copy()  # the caller passes a view of its own mask
    # The paint is blurred within itself (normalised convolution over the painted pixels): an
    # occluder's colour beside the hole must not bleed into what is behind it. Values outside
    # the paint are never read: the strengths average inner paint pixels only.
    m = painted.astype(np.float32)
    img_m = img * m[..., None]
    cur_img = img
    for s in sigmas:
        den = np.maximum(cv2.GaussianBlur(m, (0, 0), s), EPS)
        nxt_img = cv2.GaussianBlur(img_m, (0, 0), s) / den[..., None]
        nxt_e, _ = local_mean(grad_energy(nxt_img), w, paint_sigma)
        # Between this level and the next: the blend whose (linearly interpolated) strength
        # meets the cap; past the last level, the last level.
        hit = np.nonzero(pending & (nxt_e <= cap))
        a = np.clip((cur_e[hit] - cap[hit]) / np.maximum(cur_e[hit] - nxt_e[hit], EPS), 0, 1)
        result[hit] = (1 - a)[:, None] * cur_img[hit] + a[:, None] * nxt_img[hit]
        pending[hit] = False
        cur_img, cur_e = nxt_img, nxt_e
        if not pending.any():
            return result
    result[pending] = cur_img[pending]
    return result
