"""Building depth and synthesis backends from user choices, with ``auto`` fallback.

``auto`` asks for the weight-backed default and falls back to the offline backend, with a note,
when its weights cannot be had. For depth that is Depth Anything V2. For synthesis it is the
first painter that can run here: ``vace`` when its weights are local and CUDA exists, then
``sd-inpaint`` when its weights are local, else ``reproject``; ``auto`` with ``--model`` picks
the painter the folder holds (a WanVACEPipeline -> ``vace``, ...). Any explicitly named backend
fails loudly instead: a user who asked for a model gets that model or a clear error, never a
silent substitute.

Painters take options by name (:data:`PAINTER_OPTIONS`); an option a painter does not take is
dropped with a note. The studio passes a painter choice as a plain dict (:func:`build_painter`)::

    {"synthesis": "vace", "model": None, "prompt": "a sunny kitchen", "steps": 12,
     "preset": "fast", "guidance_scale": 5.0, ...}   # any key of PAINTER_OPTIONS[synthesis]
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.depth import DepthBackend, DepthError, create_depth_backend, depth_backend_names
from models.manager import ModelError, local_path, weights_present
from models.synthesis import (
    SynthesisBackend,
    SynthesisError,
    create_synthesis_backend,
    synthesis_backend_names,
)

OFFLINE = {"depth": "layout", "synthesis": "reproject"}
AUTO = {"depth": "depth-anything-v2", "synthesis": "sd-inpaint"}
_WAN = {"steps", "prompt", "negative_prompt", "preset", "guidance_scale", "flow_shift",
        "chunk_size", "area", "offload", "vram_gb", "force_cpu", "device"}  # fmt: skip
PAINTER_OPTIONS: dict[str, set[str]] = {
    "reproject": set(),
    "sd-inpaint": {"steps", "prompt", "negative_prompt", "guidance_scale", "device"},
    "video": {"steps", "prompt", "chunk_size", "device"},
    "vace": _WAN | {"reference", "conditioning_scale"},
    "wan-i2v": _WAN,
}
# The painter a diffusers folder is for, by its model_index.json class.
PIPELINE_PAINTERS = {
    "WanVACEPipeline": "vace",
    "WanImageToVideoPipeline": "wan-i2v",
    "WanPipeline": "wan-i2v",
    "StableDiffusionInpaintPipeline": "sd-inpaint",
    "StableDiffusionXLInpaintPipeline": "sd-inpaint",
    "StableVideoDiffusionPipeline": "video",
    "CogVideoXImageToVideoPipeline": "video",
}


@dataclass(frozen=True)
class ModelInfo:
    kind: str  # "depth" | "synthesis"
    backend: str
    module: str  # where DEFAULT_MODEL lives ("" = no weights)
    note: str
    size: str = ""  # parameters (Wan models: computed from their published configs)
    gpu: bool = False  # impractical without CUDA

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
        "25M",
    ),
    ModelInfo(
        "depth", "marigold", "models.depth.marigold", "diffusers MarigoldDepthPipeline", "1.3B"
    ),
    ModelInfo("synthesis", "reproject", "", "offline: routes memory, paints holes (default)"),
    ModelInfo(
        "synthesis",
        "sd-inpaint",
        "models.synthesis.sd_inpaint",
        "diffusers inpainting per frame; memory pixels pasted back exactly",
        "1.3B",
    ),
    ModelInfo(
        "synthesis",
        "video",
        "models.synthesis.video",
        "diffusers image-to-video per chunk with warped-latent guidance",
        "2.3B",
        True,
    ),
    ModelInfo(
        "synthesis",
        "vace",
        "models.synthesis.vace",
        "Wan VACE video completion per chunk; routed pixels kept exactly (GPU)",
        gpu=True,
    ),
    ModelInfo(
        "synthesis",
        "wan-i2v",
        "models.synthesis.wan_i2v",
        "Wan image-to-video per chunk with warped-latent guidance (GPU)",
        gpu=True,
    ),
)


def model_size(info: ModelInfo, model: str | None) -> str:
    """Parameters and bf16 weight size of a backend's default model ("" when unknown)."""
    if info.size or not model:
        return info.size
    from models.synthesis import vram

    if model not in vram.PUBLISHED:
        return ""
    params = vram.published_spec(model).params
    main = params.get("transformer", 0) + params.get("transformer_2", 0)
    rest = sum(params.values()) - main
    return f"{main / 1e9:.1f}B + {rest / 1e9:.1f}B ({sum(params.values()) * 2 / 2**30:.0f} GB bf16)"


def painter_for(model: str) -> str | None:
    """The painter a local diffusers folder (or cached hub id) is for, or None."""
    path = local_path(model)
    index = path / "model_index.json" if path is not None else None
    if index is None or not index.is_file():
        return None
    data = json.loads(index.read_text())
    cls = data.get("_class_name", "")
    if cls == "WanPipeline" and not data.get("expand_timesteps"):
        return None  # text-to-video: no painter can start it from an image
    return PIPELINE_PAINTERS.get(cls)


def list_models() -> list[dict[str, Any]]:
    """Every backend with its default model id and whether its weights are here."""
    registered = {"depth": set(depth_backend_names()), "synthesis": set(synthesis_backend_names())}
    rows = []
    for m in MODELS:
        if m.backend not in registered[m.kind]:
            continue
        model = m.default_model()
        where = local_path(model) if model else None
        rows.append(
            {
                "kind": m.kind,
                "backend": m.backend,
                "default_model": model or "-",
                "weights": "not needed"
                if model is None
                else ("present" if where is not None else "missing"),
                "size": model_size(m, model) or "-",
                "where": str(where) if where is not None else "-",
                "gpu": m.gpu,
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


def _auto_synthesis(make: Callable[[str], Any], notes: list[str], model: str | None) -> Any:
    """The first painter that can run here (see the module docstring), with a note."""
    import torch

    if model:
        painter = painter_for(model)
        if painter is None:
            return _with_fallback("synthesis", make, notes, model)
        notes.append(f"auto synthesis: {model} holds a {painter} model")
        return make(painter)
    vace = next(m for m in MODELS if m.backend == "vace").default_model()
    tried = []
    if vace and weights_present(vace) and torch.cuda.is_available():
        try:
            return make("vace")
        except (ModelError, SynthesisError, OSError) as e:
            tried.append(f"vace unavailable ({str(e).split('. ')[0]})")
    elif vace and weights_present(vace):
        tried.append("vace weights are here but there is no CUDA GPU")
    if tried:
        notes.append(f"auto synthesis: {'; '.join(tried)}")
    return _with_fallback("synthesis", make, notes, None)


def build_synthesis(
    name: str, model: str | None, notes: list[str], **options: Any
) -> SynthesisBackend:
    """``name`` may be "auto"; ``model`` and ``options`` go to weight-backed painters only, each
    option only to painters that take it (the others are dropped with a note)."""

    def make(n: str) -> SynthesisBackend:
        takes = PAINTER_OPTIONS.get(n)
        given = {k: v for k, v in options.items() if v is not None}
        if takes is None:  # a backend registered elsewhere: pass everything given
            opts = given
        else:
            opts = {k: v for k, v in given.items() if k in takes}
            dropped = sorted(set(given) - set(opts))
            if dropped and n != "reproject":
                notes.append(f"{n} does not use {', '.join(dropped)}; ignored")
        if model and n != "reproject":
            opts["model"] = model
        backend = create_synthesis_backend(n, **opts)
        notes.extend(getattr(backend, "notes", [])[:1])  # e.g. the VRAM plan
        return backend

    make = _needs_extra("synthesis", name, make)
    return _auto_synthesis(make, notes, model) if name == "auto" else make(name)


def build_painter(
    choice: dict[str, Any] | None, default: str, notes: list[str]
) -> SynthesisBackend:
    """A painter from the studio's choice dict (``synthesis``: the painter, ``model`` and
    options; None or no painter: ``default``; a ``depth`` key is ignored). Unknown keys and
    out-of-range values raise ModelError."""
    choice = dict(choice or {})
    choice.pop("depth", None)
    name = choice.pop("synthesis", None) or default
    model = choice.pop("model", None) or None
    known = set(synthesis_backend_names()) | {"auto"}
    if name not in known:
        raise ModelError(f"unknown painter {name!r}; choose one of {', '.join(sorted(known))}")
    unknown = sorted(set(choice) - set().union(*PAINTER_OPTIONS.values()))
    if unknown:
        raise ModelError(f"unknown painter option(s) {', '.join(unknown)}")
    steps = choice.get("steps")
    if steps is not None and not 1 <= int(steps) <= 200:
        raise ModelError("steps must be between 1 and 200")
    if len(str(choice.get("prompt") or "")) > 1000:
        raise ModelError("the prompt is too long (at most 1000 characters)")
    return build_synthesis(name, model, notes, **choice)


def painter_choices() -> list[dict[str, Any]]:
    """Painters for a UI: backend, default model, whether its weights are here, whether it
    takes a prompt, and whether it can run on this machine now (with the reason if not)."""
    import torch

    cuda = torch.cuda.is_available()
    out = []
    for row in list_models():
        if row["kind"] != "synthesis":
            continue
        ready = row["weights"] != "missing" and (cuda or not row["gpu"])
        why = ""
        if row["weights"] == "missing":
            why = f"weights for {row['default_model']} are not here (pass a model folder)"
        elif row["gpu"] and not cuda:
            why = "needs a CUDA GPU"
        out.append({"backend": row["backend"], "default_model": row["default_model"],
                    "prompt": "prompt" in PAINTER_OPTIONS.get(row["backend"], set()),
                    "ready": ready, "why": why, "note": row["note"]})  # fmt: skip
    return out
