"""Model manager: lazy loading and caching of weight-backed backends, device/dtype policy,
offline-friendly errors.

* One cache entry per (backend, model id, dtype, device); loading happens on first use.
* CUDA gets bfloat16 (fp16 where bf16 is not supported), CPU gets float32.
* ``HF_HUB_OFFLINE`` and the hub cache are respected: a hub id loads from the cache when it is
  there; a local directory loads as is. When weights cannot be had, :func:`load_error` builds a
  message that names the missing model and the offline backend to use instead.
* ``gpu`` wraps a function with ``spaces.GPU`` on ZeroGPU Spaces, and is a no-op elsewhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


class ModelError(ValueError):
    """A model that cannot be loaded or used; the message says what to do instead."""


def pick_device(prefer: str | None = None) -> str:
    """ "cuda" when available (or asked for and available), else "cpu"."""
    if prefer == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if prefer and prefer.startswith("cuda"):
        raise ModelError("CUDA was asked for but no GPU is available; use --device cpu")
    return "cpu"


def pick_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def local_path(model_id: str) -> Path | None:
    """The local directory for ``model_id``: itself when it is a directory, else its snapshot in
    the Hugging Face cache (None when not downloaded)."""
    p = Path(model_id).expanduser()
    if p.is_dir():
        return p
    if p.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not in the cache (or hub library missing)
        return None


def weights_present(model_id: str) -> bool:
    return local_path(model_id) is not None


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers at all (a TCP connect, no request).

    Checked before trying to download: without it, an offline machine spends a minute and a
    half in the hub client's retries before the inevitable error.
    """
    import socket

    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_available(backend: str, model_id: str, offline_alternative: str) -> str:
    """``model_id`` as something ``from_pretrained`` can load now: the local directory or
    cached snapshot when there is one, else the hub id if the hub can be reached; otherwise a
    ModelError naming the offline alternative, raised at once."""
    local = local_path(model_id)
    if local is not None:
        return str(local)
    if Path(model_id).expanduser().exists() or not is_offline() and hub_reachable():
        return model_id
    why = "HF_HUB_OFFLINE is set" if is_offline() else "the hub cannot be reached"
    raise load_error(
        backend,
        model_id,
        offline_alternative,
        FileNotFoundError(f"not a local folder, not in the cache, and {why}"),
    )


def load_error(
    backend: str, model_id: str, offline_alternative: str, exc: BaseException
) -> ModelError:
    """A ModelError for weights that could not be loaded, naming the way out."""
    where = "the local folder" if Path(model_id).expanduser().exists() else "the Hugging Face hub"
    hint = (
        " (HF_HUB_OFFLINE is set and the model is not in the local cache)" if is_offline() else ""
    )
    return ModelError(
        f"cannot load model {model_id!r} for the {backend} backend from {where}{hint}: "
        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
        f"Download it where there is internet, pass a local directory with --model, or use the "
        f"offline backend {offline_alternative}."
    )


class ModelManager:
    """Cache of loaded models keyed by (backend, model id, dtype, device). Thread-safe."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str, str], Any] = {}
        self._lock = threading.Lock()

    def get(
        self,
        backend: str,
        model_id: str,
        loader: Callable[[str, torch.dtype, str], Any],
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any:
        """The model for ``model_id``, loading it with ``loader(model_id, dtype, device)`` once."""
        device = pick_device(device)
        dtype = dtype or pick_dtype(device)
        key = (backend, str(model_id), str(dtype), device)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = loader(model_id, dtype, device)
            return self._cache[key]

    def loaded(self) -> list[tuple[str, str, str, str]]:
        return list(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


MANAGER = ModelManager()


def gpu(fn: F | None = None, *, duration: float | Callable[..., float] | None = None) -> Any:
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces; the function itself elsewhere.

    ``duration`` (seconds, or a callable taking the function's arguments) sizes the GPU lease,
    e.g. per chunk from the VRAM plan's estimate. Use as ``@gpu`` or ``@gpu(duration=...)``.
    """
    if fn is None:
        return lambda f: gpu(f, duration=duration)
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn) if duration is None else spaces.GPU(fn, duration=duration)


def resolve_pipeline_dir(backend: str, model_id: str, offline_alternative: str) -> Path:
    """The local folder of a diffusers pipeline: a directory, a cached hub snapshot, or (online
    only) a fresh download. Raises ModelError naming the offline backend otherwise, at once."""
    path = local_path(model_id)
    if path is not None:
        return path
    p = Path(model_id).expanduser()
    if is_offline() or p.is_absolute() or model_id.startswith((".", "~")) or not hub_reachable():
        raise load_error(backend, model_id, offline_alternative, FileNotFoundError(f"no model {p}"))
    try:
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(model_id))
    except Exception as exc:  # unknown repo, gated repo, network error
        raise load_error(backend, model_id, offline_alternative, exc) from exc


def free_vram_gb(device: str) -> float | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return free / 2**30


def host_ram_gb() -> float | None:
    """Available host RAM (GiB) from /proc/meminfo, None where that cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 2**30
    except OSError:
        pass
    return None
