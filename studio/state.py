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
from storage.db import HistoryCell, Repository, WorldFrame
from studio.errors import StudioError
from studio.world_store import world_digest

__all__ = ["PathPlan", "WorldState"]


@dataclass
class WorldState:
    """A project's world as stored: its photo cell, world metadata and frames (index order)."""

    cells: list[HistoryCell]
    photo: HistoryCell
    meta: dict[str, Any]
    frames: list[WorldFrame]

    @classmethod
    def from_cells(
        cls, repo: Repository, cells: list[HistoryCell], upto: HistoryCell | None = None
    ) -> WorldState:
        """The world of a project's ``cells`` (in order): the newest finished photo and the
        frames of every generation after it, or only of those up to and including ``upto`` (a
        worker rebuilding the world its job continues). StudioError when there is no photo."""
        limit = upto.position if upto is not None else None
        photos = [c for c in cells if c.kind == "photo" and c.status == "done"
                  and (limit is None or c.position < limit)]  # fmt: skip
        if not photos:
            raise StudioError("This project has no photo yet: add one in the Photo tab.")
        photo = photos[-1]
        frames = list(repo.list_frames(photo.id))
        for c in cells:
            if (c.kind == "generation" and c.position > photo.position
                    and (limit is None or c.position <= limit)):  # fmt: skip
                frames.extend(repo.list_frames(c.id))
        frames.sort(key=lambda f: f.frame_index)
        # Frames are contiguous by construction; stop at a gap rather than build a broken world.
        n = next((i for i, f in enumerate(frames) if f.frame_index != i), len(frames))
        return cls(cells, photo, dict(photo.params["world"]), frames[:n])

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
