"""Synthesis backends: a Protocol, a registry, and the offline ``reproject`` default."""

from . import reproject as _reproject  # noqa: F401  (registers "reproject")
from .base import (
    SynthesisBackend,
    SynthesisError,
    SynthesisRequest,
    SynthesisResult,
    create_synthesis_backend,
    register_synthesis_backend,
    synthesis_backend_names,
)

__all__ = [
    "SynthesisBackend",
    "SynthesisError",
    "SynthesisRequest",
    "SynthesisResult",
    "create_synthesis_backend",
    "register_synthesis_backend",
    "synthesis_backend_names",
]
