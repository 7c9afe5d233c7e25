"""What a planned path will see, shown before anything is generated.

:class:`PathPreviews` is a part of :class:`studio.service.Studio`: it keeps a restored copy of
each recent world's spatial memory (read-only: retrieval and warping never change it), so that
planning a path, colouring it by coverage and showing what memory already knows of a few of its
views costs milliseconds, not a reload of every stored frame. :func:`blind_warnings` turns
views that would be mostly painted into a warning that says what to change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from models.pipeline import World
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
    """Preview methods of :class:`studio.service.Studio` (which provides ``restore``)."""

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
