"""What the geometry tells the painter: which pixels may be copied, where, and how far away.

All numpy/OpenCV (no torch tensors), on full-size (H, W) maps:

* :func:`background_sources`: the known pixels a hole may be filled from. Disocclusions open
  *behind* foreground objects, so the near side of a depth step across a hole is excluded
  (:func:`models.geometry.fill.near_side`); a hole seen from one side only (a turn, the floor
  ahead) is not a disocclusion, and each border continues its own surface.
* :func:`fill_depth_planar`: depth for the hole that continues the background *surface*: local
  planes (linear in inverse depth over the image) are extrapolated from the hole's border, so a
  floor continues as a floor and a wall as a wall (a membrane fill would bend both towards a
  constant depth, i.e. a wall facing the camera).
* :func:`normals_from_depth`: camera-frame unit normals (floor from floor, wall from wall);
  :func:`plane_depth`: where the seen floor's (or ceiling's) plane continues into the hole;
  :func:`far_layer`: the background around a near object, which a hole beside it continues.
* :func:`near_hole`: the ring of known pixels around the holes (what a smooth fill reads).
* :func:`split_holes`: thin cracks (cheap smooth path) against regions (exemplar path).
* :func:`seam_correction`: the low-frequency bend that makes a painted region meet its border.
* :func:`push_pull_np`: the smooth membrane fill;
  :func:`extrude_fill`: the hole's first estimate, its seen borders extruded along the axes.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.geometry.fill import near_side, nearest_known

EPS = 1e-12


def push_pull_np(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fill where ``weight`` is 0 by pyramid push-pull (a smooth membrane).

    Args:
        values: (H, W, C) float32; weight: (H, W) float32 in [0, 1] (0 = unknown).
    Returns:
        (H, W, C) float32: weighted pixels blended with the estimate from coarser levels by
        their weight (weight 1 keeps the value), unknown ones interpolated. With no weight at
        all the result is 0.
    """
    C = values.shape[2]
    x = np.ascontiguousarray(values * weight[..., None], np.float32)
    w = np.ascontiguousarray(weight, np.float32)
    levels = []
    while max(x.shape[:2]) > 1:
        levels.append((x, w))
        h, wd = x.shape[:2]
        size = ((wd + 1) // 2, (h + 1) // 2)
        # Area averaging of the weighted values and of the weights alike: odd borders carry
        # proportionally less weight, so the ratio stays an average of known pixels only.
        x = cv2.resize(x, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], C)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA)
    filled = x / np.maximum(w, EPS)[..., None]
    for x, w in reversed(levels):
        h, wd = x.shape[:2]
        up = cv2.resize(filled, (wd, h), interpolation=cv2.INTER_LINEAR).reshape(h, wd, C)
        a = np.minimum(w, 1.0)[..., None]
        filled = x / np.maximum(w, EPS)[..., None] * a + up * (1 - a)
    return filled.astype(np.float32)


def near_hole(known: np.ndarray, band: int) -> np.ndarray:
    """(H, W) bool: known pixels within ``band`` px (square window) of an unknown one."""
    k = 2 * band + 1
    return known & (cv2.dilate((~known).astype(np.uint8), np.ones((k, k), np.uint8)) > 0)


def background_sources(
    depth: np.ndarray, known: np.ndarray, step: float = 0.08, band: int = 8
) -> np.ndarray:
    """(H, W) bool: known pixels not on the near side of a disocclusion
    (:func:`models.geometry.fill.near_side`: the occluder's layer within ``band`` px of its
    border, crossings from :func:`models.geometry.fill.hole_crossings`). Every known pixel when
    nothing is left."""
    if known.all() or not known.any():
        return known.copy()
    src = known & ~near_side(depth, known, step, band)
    return src if src.any() else known.copy()


def extrude_fill(
    values: np.ndarray, sources: np.ndarray, fill: np.ndarray | None = None
) -> np.ndarray:
    """Fill the ``fill`` pixels (default: all but ``sources``) by extruding the nearest source
    pixel along each of the four axis directions, mixed by inverse squared distance.

    A hole opened by a turn is continued sideways (horizon, floor and wall stay at their
    rows), a strip at the bottom continues the floor above it, a disocclusion takes both of
    its (background) sides. Pixels no axis reaches get the push-pull fill. (H, W, C) float32.
    """
    ys, xs = np.nonzero(~sources if fill is None else fill & ~sources)
    out = values.copy()
    if ys.size == 0:
        return out
    acc = np.zeros((ys.size, values.shape[2]), np.float64)
    wsum = np.zeros(ys.size, np.float64)
    for axis in (1, 0):
        for reverse in (False, True):
            near = nearest_known(sources, axis, reverse)[ys, xs]
            ok = near >= 0
            pos = xs if axis == 1 else ys
            w = np.where(ok, 1.0 / np.maximum(np.abs(pos - near), 1) ** 2, 0.0)
            idx = np.maximum(near, 0)
            picked = values[ys, idx] if axis == 1 else values[idx, xs]
            acc += w[:, None] * picked
            wsum += w
    reached = wsum > 0
    out[ys[reached], xs[reached]] = (acc[reached] / wsum[reached, None]).astype(values.dtype)
    if not reached.all():
        pp = push_pull_np(values, sources.astype(np.float32))
        out[ys[~reached], xs[~reached]] = pp[ys[~reached], xs[~reached]]
    return out


def seam_correction(
    img: np.ndarray,
    region: np.ndarray,
    allowed: np.ndarray | None = None,
    width: int = 3,
    sigma: float = 1.5,
) -> np.ndarray:
    """(H, W, 3) float32 low-frequency correction that makes ``region`` meet the ``allowed``
    pixels around it (default: all) without a colour step (add it to the region's pixels);
    the near side of a disocclusion is not allowed: the hole does not continue it.

    Along the region's border, the difference between the smoothed colour just outside and
    just inside is measured, then carried across the region by push-pull: membrane
    interpolation of the border difference, which approximates Poisson (seamless) cloning
    (Farbman et al. 2009). Texture inside is kept; only its low frequencies bend to the border.
    """
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    outside = ~region & (cv2.dilate(region.astype(np.uint8), k) > 0)
    if allowed is not None:
        outside &= allowed
    inside = region & (cv2.dilate(outside.astype(np.uint8), k) > 0)
    if not outside.any() or not inside.any():
        return np.zeros(img.shape, np.float32)
    lo_out = _blur_weighted(img, outside.astype(np.float32), sigma)
    lo_in = _blur_weighted(img, region.astype(np.float32), sigma)
    support = cv2.GaussianBlur(outside.astype(np.float32), (0, 0), sigma) > 1e-3
    edge = inside & support
    diff = np.where(edge[..., None], lo_out - lo_in, 0.0).astype(np.float32)
    return push_pull_np(diff, edge.astype(np.float32))


def _blur_weighted(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian convolution: (H, W, C) values seen only where ``weight`` > 0."""
    num = cv2.GaussianBlur(values * weight[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    return (num.reshape(values.shape) / np.maximum(den, EPS)[..., None]).astype(np.float32)


def fill_depth_planar(depth: np.ndarray, known: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Depth (H, W) float32 for the hole pixels, continuing the background surfaces as planes.

    Inverse depth is linear in pixel coordinates on any plane (``1/z = a u + b v + c``), so the
    local plane of each background border pixel is (a, b, c) from the gradients of smoothed
    inverse depth; push-pull carries (a, b, c) into the hole and each hole pixel evaluates it.
    Far from the border a plane's extrapolation is clamped to a factor 2 of the membrane fill
    (log-depth push-pull), and a plane that never reaches the pixel (a floor extrapolated past
    its horizon) gives twice the membrane's depth. Known pixels keep their depth.
    """
    H, W = depth.shape
    hole = ~known
    if not hole.any():
        return depth.astype(np.float32)
    src = bg & (depth > 0)
    if not src.any():
        src = known & (depth > 0)
    if not src.any():
        raise ValueError("cannot fill depth: no known pixel with depth")
    wsrc = src.astype(np.float32)
    logd = np.log(np.maximum(depth, 1e-6)).astype(np.float32)
    membrane = np.exp(push_pull_np(logd[..., None], wsrc)[..., 0])
    rho = np.where(src, 1.0 / np.maximum(depth, 1e-6), 0.0).astype(np.float32)
    rho_s = _blur_weighted(rho[..., None], wsrc, 1.5)[..., 0]
    ok = np.zeros((H, W), bool)
    ok[1:-1, 1:-1] = src[1:-1, 1:-1] & src[1:-1, :-2] & src[1:-1, 2:] & src[:-2, 1:-1]
    ok[1:-1, 1:-1] &= src[2:, 1:-1]
    a = np.zeros((H, W), np.float32)
    b = np.zeros((H, W), np.float32)
    a[:, 1:-1] = 0.5 * (rho_s[:, 2:] - rho_s[:, :-2])
    b[1:-1] = 0.5 * (rho_s[2:] - rho_s[:-2])
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    if ok.sum() < 16:  # too few interior border pixels to read planes: the membrane
        out = membrane
    else:
        c = rho_s - a * u - b * v
        abc = push_pull_np(np.stack([a, b, c], -1), ok.astype(np.float32))
        plane = abc[..., 0] * u + abc[..., 1] * v + abc[..., 2]
        inv_m = 1.0 / membrane
        plane = np.where(plane > 0, np.clip(plane, 0.5 * inv_m, 2.0 * inv_m), 0.5 * inv_m)
        out = 1.0 / plane
    return np.where(known, depth, out).astype(np.float32)


def normals_from_depth(depth: np.ndarray, K: np.ndarray, smooth: int = 5) -> np.ndarray:
    """(H, W, 3) float32 camera-frame unit normals of a depth map, facing the camera.

    Central differences of the unprojected points, box-smoothed over ``smooth`` px (depth
    edges give meaningless normals; smoothing keeps them from dominating a patch).
    """
    H, W = depth.shape
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    X = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1).astype(np.float32)
    du = np.zeros_like(X)
    dv = np.zeros_like(X)
    du[:, 1:-1] = X[:, 2:] - X[:, :-2]
    du[:, 0], du[:, -1] = du[:, 1], du[:, -2]
    dv[1:-1] = X[2:] - X[:-2]
    dv[0], dv[-1] = dv[1], dv[-2]
    n = -np.cross(du, dv)  # (x right, y down, z forward): -du x dv faces the camera
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), EPS)
    if smooth > 1:
        n = cv2.blur(n, (smooth, smooth))
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), EPS)
    return n.astype(np.float32)


def plane_depth(
    depth: np.ndarray,
    known: np.ndarray,
    K: np.ndarray,
    n_cam: np.ndarray,
    normals: np.ndarray,
    min_frac: float = 0.01,
    cos_tol: float = 0.9,
) -> np.ndarray | None:
    """(H, W) float32 z-depth at which each pixel's ray meets the seen horizontal plane whose
    normal (facing the camera) is ``n_cam`` (the world's up for the floor, down for a
    ceiling); inf where the ray does not reach it; None when too little of it is seen.

    Its pixels are seen pixels whose normal is within ``acos(cos_tol)`` of ``n_cam``; the
    camera's distance to the plane is their median (robust to the odd table top).
    """
    H, W = depth.shape
    n = np.asarray(n_cam, np.float64)
    n = n / max(np.linalg.norm(n), EPS)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    on = known & (depth > 0) & (normals @ n > cos_tol)
    if on.sum() < max(8, min_frac * H * W):
        return None
    dist = float(np.median(-(rays[on] @ n) * depth[on]))
    if dist <= 0:
        return None
    towards = -(rays @ n)
    return np.where(towards > 1e-3, dist / np.maximum(towards, 1e-3), np.inf).astype(np.float32)


def far_layer(depth: np.ndarray, ring: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) float32: the farthest ``ring`` depth within ``radius`` px of each ring pixel,
    carried into the hole by push-pull (in log depth); 0 when the ring is empty.

    A hole opened beside a near object (a turn past a sofa, a globe at the frame's edge) more
    likely shows the background around it than more of the object: objects end, rooms and
    streets go on. The floor and ceiling are not background in this sense; the caller lets
    their planes override.
    """
    if not ring.any():
        return np.zeros(depth.shape, np.float32)
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    far = cv2.dilate(np.where(ring, depth, 0.0).astype(np.float32), k)
    logf = np.where(ring, np.log(np.maximum(far, 1e-6)), 0.0).astype(np.float32)
    return np.exp(push_pull_np(logf[..., None], ring.astype(np.float32))[..., 0])


def split_holes(hole: np.ndarray, crack_radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(cracks, regions), both (H, W) bool, partitioning ``hole``.

    A region pixel lies within ``crack_radius`` + 1 px of a hole pixel farther than
    ``crack_radius`` from any known pixel; everything else is a crack (a thin sliver any
    smooth fill closes well: exemplar search there costs more than it gives).
    """
    if not hole.any():
        return hole.copy(), hole.copy()
    dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    core = (dist > crack_radius + 0.5).astype(np.uint8)  # DIST_L2 3x3 is approximate
    k = 2 * crack_radius + 3
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    regions = (cv2.dilate(core, disc) > 0) & hole
    return hole & ~regions, regions


def fill_cracks(rgb: np.ndarray, weight: np.ndarray, cracks: np.ndarray) -> np.ndarray:
    """Fill the ``cracks`` (H, W) bool of rgb (H, W, 3) float32 by normalised Gaussian
    convolution of the weighted pixels, widening until every crack pixel has support; the
    rest (none, normally) by push-pull. Other pixels are returned unchanged."""
    out = rgb.copy()
    todo = cracks.copy()
    for sigma in (1.0, 2.0, 4.0, 8.0):
        if not todo.any():
            return out
        den = cv2.GaussianBlur(weight, (0, 0), sigma)
        num = cv2.GaussianBlur(rgb * weight[..., None], (0, 0), sigma).reshape(rgb.shape)
        ok = todo & (den > 1e-3)
        out[ok] = num[ok] / den[ok][:, None]
        todo &= ~ok
    if todo.any():
        out[todo] = push_pull_np(rgb, weight)[todo]
    return out
