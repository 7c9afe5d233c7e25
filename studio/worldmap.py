"""The top-down map of a world: a floor plan of the points seen so far, the cameras, the path.

Ground coordinates are those of :class:`models.paths.waypoints.GroundFrame` under the photo's camera:
metres, x to the photo's right, y straight ahead. The map image puts +y up, so the photo looks
"north". :class:`MapView` maps between ground metres and image pixels both ways; it is a pure
function of the points, so the server can recompute it for a click without keeping any state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "FREE",
    "SURFACE",
    "MapView",
    "coverage_estimate",
    "known_grid",
    "render_map",
    "render_points",
    "simplify_polyline",
]

BACKGROUND = (24, 26, 31)
GRID = (48, 52, 60)
CAMERA = (255, 196, 64)
PATH = (80, 200, 255)
TICK = (255, 255, 255)
WAYPOINT = (255, 90, 90)


@dataclass(frozen=True)
class MapView:
    """A square window of the ground plane drawn into ``size`` x ``size`` pixels.

    x0, y1: ground coordinates (metres) of the image's top-left corner; scale: metres per pixel.
    """

    x0: float
    y1: float
    scale: float
    size: int = 512

    @classmethod
    def fit(cls, *xy_sets: np.ndarray, size: int = 512, margin: float = 0.15) -> MapView:
        """A view showing the 2nd..98th percentile of every (N, 2) set given, plus a margin."""
        parts = [np.asarray(p, float).reshape(-1, 2) for p in xy_sets if len(p)]
        pts = np.concatenate(parts) if parts else np.zeros((1, 2))
        lo = np.percentile(pts, 2, axis=0) if len(pts) > 50 else pts.min(0)
        hi = np.percentile(pts, 98, axis=0) if len(pts) > 50 else pts.max(0)
        for p in parts[1:]:  # cameras and paths are always fully inside
            lo, hi = np.minimum(lo, p.min(0)), np.maximum(hi, p.max(0))
        span = max(float((hi - lo).max()), 1.0) * (1 + 2 * margin)
        center = (lo + hi) / 2
        return cls(center[0] - span / 2, center[1] + span / 2, span / size, size)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) in metres."""
        span = self.scale * self.size
        return self.x0, self.x0 + span, self.y1 - span, self.y1

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) ground metres -> (N, 2) float pixel coordinates (column, row)."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        return np.stack([(xy[:, 0] - self.x0) / self.scale, (self.y1 - xy[:, 1]) / self.scale], 1)

    def to_ground(self, px: float, py: float) -> tuple[float, float]:
        """Pixel (column, row) of the map image -> ground metres (x, y)."""
        return self.x0 + (px + 0.5) * self.scale, self.y1 - (py + 0.5) * self.scale

    def contains(self, xy: np.ndarray, slack: float = 0.0) -> np.ndarray:
        """(N,) bool: inside the view, grown by ``slack`` times its span on every side."""
        x_min, x_max, y_min, y_max = self.extent
        pad = slack * (x_max - x_min)
        xy = np.asarray(xy, float).reshape(-1, 2)
        return (
            (xy[:, 0] >= x_min - pad)
            & (xy[:, 0] <= x_max + pad)
            & (xy[:, 1] >= y_min - pad)
            & (xy[:, 1] <= y_max + pad)
        )


def _grid_step(span: float) -> float:
    raw = span / 8
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def render_map(
    view: MapView,
    points_xy: np.ndarray,
    colors: np.ndarray,
    cameras_xy: np.ndarray,
    headings: np.ndarray,
    path_xy: np.ndarray | None = None,
    path_headings: np.ndarray | None = None,
    waypoints_xy: np.ndarray | None = None,
) -> np.ndarray:
    """The map as an (size, size, 3) uint8 RGB image.

    points_xy (N, 2) with colors (N, 3) uint8: the floor plan (nearest point per pixel wins
    nothing: later points overwrite; points are already a sample). cameras_xy (M, 2) with
    headings (M,) radians (0 = ground +y, positive to the right): existing frames. path_xy (P, 2)
    with path_headings: a planned path, drawn with heading ticks. waypoints_xy: clicked points.
    """
    s = view.size
    img = np.empty((s, s, 3), np.uint8)
    img[:] = BACKGROUND
    x_min, x_max, y_min, y_max = view.extent
    step = _grid_step(x_max - x_min)
    for gx in np.arange(math.ceil(x_min / step) * step, x_max, step):
        c = int(round((gx - view.x0) / view.scale))
        cv2.line(img, (c, 0), (c, s - 1), GRID, 1)
    for gy in np.arange(math.ceil(y_min / step) * step, y_max, step):
        r = int(round((view.y1 - gy) / view.scale))
        cv2.line(img, (0, r), (s - 1, r), GRID, 1)
    cv2.putText(img, f"grid {step:g} m", (6, s - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, TICK, 1)

    if len(points_xy):
        px = np.round(view.to_pixels(points_xy)).astype(int)
        ok = (px[:, 0] >= 0) & (px[:, 0] < s) & (px[:, 1] >= 0) & (px[:, 1] < s)
        px, col = px[ok], np.asarray(colors)[ok]
        img[px[:, 1], px[:, 0]] = col
        # Points are sparse: grow each by one pixel so the plan reads as surfaces.
        img = np.where((img == BACKGROUND).all(-1, keepdims=True), cv2.dilate(img, None), img)

    def pix(xy: np.ndarray) -> np.ndarray:
        return np.round(view.to_pixels(xy)).astype(np.int32)

    def arrow(xy: np.ndarray, heading: float, length: float, color, width: int) -> None:
        p0 = view.to_pixels(xy)[0]
        d = np.array([math.sin(heading), -math.cos(heading)])  # +y ground is up the image
        p1 = p0 + d * length
        cv2.line(img, tuple(np.round(p0).astype(int)), tuple(np.round(p1).astype(int)), color,
                 width, cv2.LINE_AA)  # fmt: skip

    if len(cameras_xy):
        pc = pix(cameras_xy)
        if len(pc) > 1:
            cv2.polylines(img, [pc.reshape(-1, 1, 2)], False, CAMERA, 1, cv2.LINE_AA)
        for i in sorted({0, len(pc) - 1, *range(0, len(pc), max(1, len(pc) // 12))}):
            arrow(cameras_xy[i], float(headings[i]), 12, CAMERA, 2)
            cv2.circle(img, tuple(int(v) for v in pc[i]), 3, CAMERA, -1, cv2.LINE_AA)
    if path_xy is not None and len(path_xy):
        pp = pix(path_xy)
        cv2.polylines(img, [pp.reshape(-1, 1, 2)], False, PATH, 2, cv2.LINE_AA)
        if path_headings is not None:
            for i in range(0, len(pp), max(1, len(pp) // 16)):
                arrow(path_xy[i], float(path_headings[i]), 9, TICK, 1)
    if waypoints_xy is not None and len(waypoints_xy):
        for k, p in enumerate(pix(waypoints_xy)):
            cv2.circle(img, tuple(int(v) for v in p), 5, WAYPOINT, -1, cv2.LINE_AA)
            cv2.putText(img, str(k + 1), (int(p[0]) + 6, int(p[1]) - 6),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, WAYPOINT, 1)  # fmt: skip
    return img


# ---- what the browser needs to sketch a path without asking the server ------------------------
UNKNOWN, FREE, SURFACE = 0, 1, 2


def render_points(view: MapView, points_xy: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """The floor plan alone, (size, size, 4) uint8 RGBA with a transparent background: the
    bottom layer of the browser map, which draws grid, cameras and path over it itself."""
    s = view.size
    img = np.zeros((s, s, 4), np.uint8)
    if len(points_xy):
        px = np.round(view.to_pixels(points_xy)).astype(int)
        ok = (px[:, 0] >= 0) & (px[:, 0] < s) & (px[:, 1] >= 0) & (px[:, 1] < s)
        img[px[ok, 1], px[ok, 0], :3] = np.asarray(colors)[ok, :3]
        img[px[ok, 1], px[ok, 0], 3] = 255
        grown = cv2.dilate(img, None)  # sparse points read as surfaces one pixel wider
        img = np.where(img[..., 3:] > 0, img, grown)
    return img


def known_grid(
    view: MapView, points_xy: np.ndarray, cameras_xy: np.ndarray, headings: np.ndarray,
    hfov_rad: float, n: int = 128, bins: int = 90, floor_xy: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """What memory knows of the floor plan, as an (n, n) uint8 grid over ``view`` (row 0 =
    north): SURFACE where seen (wall, furniture) points lie, FREE where seen floor lies or a
    camera saw through to a surface, UNKNOWN elsewhere.

    Free space is traced per camera: in each of ``bins`` directions across its horizontal field
    of view, from the camera to the nearest seen surface in that direction (or, where it saw
    only floor, to the farthest floor it saw).
    """
    grid = np.zeros((n, n), np.uint8)
    cell = view.scale * view.size / n
    pts = np.asarray(points_xy, float).reshape(-1, 2)

    def mark(xy: np.ndarray, value: int) -> None:
        px = view.to_pixels(xy) * (n / view.size)
        r, c = np.floor(px[:, 1]).astype(int), np.floor(px[:, 0]).astype(int)
        ok = (r >= 0) & (r < n) & (c >= 0) & (c < n)
        grid[r[ok], c[ok]] = value

    floor = np.zeros((0, 2)) if floor_xy is None else np.asarray(floor_xy, float).reshape(-1, 2)
    mark(floor, FREE)

    def polar(xy: np.ndarray, cx: float, cy: float, h: float) -> tuple[np.ndarray, np.ndarray]:
        """(bin, distance) of the points inside the camera's field of view."""
        d = xy - (cx, cy)
        dist = np.hypot(d[:, 0], d[:, 1])
        ang = (np.arctan2(d[:, 0], d[:, 1]) - h + np.pi) % (2 * np.pi) - np.pi  # 0 = ahead
        inside = (np.abs(ang) < hfov_rad / 2) & (dist > 1e-6)
        b = np.clip(((ang[inside] / hfov_rad + 0.5) * bins).astype(int), 0, bins - 1)
        return b, dist[inside]

    for (cx, cy), h in zip(np.asarray(cameras_xy, float).reshape(-1, 2), headings, strict=True):
        reach = np.full(bins, np.inf)
        b, dist = polar(pts, cx, cy, h)
        np.minimum.at(reach, b, dist)
        only_floor = np.full(bins, -np.inf)
        b, dist = polar(floor, cx, cy, h)
        np.maximum.at(only_floor, b, dist)
        reach = np.where(np.isfinite(reach), reach, only_floor)
        for k in np.flatnonzero(np.isfinite(reach) & (reach > 0)):
            a = h + ((k + 0.5) / bins - 0.5) * hfov_rad
            t = np.arange(0.0, reach[k], cell / 2)
            mark(np.stack([cx + t * np.sin(a), cy + t * np.cos(a)], 1), FREE)
    mark(pts, SURFACE)
    return grid


def coverage_estimate(
    grid: np.ndarray, view: MapView, xy: tuple[float, float], heading: float, hfov_rad: float,
    rays: int = 24, max_range: float = 8.0, eye_height: float = 1.6,
    vfov_rad: float | None = None, pitch_rad: float = 0.0, rows: int = 12,
) -> float:  # fmt: skip
    """Fraction of a view memory already knows, estimated on the floor plan: the reference for
    ``coverageEstimate`` in ``loci-map.js`` (the server's exact figure, retrieval coverage in 3D,
    replaces it once a path is planned).

    Each of ``rays`` directions across the field of view is a column of the image. Along it the
    ray marches through known free space until it meets a seen surface (distance ``t_s``) or
    the unknown (``t_u``). Of the column's ``rows`` (elevations across the vertical field of
    view around ``pitch_rad``, up positive), one looking down meets the floor at
    ``eye_height / tan(-elevation)``: known when that lies before the unknown; any other row
    meets the wall: known when the ray ended at a seen surface, or ran ``max_range`` through
    known space.
    """
    n = grid.shape[0]
    cell = view.scale * view.size / n
    vfov = 0.75 * hfov_rad if vfov_rad is None else vfov_rad
    elev = pitch_rad + ((np.arange(rows) + 0.5) / rows - 0.5) * vfov
    floor_at = np.where(elev < 0, eye_height / np.tan(np.maximum(-elev, 1e-6)), np.inf)
    known = 0.0
    for k in range(rays):
        a = heading + ((k + 0.5) / rays - 0.5) * hfov_rad
        t_s = t_u = np.inf
        for t in np.arange(0.0, max_range, cell / 2):
            px = view.to_pixels(np.array([[xy[0] + t * np.sin(a), xy[1] + t * np.cos(a)]]))[0]
            r, c = int(np.floor(px[1] * n / view.size)), int(np.floor(px[0] * n / view.size))
            v = grid[r, c] if 0 <= r < n and 0 <= c < n else UNKNOWN
            if v == SURFACE:
                t_s = t
                break
            if v == UNKNOWN:
                t_u = t
                break
        wall_known = t_u == np.inf  # ended at a seen surface, or at the range in known space
        on_floor = (floor_at < t_s) & (floor_at < max_range)
        known += float(np.where(on_floor, floor_at <= t_u, wall_known).mean())
    return known / rays


def simplify_polyline(xy: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker: the fewest points of ``xy`` (N, 2), in order, such that no dropped
    point is further than ``tolerance`` from the simplified line. Ends are kept; the reference
    for ``simplify`` in ``loci-map.js``."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) <= 2:
        return xy.copy()
    keep = np.zeros(len(xy), bool)
    keep[[0, -1]] = True
    stack = [(0, len(xy) - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = xy[i], xy[j]
        seg = b - a
        L2 = float(seg @ seg)
        p = xy[i + 1 : j] - a
        if L2 < 1e-18:
            d = np.hypot(p[:, 0], p[:, 1])
        else:
            t = np.clip(p @ seg / L2, 0.0, 1.0)
            d = np.hypot(*(p - t[:, None] * seg).T)
        k = int(np.argmax(d))
        if d[k] > tolerance:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return xy[keep]
