"""What a synthesis backend receives and returns, and the registry of backends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from models.geometry.cameras import Camera


class SynthesisError(ValueError):
    """A synthesis backend that cannot be created or run (message names the fix)."""


@dataclass
class SourceView:
    """A memory frame a painter may copy real pixels from.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres (0 where the frame has no geometry,
    e.g. a sensor's invalid pixels: seen in colour, never routed by the warp); camera: its
    intrinsics and pose.
    """

    frame_id: int
    rgb: torch.Tensor
    depth: torch.Tensor
    camera: Camera


def source_views(frames: Mapping[int, Any], retrieved: list[int]) -> list[SourceView]:
    """The retrieved memory frames, and the photo (frame 0) whenever ``frames`` (memory's, by
    id: objects with ``rgb``, ``depth``, ``camera``) still holds it: a painter's real pixels to
    copy from (references, no copies)."""
    ids = list(retrieved) + ([0] if 0 in frames and 0 not in retrieved else [])
    return [SourceView(i, frames[i].rgb, frames[i].depth, frames[i].camera) for i in ids]


@dataclass
class SynthesisRequest:
    """Conditions for one target frame.

    warped_rgb: (H, W, 3) float32 [0, 1] memory routed into the target (0 where unseen);
    warped_depth: (H, W) float32 metres (0 where unseen); valid: (H, W) bool memory coverage;
    stretch: (H, W) float32 or None, linear magnification of each routed pixel's source footprint
    (1 = native resolution; see :class:`models.memory.Correspondence`).
    reference: (H, W, 3) float32 [0, 1] or None, the world's seed photo (frame 0), for backends
    that condition on a reference image. history: (K, H, W, 3) float32 [0, 1] or None, the
    world's last K finished frames before this request's chunk, oldest first (K is at most the
    backend's ``context_frames``), so a video backend can continue from them.
    sources: the retrieved memory frames (and the photo), for painters that copy from them
    (None: only the routed pixels are known); observed: (H, W) bool or None, True where the
    routed pixel traces back to a real observation (False: earlier paint, routed since);
    up: (3,) the world's up vector in world coordinates, when known (a floor continues as a
    floor).
    """

    index: int
    camera: Camera
    warped_rgb: torch.Tensor
    warped_depth: torch.Tensor
    valid: torch.Tensor
    seed: int = 0
    prompt: str | None = None
    stretch: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    history: torch.Tensor | None = None
    sources: list[SourceView] | None = None
    observed: torch.Tensor | None = None
    up: np.ndarray | None = None


@dataclass
class SynthesisResult:
    """rgb: (H, W, 3) float32 [0, 1]; source_mask: (H, W) bool, True where the pixel was routed
    from memory unchanged; depth_hint: (H, W) float32 for painted pixels when the backend has
    one (else None, and the pipeline lifts depth itself)."""

    rgb: torch.Tensor
    source_mask: torch.Tensor
    depth_hint: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class SynthesisBackend(Protocol):
    """Paints the never-seen pixels of target frames; routes the seen ones unchanged.

    ``chunk_size`` frames are synthesised together (1 for per-frame backends; video models
    take a chunk so they can keep it temporally coherent). A backend may also set
    ``context_frames`` (default 0): how many of the world's last finished frames it wants in
    ``SynthesisRequest.history``.
    """

    name: str
    chunk_size: int

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]: ...


_REGISTRY: dict[str, Callable[..., SynthesisBackend]] = {}


def register_synthesis_backend(name: str):
    def deco(factory: Callable[..., SynthesisBackend]) -> Callable[..., SynthesisBackend]:
        _REGISTRY[name] = factory
        return factory

    return deco


def synthesis_backend_names() -> list[str]:
    return sorted(_REGISTRY)


def create_synthesis_backend(name: str, **options: Any) -> SynthesisBackend:
    """Instantiate a registered backend by name; unknown names list the known ones."""
    if name not in _REGISTRY:
        known = ", ".join(synthesis_backend_names())
        raise SynthesisError(f"unknown synthesis backend {name!r}; available: {known}")
    return _REGISTRY[name](**options)
