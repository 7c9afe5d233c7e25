"""The offline default depth backend: a geometric scene-layout prior, no learned weights.

The photo is read as a gravity-aligned world seen from a camera at some height above a floor:

1. *Scene* (``models.depth.scene``): "up" from the vertical vanishing point, the horizon, the
   sky (decided per region) and indoor/outdoor (outdoor only with real sky: never a sky in a
   room).
2. *Floor*: the colour distribution of the bottom-centre strip against the colours above the
   horizon (histogram back-projection) marks floor-like pixels; per column, dynamic programming
   finds where the floor ends, i.e. where something stands on it. Indoors, the same is done
   from the top for the ceiling.
3. *Scale*: indoors, a wall seen from floor to ceiling fixes the camera height: with a room
   ``ceiling_height`` tall, ``h = R t_f / (t_f + t_c)`` from the tangents of the angles below
   and above the horizon of its floor and ceiling contacts (a low quantile over columns, since
   furniture stands in front of walls). Otherwise a typical height: 1.6 m outdoors (eye
   level), 1.4 m indoors (a hand-held camera). ``camera_height=`` fixes it instead.
4. *Depth*: floor pixels are ray / ground-plane intersections; pixels above a contact lie on a
   vertical surface at the contact's horizontal distance; indoors the ceiling plane caps them;
   sky is a far backdrop.
5. *Edges*: computed at about 256 x 192, upsampled in log-depth, then every depth step is made
   a one-pixel step on an image edge (``models.depth.refine``); confidence is low near steps
   and in the sky.

Deterministic; about 0.1-0.2 s for a 512 x 384 photo on one core.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from models.depth.base import DepthError, DepthResult, check_inputs
from models.depth.refine import edge_band, snap_depth_edges
from models.depth.scene import (
    LEVEL_UP_CAM,
    SceneGuess,
    classify_scene,
    estimate_up_vector,
    horizon_rows,
    line_segments,
)
from models.geometry.cameras import scale_intrinsics

__all__ = ["LEVEL_UP_CAM", "LayoutDepth", "contact_rows", "frame_hints", "ground_plane_depth"]

_WORK_PIXELS = 256 * 192  # working resolution: enough for layout, cheap enough for 0.2 s
_LINE_PIXELS = 640 * 480
DEFAULT_HEIGHT = {"outdoor": 1.6, "indoor": 1.4}  # eye level; a hand-held camera indoors
MIN_CONFIDENCE = 0.03  # an estimate is never "unknown" (0 would drop the pixel from memory)


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


def frame_hints(c2w: np.ndarray, up_world: np.ndarray, depth_meta: dict[str, Any]) -> dict:
    """Keyword hints for :meth:`LayoutDepth.estimate` on a new frame of a known world: the
    world's up vector in this camera (``c2w`` (4, 4)), and the seed's scene type and camera
    height from its ``depth_meta`` when recorded (so every frame shares the seed's geometry)."""
    hints: dict[str, Any] = {"up_cam": np.asarray(c2w)[:3, :3].T @ np.asarray(up_world, float)}
    if depth_meta.get("scene") in ("indoor", "outdoor"):
        hints["scene"] = depth_meta["scene"]
    if isinstance(depth_meta.get("camera_height_m"), int | float):
        hints["camera_height"] = float(depth_meta["camera_height_m"])
    return hints


def _class_probability(lab: np.ndarray, seed: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much more each pixel's colour is like ``seed``'s pixels than
    like ``other``'s (two colour histograms, equal priors, back-projected)."""
    H, W = lab.shape[:2]
    bins = np.array([8, 16, 16])
    idx = (lab.astype(np.int32) * bins // 256).reshape(-1, 3)
    flat = (idx[:, 0] * bins[1] + idx[:, 1]) * bins[2] + idx[:, 2]

    def hist(mask: np.ndarray) -> np.ndarray:
        h = np.bincount(flat[mask.ravel()], minlength=int(bins.prod())).astype(np.float32)
        # Spread each bin to its neighbours: lighting and shading vary across a surface.
        h = cv2.GaussianBlur(h.reshape(bins[0], -1), (3, 3), 0).reshape(-1)
        return h / max(float(h.sum()), 1.0)

    if seed.sum() < 10:
        return np.full((H, W), 0.5, np.float32)
    hs = hist(seed)
    ho = hist(other) if other.sum() >= 10 else np.full_like(hs, 1.0 / hs.size)
    p = (hs + 1e-5) / (hs + ho + 2e-5)
    return p[flat].reshape(H, W).astype(np.float32)


def contact_rows(
    prob: np.ndarray,
    allowed: np.ndarray,
    edge: np.ndarray,
    bias: float,
    jump_cost: float = 30.0,
    step_cost: float = 0.4,
) -> np.ndarray:
    """Per column, the row where a surface that runs up from the bottom ends (dynamic
    programming over columns).

    Args:
        prob: (H, W) how much each pixel looks like the surface (floor), in [0, 1].
        allowed: (H, W) bool rows where the boundary may sit (e.g. at or below the horizon).
        edge: (H, W) bonus in [0, 1] for a horizontal image edge at the boundary.
        bias: the surface must look at least this much more floor-like than not to extend.
        jump_cost, step_cost: neighbouring columns pay ``step_cost`` per row of difference (up
            to 6), or ``jump_cost`` for any jump (object sides).

    Returns:
        (W,) float: surface pixels are those strictly below it (row > contact).
    """
    H, W = prob.shape
    term = np.where(allowed, 2.0 * prob - 1.0 - bias, 0.0)
    # Boundary r scores the surface below r minus surface-likeness of [top allowed, r].
    unary = -2.0 * np.cumsum(term, axis=0) + 4.0 * edge
    unary = np.where(allowed, unary, -1e9)
    k = 6
    pen = step_cost * np.abs(np.arange(-k, k + 1))[:, None]
    score = unary[:, 0].copy()
    back = np.zeros((H, W), np.int32)
    rows = np.arange(H)
    src = np.clip(rows[None, :] + np.arange(-k, k + 1)[:, None], 0, H - 1)  # (2k+1, H)
    for x in range(1, W):
        cand = score[src] - pen  # (2k+1, H): come from row r + d
        best_d = np.argmax(cand, axis=0)
        best = cand[best_d, rows]
        best_prev = int(np.argmax(score))
        jump = score[best_prev] - jump_cost
        use_jump = jump > best
        back[:, x] = np.where(use_jump, best_prev, src[best_d, rows])
        score = np.where(use_jump, jump, best) + unary[:, x]
    contact = np.zeros(W, np.int64)
    contact[-1] = int(np.argmax(score))
    for x in range(W - 1, 0, -1):
        contact[x - 1] = back[contact[x], x]
    return contact.astype(np.float64)


def _clean_sky(depth: np.ndarray, sky_depth: float, min_area: int) -> np.ndarray:
    """Depth (H, W) with specks removed from the sky's outline: sky islands smaller than
    ``min_area`` pixels (sky glimpsed through foliage) join the surface around them, and
    surface islands that small inside the sky join the sky. Walked towards, such specks
    turned into dotted contours of tiny disocclusions."""
    sky = depth >= 0.999 * sky_depth
    out = depth.copy()
    for mask, to_sky in ((sky, False), (~sky, True)):
        n, lab, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        small = st[:, cv2.CC_STAT_AREA] < min_area
        small[0] = False
        speck = small[lab]
        if not speck.any():
            continue
        if to_sky:
            out[speck] = sky_depth
        else:  # the surface's depth around the speck: a masked box mean in log-depth
            keep = (~sky).astype(np.float32)
            logd = np.where(sky, 0.0, np.log(np.maximum(depth, 1e-6))).astype(np.float32)
            k = (15, 15)
            num = cv2.boxFilter(logd * keep, -1, k, normalize=False)
            den = cv2.boxFilter(keep, -1, k, normalize=False)
            fill = np.exp(num / np.maximum(den, 1e-6))
            out[speck] = np.where(den[speck] > 0, fill[speck], sky_depth)
    return out


class LayoutDepth:
    """Offline geometric depth prior (floor, standing surfaces, ceiling, sky); no weights.

    Args:
        camera_height: metres between camera and floor (sets the metric scale); None = from
            the scene (ceiling and floor seen together), else a typical height per scene type.
        ceiling_height: metres from floor to ceiling, used indoors.
        sky_depth: depth given to the sky backdrop, metres.
        max_depth_indoor, max_depth_outdoor: far limit of floor / walls, metres.
        scene: "auto" (the sky decides, see ``models.depth.scene``), "indoor" or "outdoor".
        floor_bias: how clearly floor-like a pixel must look to extend the floor up a column.
        snap_radius: pixels a depth step may move to meet an image edge (0 = no snapping).
    """

    name = "layout"

    def __init__(
        self,
        camera_height: float | None = None,
        ceiling_height: float = 2.6,
        sky_depth: float = 150.0,
        max_depth_indoor: float = 4.0,
        max_depth_outdoor: float = 25.0,
        scene: str = "auto",
        floor_bias: float = 0.2,
        snap_radius: int = 3,
    ) -> None:
        if camera_height is not None and not 0.1 <= camera_height < ceiling_height:
            raise DepthError("camera height must be at least 0.1 m and below the ceiling")
        if scene not in ("auto", "indoor", "outdoor"):
            raise DepthError(f"scene must be 'auto', 'indoor' or 'outdoor', got {scene!r}")
        self.camera_height = None if camera_height is None else float(camera_height)
        self.ceiling_height = float(ceiling_height)
        self.sky_depth = float(sky_depth)
        self.max_depth_indoor = float(max_depth_indoor)
        self.max_depth_outdoor = float(max_depth_outdoor)
        self.scene = scene
        self.floor_bias = float(floor_bias)
        self.snap_radius = int(snap_radius)

    #: ``estimate`` takes hints a world already knows (up vector, scene, camera height).
    accepts_hints = True

    def estimate(
        self,
        rgb: np.ndarray,
        K: np.ndarray,
        *,
        up_cam: np.ndarray | None = None,
        scene: str | None = None,
        camera_height: float | None = None,
    ) -> DepthResult:
        """Depth for ``rgb`` (H, W, 3) uint8 with intrinsics ``K`` (3, 3): see the module doc.

        Hints for a new frame of a known world (each skips an estimate and keeps frames
        consistent): ``up_cam`` (3,) world up in this camera, ``scene`` "indoor" / "outdoor",
        ``camera_height`` metres.
        """
        t0 = time.perf_counter()
        rgb, K = check_inputs(rgb, K)
        H, W = rgb.shape[:2]
        s = min(1.0, float(np.sqrt(_WORK_PIXELS / (H * W))))
        w, h = max(16, round(W * s)), max(16, round(H * s))
        small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != (W, H) else rgb
        Ks = scale_intrinsics(K, (W, H), (w, h))
        scene = scene if scene is not None else (None if self.scene == "auto" else self.scene)

        segs = None
        if up_cam is None:
            # Line segments need more pixels than the layout: detect them at up to ~640 x 480.
            sl = min(1.0, float(np.sqrt(_LINE_PIXELS / (H * W))))
            wl, hl = max(16, round(W * sl)), max(16, round(H * sl))
            gray_l = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            if (wl, hl) != (W, H):
                gray_l = cv2.resize(gray_l, (wl, hl), interpolation=cv2.INTER_AREA)
            segs_l = line_segments(gray_l)
            up, up_info = estimate_up_vector(
                gray_l, scale_intrinsics(K, (W, H), (wl, hl)), segs=segs_l
            )
            segs = segs_l * np.array([w / wl, h / hl, w / wl, h / hl])
        else:
            up = np.asarray(up_cam, np.float64) / np.linalg.norm(up_cam)
            up_info = {"source": "given", "n_vertical": 0}
        horizon = horizon_rows(up, Ks, w)
        if scene == "indoor":
            guess = SceneGuess(False, np.zeros((h, w), bool), {"given": "indoor"})
        else:  # told "outdoor": the best sky evidence there is, however small
            guess = classify_scene(small, horizon, segs, force_outdoor=scene == "outdoor")
        outdoor = guess.outdoor
        sky = guess.sky

        rays = _rays(w, h, Ks)
        s_up = rays @ up  # > 0: ray climbs (above horizon); < 0: ray descends
        lab = cv2.cvtColor(cv2.bilateralFilter(small, 7, 30, 5), cv2.COLOR_RGB2LAB)
        L = lab[..., 0].astype(np.float32)
        ey = np.abs(cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3))
        ex = np.abs(cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3))
        edge = np.clip((ey - 0.5 * ex) / (np.percentile(ey, 95) + 1e-3), 0.0, 1.0)
        rows = np.arange(h)[:, None]
        below = rows >= np.clip(np.ceil(horizon), 0, h - 1)[None, :]
        floor_seed = np.zeros((h, w), bool)
        floor_seed[int(h * 0.85) :, int(w * 0.2) : int(w * 0.8)] = True
        above = rows < np.minimum(horizon[None, :], h * 0.45)
        prob = _class_probability(lab, floor_seed & below, above & ~sky)
        contact = contact_rows(prob, below, edge, self.floor_bias)

        ceiling = None
        if not outdoor and camera_height is None and float(np.median(horizon)) > 0.2 * h:
            # The same search upside down: a ceiling runs down from the top to its contact.
            top_seed = np.zeros((h, w), bool)
            top_seed[: max(2, int(h * 0.08)), int(w * 0.2) : int(w * 0.8)] = True
            cprob = _class_probability(lab, top_seed & ~below, below)
            c = contact_rows(cprob[::-1], ~below[::-1], edge[::-1], self.floor_bias)
            ceiling = h - 1 - c  # ceiling pixels are those strictly above this row
        if camera_height is not None:
            height, height_source = float(camera_height), "given"
        else:
            height, height_source = self._camera_height(outdoor, contact, ceiling, s_up, h)
        far = self.max_depth_outdoor if outdoor else self.max_depth_indoor
        depth = self._compose(rays, s_up, up, contact, far, outdoor, height)
        if outdoor:
            depth[sky] = self.sky_depth

        # Full size in log-depth, then every depth step onto an image edge.
        logd = np.log(depth).astype(np.float32)
        if (w, h) != (W, H):
            logd = cv2.resize(logd, (W, H), interpolation=cv2.INTER_LINEAR)
        depth_full = np.exp(logd)
        radius = max(1, round(self.snap_radius * W / 512)) if self.snap_radius > 0 else 0
        if radius:
            depth_full = snap_depth_edges(depth_full, rgb, radius)
        if outdoor:
            depth_full = _clean_sky(depth_full, self.sky_depth, min_area=max(16, H * W // 2000))
        depth_full = np.clip(depth_full, 0.05, max(self.sky_depth, far)).astype(np.float32)
        conf = np.full((H, W), 0.35, np.float32)
        conf[edge_band(depth_full, max(radius, 1))] = 0.1
        if outdoor:
            sky_full = depth_full >= 0.999 * self.sky_depth
            conf[sky_full] = 0.05
        conf = np.maximum(conf, MIN_CONFIDENCE)

        meta = {
            "scene": "outdoor" if outdoor else "indoor",
            "sky_fraction": float(sky.mean()),
            "scene_cues": guess.cues,
            "horizon_row_center": float(np.interp(w / 2, np.arange(w), horizon)) / s,
            "up_source": up_info["source"],
            "n_vertical_lines": up_info["n_vertical"],
            "camera_height_m": round(height, 3),
            "camera_height_source": height_source,
            "work_size": [w, h],
            "seconds": time.perf_counter() - t0,
        }
        policy = f"camera-height-{round(height, 2):g}m"
        if height_source != "given":
            policy += f"-{height_source}"
        return DepthResult(
            depth=depth_full, confidence=conf, up_cam=up, scale_policy=policy, meta=meta
        )

    def _camera_height(
        self,
        outdoor: bool,
        contact: np.ndarray,
        ceiling: np.ndarray | None,
        s_up: np.ndarray,
        h: int,
    ) -> tuple[float, str]:
        """(metres, how it was found): given, from a wall seen floor to ceiling, or typical."""
        if self.camera_height is not None:
            return self.camera_height, "given"
        kind = "outdoor" if outdoor else "indoor"
        if ceiling is not None:
            cols = np.arange(len(contact))
            fr = np.round(contact).astype(int)
            cr = np.round(ceiling).astype(int)
            # Columns with a real floor and ceiling run and a wall between them.
            ok = (fr < h - 2) & (cr > 1) & (cr < fr - 4)
            if ok.sum() >= 0.2 * len(cols):
                t_f = -s_up[np.clip(fr[ok] + 1, 0, h - 1), cols[ok]]  # tan below the horizon
                t_c = s_up[np.clip(cr[ok] - 1, 0, h - 1), cols[ok]]  # tan above it
                good = (t_f > 0.02) & (t_c > 0.02)
                if good.sum() >= 0.2 * len(cols):
                    # Furniture stands in front of walls (its floor contact is nearer): a low
                    # quantile of the per-column ratio is the wall's.
                    r = float(np.quantile(t_f[good] / t_c[good], 0.2))
                    est = self.ceiling_height * r / (1.0 + r)
                    if 0.8 <= est <= 2.0:
                        return est, "from-ceiling"
        return DEFAULT_HEIGHT[kind], f"{kind}-typical"

    def _compose(
        self,
        rays: np.ndarray,
        s_up: np.ndarray,
        up: np.ndarray,
        contact: np.ndarray,
        far: float,
        outdoor: bool,
        ch: float,
    ) -> np.ndarray:
        """(h, w) float64 depth from floor, standing surfaces at the contacts, and ceiling."""
        h, w = s_up.shape
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
        # A contact found a few rows too high near the horizon puts its column far away: a
        # median over about a twelfth of the width removes such stripes, while an opening
        # (a doorway, a street) wider than that keeps its distance.
        k = max(3, (w // 12) | 1)
        padded = np.pad(np.log(c_dist), k // 2, mode="edge")
        c_dist = np.exp(np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1))
        wall = c_dist[None, :] / r_h
        rows = np.arange(h)[:, None]
        depth = np.where(rows > contact[None, :], floor, wall)
        if not outdoor:
            ceil_h = self.ceiling_height - ch
            ceiling = np.where(s_up > eps, ceil_h / np.maximum(s_up, eps), np.inf)
            depth = np.minimum(depth, ceiling)
        return np.clip(depth, 0.1, far / np.maximum(r_h, 1e-3))
