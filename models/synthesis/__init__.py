"""Synthesis backends: a Protocol, a registry, and the offline ``reproject`` default."""

# Importing registers the backends; their heavy imports (diffusers) happen in their factories.
from models.synthesis.base import (
    SourceView,
    SynthesisBackend,
    SynthesisError,
    SynthesisRequest,
    SynthesisResult,
    create_synthesis_backend,
    register_synthesis_backend,
    source_views,
    synthesis_backend_names,
)

from . import reproject as _reproject  # noqa: F401  (registers "reproject")
from . import sd_inpaint as _sd_inpaint  # noqa: F401  (registers "sd-inpaint")
from . import vace as _vace  # noqa: F401  (registers "vace")
from . import video as _video  # noqa: F401  (registers "video")
from . import wan_i2v as _wan_i2v  # noqa: F401  (registers "wan-i2v")

__all__ = [
    "SourceView",
    "SynthesisBackend",
    "SynthesisError",
    "SynthesisRequest",
    "SynthesisResult",
    "create_synthesis_backend",
    "register_synthesis_backend",
    "source_views",
    "synthesis_backend_names",
]
