"""Building depth and synthesis backends from user choices, with ``auto`` fallback.

``auto`` asks for the weight-backed default and falls back to the offline backend, with a note,
when its weights cannot be had:

* **depth** (``auto`` is the default in the CLI and the studio): Depth Anything V2 when its
  weights are in the local cache, or when the hub can be reached, in which case the first use
  downloads the Small model once (about 100 MB, with a progress bar, and a note saying so).
  Otherwise ``layout``. Whether the hub answers is decided in well under a second (a TCP
  connect in a thread, abandoned after :data:`REACH_TIMEOUT_S`, remembered per process), and
  not at all under ``HF_HUB_OFFLINE=1``: offline, nothing waits.
* **synthesis**: SD inpainting only when its weights (gigabytes) are already local.

Any explicitly named backend fails loudly instead: a user who asked for a model gets that model
or a clear error, never a silent substitute.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.depth import DepthBackend, DepthError, create_depth_backend, depth_backend_names
from models.manager import ModelError, is_offline, weights_present
from models.synthesis import (
    SynthesisBackend,
    SynthesisError,
    create_synthesis_backend,
    synthesis_backend_names,
)

OFFLINE = {"depth": "layout", "synthesis": "reproject"}
AUTO = {"depth": "depth-anything-v2", "synthesis": "sd-inpaint"}
DEFAULT_DEPTH = "auto"
REACH_TIMEOUT_S = 0.5  # the most ``auto`` ever waits to learn that the hub is out of reach
DAV2_DOWNLOAD_MB = 100  # Depth Anything V2 Small, for the note before a first download
_reach_cache: dict[str, tuple[float, bool]] = {}


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
    ModelInfo("depth", "layout", "", "offline geometric prior, no weights (auto's fallback)"),
    ModelInfo("depth", "file", "", "user/sensor depth: --depth-file F [--depth-scale S]"),
    ModelInfo(
        "depth",
        "depth-anything-v2",
        "models.depth.depth_anything",
        "transformers; relative (scale from the scene) or metric variants (auto's choice)",
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


def hub_reachable_fast(timeout: float = REACH_TIMEOUT_S, ttl: float = 300.0) -> bool:
    """Whether the Hugging Face hub accepts a TCP connection, decided within ``timeout``
    seconds whatever DNS does (the connect runs in a daemon thread that is abandoned when
    late). False at once under ``HF_HUB_OFFLINE``. Remembered for ``ttl`` seconds."""
    if is_offline():
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    now = time.monotonic()
    hit = _reach_cache.get(host)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True, name="loci-hub-probe")
    t.start()
    t.join(timeout)
    ok = bool(result and result[0])
    _reach_cache[host] = (now, ok)
    return ok


def _auto_depth(make: Callable[[str], Any], notes: list[str], model: str | None) -> Any:
    """Depth Anything V2 when its weights are here or can be downloaded, else ``layout``."""
    from models.depth.depth_anything import DEFAULT_MODEL

    wanted = model or DEFAULT_MODEL
    local = weights_present(wanted)
    if not local and not hub_reachable_fast():
        why = "HF_HUB_OFFLINE is set" if is_offline() else "the Hugging Face hub cannot be reached"
        notes.append(
            f"auto depth: Depth Anything V2 ({wanted}) is not in the local cache and {why}; "
            "using the offline layout prior (geometric, no weights: coarser depth). Download "
            f"the model once (huggingface-cli download {DEFAULT_MODEL}) for real depth"
        )
        return make(OFFLINE["depth"])
    if not local:
        notes.append(
            f"auto depth: downloading Depth Anything V2 Small ({wanted}, about "
            f"{DAV2_DOWNLOAD_MB} MB) once into the Hugging Face cache; later runs use it offline"
        )
    try:
        return make(AUTO["depth"])
    except (ModelError, DepthError, OSError) as e:
        notes.append(
            f"auto depth: depth-anything-v2 unavailable ({str(e).split('. ')[0]}); "
            "using the offline layout prior"
        )
        return make(OFFLINE["depth"])


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
        if name == "auto" and n == AUTO["depth"] and not model:
            opts.setdefault("variant", "auto")  # a local metric checkpoint per scene type
        return create_depth_backend(n, **opts)

    make = _needs_extra("depth", name, make)
    return _auto_depth(make, notes, model) if name == "auto" else make(name)


def build_synthesis(
    name: str, model: str | None, notes: list[str], **options: Any
) -> SynthesisBackend:
    def make(n: str) -> SynthesisBackend:
        opts = {k: v for k, v in options.items() if v is not None} if n != "reproject" else {}
        if model and n != "reproject":
            opts["model"] = model
        return create_synthesis_backend(n, **opts)

    make = _needs_extra("synthesis", name, make)
    return _with_fallback("synthesis", make, notes, model) if name == "auto" else make(name)
