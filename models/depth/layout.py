"""The offline default depth backend: a geometric scene-layout prior, no learned weights.

The photo is read as a gravity-aligned world seen from a camera held at ``camera_height``:

1. *Gravity.* Near-vertical line segments (OpenCV's LSD) meet at the vertical vanishing point;
   its direction in the camera frame is "up" (gives roll and pitch). Too few lines -> level.
2. *Sky.* Bright, smooth, sky-coloured regions touching the top border; they make the scene
   "outdoor" and become a far backdrop with low confidence.
3. *Floor.* The colour distribution of the bottom-centre strip (histogram back-projection) marks
   floor-like pixels; per column, the floor runs up from the bottom until the first solid
   non-floor run: that row is where an object or wall stands on the ground.
4. *Depth.* Floor pixels: ray / ground-plane intersection (metric, camera at 1.6 m). Pixels above
   a contact: a vertical surface standing at the contact's horizontal distance (exact for any
   vertical plane), capped by the ceiling plane indoors and by a far limit; sky -> backdrop.
5. *Edges.* A guided filter on log-depth with the photo as guide makes depth edges follow image
   edges; confidence drops near depth edges and in the sky.

Everything runs at a working resolution of about 256 x 192 and is deterministic.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from models.depth.base import DepthError, DepthResult, check_inputs
from models.geometry.cameras import scale_intrinsics

LEVEL_UP_CAM = np.array([0.0, -1.0, 0.0])
_WORK_PIXELS = 256 * 192  # working resolution: enough for layout, cheap enough for 0.5 s
_LINE_PIXELS = 640 * 480
FLOOR_BIAS = (
    0.2  # the floor must look clearly floor-like to extend a column (tuned on 8 RGB-D frames)
)


# ---------------------------------------------------------------------------------------------
# Gravity from line segments


def _segments(gray: np.ndarray) -> np.ndarray:
    """(N, 4) float64 line segments x1, y1, x2, y2 from OpenCV's LSD (empty when none)."""
    lsd = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)
    lines = lsd.detect(gray)[0]
    if lines is None:
        return np.zeros((0, 4))
    return lines.reshape(-1, 4).astype(np.float64)


def estimate_up_vector(
    gray: np.ndarray, K: np.ndarray, max_tilt_deg: float = 40.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """World-up in the camera frame from the vertical vanishing point.

    Args:
        gray: (H, W) uint8 image.
        K: (3, 3) intrinsics for that image.
        max_tilt_deg: estimates tilting more than this from level are rejected (-> level).

    Returns:
        up_cam (3,) unit vector (about [0, -1, 0] for a level photo) and a dict of diagnostics.
    """
    H, W = gray.shape
    segs = _segments(gray)
    info: dict[str, Any] = {"n_segments": int(len(segs)), "n_vertical": 0, "source": "level"}
    if len(segs) < 3:
        return LEVEL_UP_CAM.copy(), info
    d = segs[:, 2:] - segs[:, :2]
    length = np.hypot(d[:, 0], d[:, 1])
    # Near-vertical in the image (within 25 degrees) and long enough to carry direction.
    vert = (np.abs(d[:, 0]) < np.tan(np.radians(25.0)) * np.abs(d[:, 1])) & (length > 0.05 * H)
    segs, length = segs[vert], length[vert]
    info["n_vertical"] = int(len(segs))
    if len(segs) < 3:
        return LEVEL_UP_CAM.copy(), info
    Kinv = np.linalg.inv(K)
    p1 = np.c_[segs[:, :2], np.ones(len(segs))] @ Kinv.T
    p2 = np.c_[segs[:, 2:], np.ones(len(segs))] @ Kinv.T
    lines = np.cross(p1, p2)  # lines in normalised camera coordinates
    lines /= np.linalg.norm(lines[:, :2], axis=1, keepdims=True) + 1e-12
    mid = 0.5 * (p1 + p2)
    seg_dir = (p2 - p1)[:, :2]
    seg_dir /= np.linalg.norm(seg_dir, axis=1, keepdims=True) + 1e-12

    def inliers(vp: np.ndarray) -> np.ndarray:
        # Direction from each segment's midpoint towards the (possibly infinite) vanishing point.
        to_vp = vp[:2][None, :] - vp[2] * mid[:, :2]
        to_vp /= np.linalg.norm(to_vp, axis=1, keepdims=True) + 1e-12
        return np.abs(np.sum(to_vp * seg_dir, axis=1)) > np.cos(np.radians(1.5))

    # Deterministic RANSAC: pairs drawn from the longest segments with a fixed seed.
    rng = np.random.default_rng(0)
    order = np.argsort(-length)[:60]
    best, best_score = None, 0.0
    for _ in range(min(120, len(order) * (len(order) - 1) // 2)):
        i, j = rng.choice(order, 2, replace=False)
        vp = np.cross(lines[i], lines[j])
        if np.linalg.norm(vp) < 1e-12:
            continue
        m = inliers(vp)
        score = float(length[m].sum())
        if score > best_score:
            best, best_score = m, score
    if best is None or best.sum() < 3 or best_score < 0.5 * H:
        return LEVEL_UP_CAM.copy(), info
    # Least-squares vanishing point of the inliers, each line weighted by its length.
    _, _, vt = np.linalg.svd(lines[best] * length[best, None])
    up = vt[-1] / np.linalg.norm(vt[-1])
    if up[1] > 0:
        up = -up
    tilt = np.degrees(np.arccos(np.clip(-up[1], -1.0, 1.0)))
    info.update(n_inliers=int(best.sum()), tilt_deg=float(tilt))
    if tilt > max_tilt_deg:
        return LEVEL_UP_CAM.copy(), info
    info["source"] = "vertical-vanishing-point"
    return up, info


# ---------------------------------------------------------------------------------------------
# Planes


def _rays(width: int, height: int, K: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera rays with z = 1, pixel centres at integer coordinates."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], -1)


def ground_plane_depth(
    width: int,
    height: int,
    K: np.ndarray,
    up_cam: np.ndarray = LEVEL_UP_CAM,
    camera_height: float = 1.6,
    max_depth: float = 20.0,
) -> np.ndarray:
    """(H, W) float32 z-depth of a ground plane ``camera_height`` below the camera.

    Rays at or above the horizon get ``max_depth``. This is the "single plane" prior alone.
    """
    rays = _rays(width, height, K)
    s = rays @ (-np.asarray(up_cam, dtype=np.float64))
    z = np.full((height, width), max_depth)
    down = s > camera_height / max_depth
    z[down] = camera_height / s[down]
    return z.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Image cues


def detect_sky(rgb: np.ndarray, horizon_row: np.ndarray) -> np.ndarray:
    """(H, W) bool: bright, smooth, sky-coloured pixels connected to the top border.

    ``horizon_row`` (W,) float: sky never extends below the horizon.
    """
    H, W = rgb.shape[:2]
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = (hsv[..., i].astype(np.float32) for i in range(3))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grad = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    grad = cv2.blur(grad, (5, 5))
    blue = (h > 85) & (h < 135) & (s > 40) & (v > 110)
    white = (s < 45) & (v > 170)  # overcast / washed-out sky
    cand = (blue | white) & (grad < 60.0)
    rows = np.arange(H)[:, None]
    cand &= rows < np.maximum(horizon_row[None, :], 0.15 * H)
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels = cv2.connectedComponents(cand)
    if n <= 1:
        return np.zeros((H, W), bool)
    touching = np.unique(labels[0][labels[0] > 0])
    return np.isin(labels, touching)


def floor_probability(lab: np.ndarray, horizon_row: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how floor-like each pixel's colour is.

    Floor colours are sampled in the bottom-centre strip, non-floor colours above the horizon;
    the ratio of the two colour histograms (a two-class Bayes rule, equal priors) is
    back-projected, so colours common on walls count less even when they also occur on the floor.
    """
    H, W = lab.shape[:2]
    rows = np.arange(H)[:, None]
    floor_seed = np.zeros((H, W), bool)
    floor_seed[int(H * 0.85) :, int(W * 0.2) : int(W * 0.8)] = True
    floor_seed &= rows > horizon_row[None, :]
    other_seed = rows < np.minimum(horizon_row[None, :], H * 0.45)
    bins = np.array([8, 16, 16])
    idx = (lab.astype(np.int32) * bins // 256).reshape(-1, 3)
    flat = (idx[:, 0] * bins[1] + idx[:, 1]) * bins[2] + idx[:, 2]

    def hist(mask: np.ndarray) -> np.ndarray:
        h = np.bincount(flat[mask.ravel()], minlength=int(bins.prod())).astype(np.float32)
        # Spread each bin to its neighbours: lighting and shading vary across a surface.
        h = cv2.GaussianBlur(h.reshape(bins[0], -1), (3, 3), 0).reshape(-1)
        return h / max(float(h.sum()), 1.0)

    if floor_seed.sum() < 10:
        return np.full((H, W), 0.5, np.float32)
    hf = hist(floor_seed)
    hn = hist(other_seed) if other_seed.sum() >= 10 else np.full_like(hf, 1.0 / hf.size)
    p = (hf + 1e-5) / (hf + hn + 2e-5)
    return p[flat].reshape(H, W).astype(np.float32)


def floor_contact_rows(
    lab: np.ndarray, horizon_row: np.ndarray, jump_cost: float = 30.0, step_cost: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the row where the floor ends (something stands on it), by dynamic programming.

    Each column's boundary row r scores floor-likeness below r, non-floor-likeness between the
    horizon and r, and a bonus for a horizontal image edge at r; neighbouring columns pay
    ``step_cost`` per row of difference, or ``jump_cost`` for an arbitrary jump (object sides).

    Args:
        lab: (H, W, 3) uint8 Lab image (already smoothed).
        horizon_row: (W,) float, the floor cannot reach above it.

    Returns:
        contact (W,) float: floor pixels are those strictly below it (row > contact);
        floor_prob (H, W) float32, for diagnostics.
    """
    H, W = lab.shape[:2]
    prob = floor_probability(lab, horizon_row)
    rows = np.arange(H)[:, None]
    top = np.clip(np.ceil(horizon_row), 0, H - 1).astype(int)
    below_h = rows >= top[None, :]
    term = np.where(below_h, 2.0 * prob - 1.0 - FLOOR_BIAS, 0.0)
    # Score of boundary r: floor below r minus floor-likeness of [horizon, r] (= total - 2 c[r]).
    c = np.cumsum(term, axis=0)
    unary = -2.0 * c
    L = lab[..., 0].astype(np.float32)
    ey = np.abs(cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3))
    ex = np.abs(cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3))
    edge = np.clip((ey - 0.5 * ex) / (np.percentile(ey, 95) + 1e-3), 0.0, 1.0)
    unary += 4.0 * edge
    unary = np.where(below_h, unary, -1e9)  # the floor ends at or below the horizon
    # Viterbi over columns: small steps cost per row, any jump costs a constant.
    k = 6
    offsets = np.arange(-k, k + 1)
    score = unary[:, 0].copy()
    back = np.zeros((H, W), np.int32)
    idx_rows = np.arange(H)
    for x in range(1, W):
        cand = np.full((len(offsets) + 1, H), -np.inf)
        for i, d in enumerate(offsets):
            src = np.clip(idx_rows + d, 0, H - 1)
            cand[i] = score[src] - step_cost * abs(d)
        best_prev = int(np.argmax(score))
        cand[-1] = score[best_prev] - jump_cost
        choice = np.argmax(cand, axis=0)
        prev_row = np.where(
            choice < len(offsets),
            np.clip(idx_rows + offsets[np.minimum(choice, 2 * k)], 0, H - 1),
            best_prev,
        )
        score = cand[choice, idx_rows] + unary[:, x]
        back[:, x] = prev_row
    contact = np.zeros(W, np.int64)
    contact[-1] = int(np.argmax(score))
    for x in range(W - 1, 0, -1):
        contact[x - 1] = back[contact[x], x]
    return contact.astype(np.float64), prob


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide): smooths ``src`` (H, W) keeping ``guide``'s edges."""
    ksize = (2 * radius + 1, 2 * radius + 1)
    g = guide.astype(np.float32)
    p = src.astype(np.float32)
    mean_g = cv2.boxFilter(g, -1, ksize)
    mean_p = cv2.boxFilter(p, -1, ksize)
    cov = cv2.boxFilter(g * p, -1, ksize) - mean_g * mean_p
    var = cv2.boxFilter(g * g, -1, ksize) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_p - a * mean_g
    return cv2.boxFilter(a, -1, ksize) * g + cv2.boxFilter(b, -1, ksize)


# ---------------------------------------------------------------------------------------------
# The backend


class LayoutDepth:
    """Offline geometric depth prior (floor, standing surfaces, ceiling, sky); no weights.

    Args:
        camera_height: metres between camera and floor; sets the metric scale.
        ceiling_height: metres from floor to ceiling, used indoors.
        sky_depth: depth given to the sky backdrop, metres.
        max_depth_indoor, max_depth_outdoor: far limit of floor / walls, metres.
        scene: "auto" (sky decides), "indoor" or "outdoor".
    """

    name = "layout"

    def __init__(
        self,
        camera_height: float = 1.6,
        ceiling_height: float = 2.7,
        sky_depth: float = 150.0,
        max_depth_indoor: float = 4.0,
        max_depth_outdoor: float = 25.0,
        scene: str = "auto",
    ) -> None:
        if not 0.1 <= camera_height < ceiling_height:
            raise DepthError("camera height must be at least 0.1 m and below the ceiling")
        if scene not in ("auto", "indoor", "outdoor"):
            raise DepthError(f"scene must be 'auto', 'indoor' or 'outdoor', got {scene!r}")
        self.camera_height = float(camera_height)
        self.ceiling_height = float(ceiling_height)
        self.sky_depth = float(sky_depth)
        self.max_depth_indoor = float(max_depth_indoor)
        self.max_depth_outdoor = float(max_depth_outdoor)
        self.scene = scene

    def estimate(self, rgb: np.ndarray, K: np.ndarray) -> DepthResult:
        """Depth for ``rgb`` (H, W, 3) uint8 with intrinsics ``K`` (3, 3): see the module doc."""
        t0 = time.perf_counter()
        rgb, K = check_inputs(rgb, K)
        H, W = rgb.shape[:2]
        s = min(1.0, float(np.sqrt(_WORK_PIXELS / (H * W))))
        w, h = max(16, round(W * s)), max(16, round(H * s))
        small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != (W, H) else rgb
        Ks = scale_intrinsics(K, (W, H), (w, h))
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

        # Line segments need more pixels than the layout: detect them at up to ~640 x 480.
        sl = min(1.0, float(np.sqrt(_LINE_PIXELS / (H * W))))
        wl, hl = max(16, round(W * sl)), max(16, round(H * sl))
        gray_l = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if (wl, hl) != (W, H):
            gray_l = cv2.resize(gray_l, (wl, hl), interpolation=cv2.INTER_AREA)
        up, up_info = estimate_up_vector(gray_l, scale_intrinsics(K, (W, H), (wl, hl)))
        rays = _rays(w, h, Ks)
        s_up = rays @ up  # > 0: ray climbs (above horizon); < 0: ray descends
        # Horizon row per column: where s_up changes sign (for nearly level cameras).
        horizon_row = self._horizon_rows(up, Ks, w, h)

        sky = detect_sky(small, horizon_row)
        sky_frac = float(sky.mean())
        outdoor = self.scene == "outdoor" or (self.scene == "auto" and sky_frac > 0.02)
        far = self.max_depth_outdoor if outdoor else self.max_depth_indoor

        lab = cv2.cvtColor(cv2.bilateralFilter(small, 7, 30, 5), cv2.COLOR_RGB2LAB)
        contact, _ = floor_contact_rows(lab, horizon_row)

        depth = self._compose(rays, s_up, up, contact, far, outdoor)
        conf = np.full((h, w), 0.35, np.float32)
        if outdoor:
            depth[sky] = self.sky_depth
            conf[sky] = 0.05

        # Edge-aware smoothing in log-depth, guided by the photo, then back to full size.
        logd = guided_filter(gray.astype(np.float32) / 255.0, np.log(depth), 4, 1e-3)
        if outdoor:
            logd[sky] = np.log(self.sky_depth)
        gx = cv2.Sobel(logd, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(logd, cv2.CV_32F, 0, 1, ksize=3) / 8
        edge = cv2.dilate(np.hypot(gx, gy), np.ones((3, 3), np.uint8))
        # Floor of 0.01: an estimator's pixel is never "unknown" (0 would drop it from memory).
        conf *= np.maximum(np.exp(-edge / 0.08), 0.03).astype(np.float32)
        if (w, h) != (W, H):
            logd = cv2.resize(logd, (W, H), interpolation=cv2.INTER_LINEAR)
            conf = cv2.resize(conf, (W, H), interpolation=cv2.INTER_LINEAR)
        depth_full = np.exp(logd).astype(np.float32)
        depth_full = np.clip(depth_full, 0.05, max(self.sky_depth, far))

        horizon_center = float(np.interp(w / 2, np.arange(w), horizon_row)) / s
        meta = {
            "scene": "outdoor" if outdoor else "indoor",
            "sky_fraction": sky_frac,
            "horizon_row_center": horizon_center,
            "up_source": up_info["source"],
            "n_vertical_lines": up_info["n_vertical"],
            "camera_height_m": self.camera_height,
            "work_size": [w, h],
            "seconds": time.perf_counter() - t0,
        }
        return DepthResult(
            depth=depth_full,
            confidence=conf,
            up_cam=up,
            scale_policy=f"camera-height-{self.camera_height:g}m",
            meta=meta,
        )

    @staticmethod
    def _horizon_rows(up: np.ndarray, K: np.ndarray, w: int, h: int) -> np.ndarray:
        """(W,) row of the horizon in each column (may lie outside the image)."""
        # Horizon: pixels whose ray r = ((u-cx)/fx, (v-cy)/fy, 1) satisfies r . up = 0.
        u = np.arange(w, dtype=np.float64)
        x = (u - K[0, 2]) / K[0, 0]
        if abs(up[1]) < 1e-6:
            return np.full(w, -1e6)
        y = -(up[0] * x + up[2]) / up[1]
        return y * K[1, 1] + K[1, 2]

    def _compose(
        self,
        rays: np.ndarray,
        s_up: np.ndarray,
        up: np.ndarray,
        contact: np.ndarray,
        far: float,
        outdoor: bool,
    ) -> np.ndarray:
        """(h, w) float64 depth from floor, standing surfaces at the contacts, and ceiling."""
        h, w = s_up.shape
        ch = self.camera_height
        eps = 1e-6
        # Floor: ray / plane intersection (z of ray is 1, so the parameter t is the z-depth).
        floor = np.where(-s_up > eps, ch / np.maximum(-s_up, eps), np.inf)
        # Horizontal length of each ray: a vertical surface at horizontal distance d sits at z
        # = d / |r_h| along the ray, for every row of the column (exact for level cameras).
        r_h = np.linalg.norm(rays - s_up[..., None] * up, axis=-1)
        cols = np.arange(w)
        crow = np.clip(np.round(contact).astype(int), 0, h - 1)
        c_floor = floor[crow, cols]
        c_dist = np.minimum(c_floor * r_h[crow, cols], far)
        wall = c_dist[None, :] / r_h
        rows = np.arange(h)[:, None]
        depth = np.where(rows > contact[None, :], floor, wall)
        if not outdoor:
            ceil_h = self.ceiling_height - ch
            ceiling = np.where(s_up > eps, ceil_h / np.maximum(s_up, eps), np.inf)
            depth = np.minimum(depth, ceiling)
        return np.clip(depth, 0.1, far / np.maximum(r_h, 1e-3))
