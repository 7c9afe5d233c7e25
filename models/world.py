"""The world being explored and the frames it yields: the pipeline's data types.

:class:`FrameEvent` is one finished frame as the explore loop streams it, :class:`FrameRecord`
what a persisted frame brings back to ``WorldPipeline.restore``, :class:`World` the spatial
memory plus what is known about the scene. Plain data: no model runs here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.geometry.cameras import Camera
from models.memory import SpatialMemory


@dataclass
class FrameEvent:
    """One finished frame.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres; source_mask: (H, W) bool, True where the
    pixel was routed from memory and traces back to a real observation, False where it was
    painted (now, or by an earlier frame and routed since); memory_coverage: its mean;
    routed_coverage: fraction routed from memory whatever its origin (earlier paint included:
    what keeps revisits identical); retrieved: memory frame ids used; timings: seconds per step.
    """

    index: int
    camera: Camera
    rgb: np.ndarray
    depth: np.ndarray
    source_mask: np.ndarray
    retrieved: list[int]
    memory_coverage: float
    timings: dict[str, float]
    in_memory: bool
    total: int = 0
    routed_coverage: float = 1.0
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """JSON-ready metadata: the world bundle's frame entry without index and file names
        (the bundle writer adds those); ``notes`` (e.g. a painter's fallback) when there are any."""
        return {
            "K": self.camera.K.tolist(),
            "c2w": self.camera.c2w.tolist(),
            "memory_coverage": round(self.memory_coverage, 6),
            "routed_coverage": round(self.routed_coverage, 6),
            "retrieved": list(self.retrieved),
            "in_memory": self.in_memory,
            **({"notes": list(self.notes)} if self.notes else {}),
        }


@dataclass
class FrameRecord:
    """What a persisted frame brings back to :meth:`WorldPipeline.restore`.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres; confidence: (H, W) float memory weight
    (None when the frame never joined memory); observed: (H, W) bool, traced to the photo;
    memory_depth: (H, W) the depth memory holds, when it differs from ``depth`` (the seed keeps
    0 where its estimate has no confidence).
    """

    index: int
    camera: Camera
    rgb: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray | None = None
    observed: np.ndarray | None = None
    in_memory: bool = True
    memory_depth: np.ndarray | None = None  # when memory holds a different depth (the seed's)


@dataclass
class World:
    """A world being explored: its spatial memory and what is known about it.

    up: (3,) unit world up vector. cameras: every frame's camera so far, in order.
    recent: the last few finished frames, (H, W, 3) uint8, oldest first (video backends
    continue from them; see ``SynthesisRequest.history``).
    """

    width: int
    height: int
    up: np.ndarray
    memory: SpatialMemory
    cameras: list[Camera]
    seed_event: FrameEvent
    backends: dict[str, str]
    seed: int
    scale_policy: str
    depth_meta: dict[str, Any] = field(default_factory=dict)
    last: FrameEvent | None = None
    recent: list[np.ndarray] = field(default_factory=list)

    @property
    def scene_depth(self) -> float:
        """Median depth of the seed frame (metres): the scale presets move at."""
        d = self.seed_event.depth
        return float(np.median(d[d > 0])) if (d > 0).any() else 3.0

    @property
    def n_frames(self) -> int:
        return len(self.cameras)

    def meta(self) -> dict[str, Any]:
        """world.json fields other than frames."""
        return {
            "up": [float(x) for x in self.up],
            "width": self.width,
            "height": self.height,
            "backends": dict(self.backends),
            "seed": self.seed,
            "scale_policy": self.scale_policy,
            "depth_meta": dict(self.depth_meta),  # new frames are lifted with it (restores)
        }
