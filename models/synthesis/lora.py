"""LoRA adapters for the generative painters: the folder ``loci train`` writes and the backends
load with ``--lora PATH``.

A LoRA folder holds::

    pytorch_lora_weights.safetensors   diffusers' LoRA format (``pipe.load_lora_weights`` reads it
                                       too, so the adapter also works outside Loci)
    loci_lora.json                     {"format": "loci-lora", "version": 1, "backend", "network",
                                        "base_model", "base_fingerprint", "rank", "alpha",
                                        "target_modules", "steps", "self_aug_p", "training": {...}}

``base_fingerprint`` hashes the trained network's config (layer sizes, channels): an adapter for
another architecture fails to load with a message instead of loading silently wrong. What the
backend records in world.json is :meth:`LoraInfo.record` (path, weights sha256, rank, alpha, base
model, steps, p).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.manager import ModelError

__all__ = [
    "LORA_META",
    "LORA_WEIGHTS",
    "LoraInfo",
    "apply_lora",
    "lora_backend",
    "network_fingerprint",
    "read_lora",
    "write_lora",
]

LORA_FORMAT = "loci-lora"
LORA_VERSION = 1
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_META = "loci_lora.json"
ADAPTER_NAME = "loci"


@dataclass
class LoraInfo:
    """A validated LoRA folder. ``meta`` is the parsed loci_lora.json; ``sha256`` the weights'."""

    path: Path
    backend: str
    network: str
    base_model: str
    base_fingerprint: str
    rank: int
    alpha: float
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    def record(self, scale: float = 1.0) -> dict[str, Any]:
        """What world.json keeps about the adapter a world was painted with."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "backend": self.backend,
            "base_model": self.base_model,
            "rank": self.rank,
            "alpha": self.alpha,
            "scale": float(scale),
            "steps": self.meta.get("steps"),
            "self_aug_p": self.meta.get("self_aug_p"),
        }


def network_fingerprint(config: dict[str, Any]) -> str:
    """sha256 (16 hex) of a network config without private keys (``_name_or_path`` etc.)."""
    clean = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    blob = json.dumps(clean, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lora_backend(path: str | Path) -> str:
    """The painter a LoRA folder was trained for (validates the folder)."""
    return read_lora(path, None).backend


def read_lora(path: str | Path, backend: str | None) -> LoraInfo:
    """Validate a LoRA folder (for ``backend`` when given); ModelError with the fix otherwise."""
    folder = Path(path).expanduser()
    if folder.is_file() and folder.name in (LORA_META, LORA_WEIGHTS):
        folder = folder.parent
    meta_file, weights = folder / LORA_META, folder / LORA_WEIGHTS
    if not folder.is_dir():
        raise ModelError(f"LoRA folder {folder} does not exist (pass the folder loci train wrote)")
    if not meta_file.is_file() or not weights.is_file():
        raise ModelError(
            f"{folder} is not a Loci LoRA: it needs {LORA_META} and {LORA_WEIGHTS} "
            "(the 'lora' folder of a loci train run, or one of its checkpoints)"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != LORA_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}")
        info = LoraInfo(
            folder.absolute(),
            str(meta["backend"]),
            str(meta["network"]),
            str(meta["base_model"]),
            str(meta["base_fingerprint"]),
            int(meta["rank"]),
            float(meta["alpha"]),
            _sha256(weights),
            meta,
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{meta_file} is damaged or not a Loci LoRA description ({e})") from e
    if int(meta.get("version", 0)) > LORA_VERSION:
        raise ModelError(f"{folder} was written by a newer Loci (LoRA version {meta['version']})")
    if backend is not None and info.backend != backend:
        raise ModelError(
            f"the LoRA in {folder} was trained for the {info.backend} painter, not {backend}; "
            f"use --synthesis {info.backend}"
        )
    return info


def apply_lora(pipe: Any, info: LoraInfo, scale: float = 1.0) -> None:
    """Load the adapter into ``pipe`` (its ``info.network``, e.g. ``unet`` or ``transformer``).

    Checks the base network first: an adapter trained on another architecture is refused.
    """
    network = getattr(pipe, info.network, None)
    if network is None:
        raise ModelError(f"the model has no {info.network} for the LoRA in {info.path}")
    have = network_fingerprint(network.config)
    if have != info.base_fingerprint:
        raise ModelError(
            f"the LoRA in {info.path} was trained on {info.base_model} (network {info.network} "
            f"{info.base_fingerprint}); this model's {info.network} differs ({have}). Use the "
            "base model it was trained on"
        )
    try:
        pipe.load_lora_weights(str(info.path), weight_name=LORA_WEIGHTS, adapter_name=ADAPTER_NAME)
        pipe.set_adapters([ADAPTER_NAME], adapter_weights=[float(scale)])
    except (ValueError, RuntimeError, KeyError, OSError) as e:
        raise ModelError(f"cannot load the LoRA in {info.path}: {e}") from e


def write_lora(
    folder: str | Path,
    pipeline_cls: Any,
    network_name: str,
    network: Any,
    meta: dict[str, Any],
) -> Path:
    """Save the peft adapter injected into ``network`` as a LoRA folder, atomically.

    ``pipeline_cls`` is the diffusers pipeline class whose ``save_lora_weights`` writes the
    weights (so the pipeline's own ``load_lora_weights`` reads them back); ``meta`` gives backend,
    base_model, rank, alpha, target_modules, steps, self_aug_p, training. The folder is built
    next to ``folder`` and renamed into place: a reader never sees half an adapter.
    """
    from peft.utils import get_peft_model_state_dict

    out = Path(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    temp.mkdir()
    try:
        state = get_peft_model_state_dict(network, adapter_name=ADAPTER_NAME)
        config = network.peft_config[ADAPTER_NAME].to_dict()
        config["target_modules"] = sorted(config.get("target_modules") or [])
        pipeline_cls.save_lora_weights(
            str(temp),
            **{
                f"{network_name}_lora_layers": state,
                f"{network_name}_lora_adapter_metadata": config,
            },
            weight_name=LORA_WEIGHTS,
            safe_serialization=True,
        )
        doc = {
            "format": LORA_FORMAT,
            "version": LORA_VERSION,
            "network": network_name,
            "base_fingerprint": network_fingerprint(network.config),
            **meta,
        }
        (temp / LORA_META).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        aside = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        if out.exists():
            os.replace(out, aside)
        os.replace(temp, out)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out
