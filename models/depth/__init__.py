"""Depth backends: photo -> metric z-depth, found by name through a small registry.

``create_depth_backend("layout")`` is the offline default (a geometric prior, no weights);
"file" reads user-provided depth; "depth-anything-v2" runs the transformers model (relative
or metric variants) and "marigold" the diffusers Marigold pipeline (weights needed for both).
Heavy imports (torch, transformers, diffusers) happen only inside the factories that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.depth.base import DepthBackend, DepthError, DepthResult

DEFAULT_DEPTH_BACKEND = "layout"

_REGISTRY: dict[str, Callable[..., DepthBackend]] = {}


def register_depth_backend(
    name: str,
) -> Callable[[Callable[..., DepthBackend]], Callable[..., DepthBackend]]:
    """Decorator: make ``factory(**options) -> DepthBackend`` available under ``name``."""

    def deco(factory: Callable[..., DepthBackend]) -> Callable[..., DepthBackend]:
        _REGISTRY[name] = factory
        return factory

    return deco


def depth_backend_names() -> list[str]:
    """Names accepted by :func:`create_depth_backend`, sorted."""
    return sorted(_REGISTRY)


def create_depth_backend(name: str = DEFAULT_DEPTH_BACKEND, **options: Any) -> DepthBackend:
    """Build the depth backend called ``name`` with its ``options`` (e.g. path=, model=)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(depth_backend_names())
        raise DepthError(f"unknown depth backend {name!r}; choose one of: {known}")
    try:
        return factory(**options)
    except TypeError as exc:
        raise DepthError(f"bad options for depth backend {name!r}: {exc}") from exc


@register_depth_backend("layout")
def _make_layout(**options: Any) -> DepthBackend:
    from models.depth.layout import LayoutDepth

    return LayoutDepth(**options)


@register_depth_backend("file")
def _make_file(**options: Any) -> DepthBackend:
    from models.depth.file import FileDepth

    return FileDepth(**options)


@register_depth_backend("depth-anything-v2")
def _make_dav2(**options: Any) -> DepthBackend:
    from models.depth.depth_anything import DepthAnythingV2

    return DepthAnythingV2(**options)


@register_depth_backend("marigold")
def _make_marigold(**options: Any) -> DepthBackend:
    from models.depth.marigold import MarigoldDepth

    return MarigoldDepth(**options)


__all__ = [
    "DEFAULT_DEPTH_BACKEND",
    "DepthBackend",
    "DepthError",
    "DepthResult",
    "create_depth_backend",
    "depth_backend_names",
    "register_depth_backend",
]
