"""What a planned path will see, where it may go, shown before anything is generated.

:class:`PathPreviews` is a part of :class:`studio.service.Studio`: it keeps a restored copy of
each recent world's spatial memory (read-only: retrieval and warping never change it), so that
planning a path, colouring it by coverage and showing what memory already knows of a few of its
views costs milliseconds, not a reload of every stored frame. It also holds the map's points
(what a path is checked against) and caps a long stroke at the frame limit with a message.
:func:`blind_warnings` turns views that would be mostly painted into a warning that says what
to change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from models.geometry.cameras import Camera
from models.paths.trajectory import Trajectory
from models.paths.waypoints import GroundFrame, from_waypoints
from models.pipeline import World
from studio.errors import StudioError
from studio.state import PathPlan, WorldState

__all__ = ["BLIND", "PathPreviews", "blind_warnings", "unknown_overlay"]

BLIND = 0.15  # a view whose known share is below this is "mostly painted"
UNKNOWN_TINT = np.array([200, 40, 140], np.float32)  # what memory has never seen: magenta


def blind_warnings(coverage: list[float], params: dict[str, Any]) -> list[str]:
    """A warning, with remedies, when views of the path turn into the unknown."""
    blind = [i for i, c in enumerate(coverage) if c < BLIND]
    if not blind:
        return []
    n = len(coverage)
    fixes = []
    if params.get("mode") == "waypoints" and params.get("look", "path") == "path":
        fixes.append('set Look to "fixed" (the camera keeps facing what the photo saw)')
    fixes.append("turn less sharply, or end the path before it leaves the map's known area")
    if params.get("mode") == "preset":
        fixes.append("use fewer frames (a shorter move)")
    fixes.append('start from a frame that already faces that way ("Start from")')
    return [
        f"{len(blind)} of {n} views see less than {BLIND:.0%} of anything known (first: frame "
        f"{blind[0]}); those will be mostly painted. To keep more of it known: "
        + "; ".join(fixes)
        + "."
    ]


def unknown_overlay(rgb: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the warped memory where it is known, a magenta hatch where it is not."""
    h, w = known.shape
    yy, xx = np.mgrid[0:h, 0:w]
    hatch = ((xx + yy) // 6) % 2 == 0
    tint = np.where(hatch[..., None], UNKNOWN_TINT, UNKNOWN_TINT * 0.55)
    return np.where(known[..., None], rgb.astype(np.float32), tint).astype(np.uint8)


class PathPreviews:
    """Preview methods of :class:`studio.service.Studio` (which provides ``restore``, ``ctx``,
    ``store`` and ``_map_points``)."""

    _memory_lock = threading.Lock()
    _memory_worlds: OrderedDict[str, World]

    def memory_world(self, ws: WorldState, keep: int = 4) -> World:
        """The world's spatial memory restored once per world content (the ``keep`` newest);
        for retrieval and warping only, never to generate into."""
        with self._memory_lock:
            cache = self.__dict__.setdefault("_memory_worlds", OrderedDict())
            world = cache.get(ws.digest)
            if world is not None:
                cache.move_to_end(ws.digest)
                return world
        _, world = self.restore(ws)  # type: ignore[attr-defined]
        with self._memory_lock:
            cache[ws.digest] = world
            while len(cache) > keep:
                cache.popitem(last=False)
        return world

    def memory_preview(
        self, ws: WorldState, plan: PathPlan, count: int = 4
    ) -> list[tuple[np.ndarray, str]]:
        """What memory already knows of ``count`` views of the path (evenly spaced, with the
        least known one among them): (image, caption) pairs, unknown pixels hatched magenta."""
        n = len(plan.trajectory)
        picks = {int(round(v)) for v in np.linspace(1 if n > 1 else 0, n - 1, count)}
        if n > 1:
            picks.add(int(np.argmin(plan.coverage[1:])) + 1)
        world = self.memory_world(ws)
        out = []
        for i in sorted(picks)[: count + 1]:
            cam = plan.trajectory.cameras[i]
            ids = world.memory.retrieve(cam).frame_ids
            corr = world.memory.correspond(cam, ids)
            rgb = (corr.rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            known = corr.valid.numpy().astype(bool)
            out.append((unknown_overlay(rgb, known), f"frame {i}: {known.mean():.0%} known"))
        return out

    # ---- where a path may go (the map) and how long it may be ----------------------------
    def _check_on_map(self, ws: WorldState, gf0: GroundFrame, wp: np.ndarray) -> None:
        from studio.worldmap import MapView

        pts, _ = self.known_points(ws)  # what the map shows the extent of
        cams = gf0.to_ground(np.stack([np.asarray(f.c2w)[:3, 3] for f in ws.frames]))
        view = MapView.fit(pts, cams)
        outside = ~view.contains(wp, slack=0.5)
        if outside.any():
            i = int(np.argmax(outside))
            x_min, x_max, y_min, y_max = view.extent
            raise StudioError(
                f"Waypoint {i + 1} at ({wp[i, 0]:.1f}, {wp[i, 1]:.1f}) m is far outside the known "
                f"map (x {x_min:.1f}..{x_max:.1f}, y {y_min:.1f}..{y_max:.1f} m). Move it closer."
            )

    def map_points(self, ws: WorldState) -> tuple[np.ndarray, np.ndarray]:
        """Ground coordinates (N, 2) and colours (N, 3) of a sample of the world's points.

        Points near the floor and above the eyes are left out so the plan shows walls and
        furniture, not the floor texture and ceiling.
        """
        walls, colors, _, _ = self._map_layers(ws)
        return walls, colors

    def known_points(self, ws: WorldState) -> tuple[np.ndarray, np.ndarray]:
        """Ground coordinates of what memory knows for the map's coverage estimate: (solid
        (N, 2): every seen point above the floor at any height, the sky left out; floor (M, 2):
        seen floor)."""
        _, _, solid, floor = self._map_layers(ws)
        return solid, floor

    def _map_layers(self, ws: WorldState, max_frames: int = 24) -> tuple[np.ndarray, ...]:
        from models.geometry.pointcloud import frame_points
        from studio.world_store import load_rgb, load_state

        # A path preview checks waypoints against these points and the map draws them: read
        # the frames once per world content, not once per caller.
        cached = self._map_points.get(ws.digest)  # type: ignore[attr-defined]
        if cached is not None:
            return cached
        gf = ws.ground()
        step = max(1, len(ws.frames) // max_frames)
        far = 8.0 * float(ws.meta.get("scene_depth") or 3.0)  # the sky is a far backdrop
        xy, rgb, solid, floor = [], [], [], []
        for f in ws.frames[::step]:
            cam = Camera(np.asarray(f.K), np.asarray(f.c2w), ws.width, ws.height)
            pts, col = frame_points(load_rgb(self.store, f), load_state(self.store, f)["depth"],
                                    cam, stride=6)  # type: ignore[attr-defined]  # fmt: skip
            h = gf.height_of(pts)
            near = np.linalg.norm(pts - cam.c2w[:3, 3], axis=1) < far
            keep = (h > 0.15) & (h < gf.camera_height + 0.6)
            xy.append(gf.to_ground(pts[keep]))
            rgb.append(col[keep])
            solid.append(gf.to_ground(pts[(h > 0.15) & near]))
            floor.append(gf.to_ground(pts[(h <= 0.15) & (h > -0.5) & near]))
        result = tuple(np.concatenate(x) for x in (xy, rgb, solid, floor))
        cache = self._map_points  # type: ignore[attr-defined]
        if len(cache) >= 16:  # a few worlds' worth; oldest out
            cache.pop(next(iter(cache)))
        cache[ws.digest] = result
        return result

    def capped_path(
        self, wp: np.ndarray, start: Camera, up: np.ndarray, height: float, eye: float | None,
        look: str, n_kw: dict[str, Any],
    ) -> tuple[Trajectory, list[str]]:  # fmt: skip
        """The path through ``wp`` (ground metres from ``start``) with ``n_kw`` (n_frames or
        speed); a long stroke at a given speed is capped at the frame limit, with a message,
        rather than refused. The cap is decided from the waypoints' chord before any spline
        is built, and checked again on the spline (which is never shorter)."""
        limit = self.ctx.max_frames  # type: ignore[attr-defined]
        chord = float(np.linalg.norm(np.diff(np.vstack([[0.0, 0.0], wp]), axis=0), axis=1).sum())
        speed = n_kw.get("speed")
        kw = {"n_frames": limit} if speed and chord / speed + 1 > limit else n_kw
        traj = from_waypoints(wp, start, up=up, camera_height=height, eye_height=eye, look=look,
                              **kw)  # fmt: skip
        if len(traj) > limit:
            kw = {"n_frames": limit}
            traj = from_waypoints(wp, start, up=up, camera_height=height, eye_height=eye,
                                  look=look, **kw)  # fmt: skip
        if not speed or "speed" in kw:
            return traj, []
        length = traj.path_length()
        return traj, [
            f"The path is {length:.1f} m: at {speed:g} m per frame it needs more than the limit "
            f"of {limit} frames, so it is capped at {limit} frames ({length / (limit - 1):.3f} m "
            "per frame). Shorten the path to keep the speed."
        ]
