"""Building depth and synthesis backends from user choices, with ``auto`` fallback.

``auto`` asks for the weight-backed default (Depth Anything V2 for depth, SD inpainting for
synthesis) and falls back to the offline backend, with a note, when its weights cannot be had.
Any explicitly named backend fails loudly instead: a user who asked for a model gets that model
or a clear error, never a silent substitute.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.depth import DepthBackend, DepthError, create_depth_backend, depth_backend_names
from models.manager import ModelError, weights_present
from models.synthesis import (
    SynthesisBackend,
    SynthesisError,
    create_synthesis_backend,
    synthesis_backend_names,
)

OFFLINE = {"depth": "layout", "synthesis": "reproject"}
AUTO = {"depth": "depth-anything-v2", "synthesis": "sd-inpaint"}


@dataclass(frozen=True)
class ModelInfo:
    kind: str  # "depth" | "synthesis"
    backend: str
    module: str  # where DEFAULT_MODEL lives ("" = no weights)
    note: str

    def default_model(self) -> str | None:
        if not self.module:
            return None
        try:
            return getattr(importlib.import_module(self.module), "DEFAULT_MODEL", None)
        except ImportError:
            return None


MODELS = (
    ModelInfo("depth", "layout", "", "offline geometric prior, no weights (default)"),
    ModelInfo("depth", "file", "", "user/sensor depth: --depth-file F [--depth-scale S]"),
    ModelInfo(
        "depth",
        "depth-anything-v2",
        "models.depth.depth_anything",
        "transformers; relative (camera-height scale) or metric variants",
    ),
    ModelInfo("depth", "marigold", "models.depth.marigold", "diffusers MarigoldDepthPipeline"),
    ModelInfo("synthesis", "reproject", "", "offline: routes memory, paints holes (default)"),
    ModelInfo(
        "synthesis",
        "sd-inpaint",
        "models.synthesis.sd_inpaint",
        "diffusers inpainting per frame; memory pixels pasted back exactly",
    ),
    ModelInfo(
        "synthesis",
        "video",
        "models.synthesis.video",
        "diffusers image-to-video per chunk with warped-latent guidance",
    ),
)


def list_models() -> list[dict[str, Any]]:
    """Every backend with its default model id and whether its weights are here."""
    registered = {"depth": set(depth_backend_names()), "synthesis": set(synthesis_backend_names())}
    rows = []
    for m in MODELS:
        if m.backend not in registered[m.kind]:
            continue
        model = m.default_model()
        rows.append(
            {
                "kind": m.kind,
                "backend": m.backend,
                "default_model": model or "-",
                "weights": "not needed"
                if model is None
                else ("present" if weights_present(model) else "missing"),
                "note": m.note,
            }
        )
    return rows


def _needs_extra(kind: str, name: str, make: Callable[[str], Any]) -> Callable[[str], Any]:
    """``make`` with a missing optional package turned into a clear ModelError."""

    def wrapped(n: str) -> Any:
        try:
            return make(n)
        except ImportError as e:
            raise ModelError(
                f"the {n} {kind} backend needs packages that are not installed ({e.name}): "
                f"pip install -e '.[models]', or use the offline {OFFLINE[kind]} backend"
            ) from e

    return wrapped


def _with_fallback(
    kind: str, make: Callable[[str], Any], notes: list[str], model: str | None
) -> Any:
    info = next(m for m in MODELS if m.kind == kind and m.backend == AUTO[kind])
    wanted = model or info.default_model()
    # auto never downloads: it uses a model whose weights are already here, or the offline one.
    if not wanted or not weights_present(wanted):
        notes.append(
            f"auto {kind}: no local weights for {AUTO[kind]} ({wanted}); using the "
            f"offline {OFFLINE[kind]} backend (pass --model or download the weights)"
        )
        return make(OFFLINE[kind])
    try:
        return make(AUTO[kind])
    except (ModelError, DepthError, SynthesisError, OSError) as e:
        notes.append(
            f"auto {kind}: {AUTO[kind]} unavailable ({str(e).split('. ')[0]}); "
            f"using the offline {OFFLINE[kind]} backend"
        )
        return make(OFFLINE[kind])


def build_depth(name: str, model: str | None, notes: list[str], **options: Any) -> DepthBackend:
    """``name`` may be "auto"; ``model`` goes to weight-backed backends only."""

    def make(n: str) -> DepthBackend:
        opts = dict(options)
        if model and n not in ("layout", "file"):
            opts["model"] = model
        return create_depth_backend(n, **opts)

    make = _needs_extra("depth", name, make)
    return _with_fallback("depth", make, notes, model) if name == "auto" else make(name)


def build_synthesis(
    name: str, model: str | None, notes: list[str], **options: Any
) -> SynthesisBackend:
    """``name`` may be "auto". ``lora=PATH`` (a ``loci train`` adapter) needs a generative
    painter: with "auto" the adapter's own painter is used, never a silent offline fallback."""
    lora = options.get("lora")
    if lora:
        from models.synthesis.lora import lora_backend

        wanted = lora_backend(lora)
        if name == "auto":
            name = wanted
        if name != wanted:
            raise SynthesisError(
                f"the LoRA in {lora} adapts the {wanted} painter, not {name}: "
                f"use --synthesis {wanted} (or auto)"
            )
    else:
        options.pop("lora_scale", None)

    def make(n: str) -> SynthesisBackend:
        opts = {k: v for k, v in options.items() if v is not None} if n != "reproject" else {}
        if model and n != "reproject":
            opts["model"] = model
        return create_synthesis_backend(n, **opts)

    make = _needs_extra("synthesis", name, make)
    return _with_fallback("synthesis", make, notes, model) if name == "auto" else make(name)


def painter_record(backend: SynthesisBackend) -> dict[str, Any]:
    """What world.json records about a painter beyond its name (e.g. its LoRA), or {}."""
    record = getattr(backend, "record", None)
    return dict(record()) if callable(record) else {}
