"""What the studio knows about a project's world, as plain data: the stored world
(:class:`WorldState`) and a camera path ready to save (:class:`PathPlan`).

Its own module so that the service and the generation jobs can both use it without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.geometry.cameras import Camera
from models.paths.trajectory import Trajectory
from models.paths.waypoints import GroundFrame
from storage.db import HistoryCell, WorldFrame
from studio.world_store import world_digest

__all__ = ["PathPlan", "WorldState"]


@dataclass
class WorldState:
    """A project's world as stored: its photo cell, world metadata and frames (index order)."""

    cells: list[HistoryCell]
    photo: HistoryCell
    meta: dict[str, Any]
    frames: list[WorldFrame]

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    @property
    def height(self) -> int:
        return int(self.meta["height"])

    def camera(self, i: int) -> Camera:
        f = self.frames[i]
        return Camera(np.asarray(f.K), np.asarray(f.c2w), self.width, self.height)

    def ground(self) -> GroundFrame:
        """The map's ground frame: under the photo's camera."""
        return GroundFrame.from_camera(
            self.camera(0), np.asarray(self.meta["up"]), float(self.meta["camera_height"])
        )

    @property
    def digest(self) -> str:
        return world_digest(self.frames)


@dataclass
class PathPlan:
    """A camera path ready to save: cameras, their ground track and memory coverage preview."""

    trajectory: Trajectory
    params: dict[str, Any]
    ground_xy: np.ndarray  # (N, 2) on the map
    headings: np.ndarray  # (N,) radians, 0 = map +y, positive to the right
    coverage: list[float]  # per frame: fraction of its view memory already sees (every frame)
    warnings: list[str] = field(default_factory=list)
