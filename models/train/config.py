"""``loci train`` settings: a dataclass, read from TOML or JSON, overridden from the command line.

A config file holds the fields below at top level or under a ``[train]`` table::

    # train.toml
    [train]
    painter = "sd-inpaint"
    model = "stabilityai/stable-diffusion-2-inpainting"
    steps = 2000
    batch_size = 4
    self_aug_p = 0.7

Command-line overrides (``--set key=value``) are parsed as TOML values (``lr=2e-4``,
``target_modules=["to_q","to_v"]``), falling back to a plain string. Unknown keys are refused
with the list of known ones, so a typo never trains with a silent default.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from models.train.denoiser import TrainError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Settings that may change when a run is resumed (they do not change the loss curve).
RESUMABLE_CHANGES = frozenset(
    {"steps", "checkpoint_every", "keep_checkpoints", "eval_every", "num_workers", "device"}
)


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run (see README "Fine-tuning").

    painter / model: the synthesis backend whose network is adapted, and its weights (None:
    the backend's default). LoRA: rank, alpha (None: = rank), dropout, target_modules (None:
    the painter's attention projections). Optimisation: steps, batch_size, grad_accum, lr,
    weight_decay, warmup_steps, lr_schedule ("constant" | "cosine"), max_grad_norm.
    Self-augmented conditioning: with probability self_aug_p a sample's history is replaced by
    the model's own one-step estimate of it, noised to a level drawn from self_aug_t (fractions
    of the schedule); 0 is the plain recipe. t_range: training noise levels. prompt (None: the
    backend's), prompt_dropout (empty prompt, so guidance keeps working). Data: holdout
    (fraction of each sequence's last targets kept out), eval_samples, min_routed_psnr (skip
    samples whose routed condition disagrees with the target: bad poses or depth).
    Machine: mixed_precision ("auto" | "no" | "bf16" | "fp16"; auto = bf16/fp16 on CUDA, fp32
    on CPU), gradient_checkpointing, resolution (None: the painter's native size), device,
    num_workers. Bookkeeping: checkpoint_every, keep_checkpoints, eval_every, seed.
    """

    painter: str = "sd-inpaint"
    model: str | None = None
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    lr_schedule: str = "constant"
    max_grad_norm: float = 1.0
    rank: int = 16
    alpha: float | None = None
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    self_aug_p: float = 0.7
    self_aug_t: list[float] = field(default_factory=lambda: [0.1, 0.6])
    t_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    prompt: str | None = None
    prompt_dropout: float = 0.1
    holdout: float = 0.1
    eval_samples: int = 16
    min_routed_psnr: float = 14.0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = True
    resolution: int | None = None
    device: str | None = None
    num_workers: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    def _coerce(self) -> None:
        """Types as declared: ints where ints belong (2.0 is fine, 2.5 is not), floats from
        ints, lists of two numbers for ranges; a wrong type is a TrainError, not a crash."""
        for name, kind in _TYPES.items():
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            ok = True
            if kind is bool:
                ok = isinstance(v, bool)
            elif kind is int:
                ok = (
                    isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
                )
                v = int(v) if ok else v
            elif kind is float:
                ok = isinstance(v, int | float) and not isinstance(v, bool)
                v = float(v) if ok else v
            elif kind is str:
                ok = isinstance(v, str)
            elif kind == "range":
                ok = isinstance(v, list | tuple) and all(
                    isinstance(x, int | float) and not isinstance(x, bool) for x in v
                )
                v = [float(x) for x in v] if ok else v
            elif kind == "strings":
                ok = isinstance(v, list | tuple) and all(isinstance(x, str) for x in v)
                v = list(v) if ok else v
            if not ok:
                what = {"range": "a list [lo, hi]", "strings": "a list of names"}.get(
                    kind, getattr(kind, "__name__", str(kind))
                )
                raise TrainError(f"bad training setting: {name} must be {what}, got {v!r}")
            setattr(self, name, v)

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise TrainError(f"bad training setting: {what}")

        need(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        need(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum >= 1")
        need(self.lr > 0 and self.weight_decay >= 0, "lr > 0 and weight_decay >= 0")
        need(self.warmup_steps >= 0, "warmup_steps >= 0")
        need(self.lr_schedule in ("constant", "cosine"), "lr_schedule is constant or cosine")
        need(self.rank >= 1, f"rank must be at least 1, got {self.rank}")
        need(self.alpha is None or self.alpha > 0, "alpha must be positive")
        need(0.0 <= self.lora_dropout < 1.0, "lora_dropout in [0, 1)")
        need(0.0 <= self.self_aug_p <= 1.0, f"self_aug_p must be in [0, 1], got {self.self_aug_p}")
        for name in ("self_aug_t", "t_range"):
            lo_hi = getattr(self, name)
            need(
                len(lo_hi) == 2 and 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0,
                f"{name} must be [lo, hi] with 0 <= lo < hi <= 1, got {lo_hi}",
            )
        need(0.0 <= self.prompt_dropout < 1.0, "prompt_dropout in [0, 1)")
        need(0.0 <= self.holdout < 1.0, f"holdout must be in [0, 1), got {self.holdout}")
        need(self.eval_samples >= 0, "eval_samples >= 0")
        need(
            self.mixed_precision in ("auto", "no", "bf16", "fp16"),
            f"mixed_precision is auto, no, bf16 or fp16, got {self.mixed_precision!r}",
        )
        need(self.checkpoint_every >= 1 and self.eval_every >= 1, "checkpoint/eval every >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints >= 1")
        need(self.num_workers >= 0, "num_workers >= 0")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed_from(self, other: dict[str, Any]) -> list[str]:
        """Fields that differ from a saved config and would change the loss curve."""
        mine = json.loads(json.dumps(self.to_dict()))
        return sorted(
            k for k, v in mine.items() if k not in RESUMABLE_CHANGES and other.get(k) != v
        )


def known_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(known_keys()))
    if unknown:
        raise TrainError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known_keys())}"
        )


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value), the value read as TOML (else kept as a string)."""
    if "=" not in text:
        raise TrainError(f"--set expects key=value, got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the file at ``path`` (.toml or .json), then ``overrides`` (None values are
    ignored, so unset CLI flags keep the file's value)."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            doc = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
        except FileNotFoundError as e:
            raise TrainError(f"config file {p} not found") from e
        except (OSError, ValueError) as e:  # TOMLDecodeError and JSONDecodeError are ValueErrors
            raise TrainError(f"config file {p} cannot be read: {e}") from e
        if not isinstance(doc, dict):
            raise TrainError(f"config file {p} must hold a table of settings")
        doc = doc.get("train", doc)
        _check_keys(doc, str(p))
        values.update(doc)
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(extra, "command line")
    values.update(extra)
    try:
        return TrainConfig(**values)
    except TypeError as e:
        raise TrainError(f"bad training settings: {e}") from e


_TYPES: dict[str, Any] = {
    **{k: int for k in ("steps", "batch_size", "grad_accum", "warmup_steps", "rank",
                        "eval_samples", "num_workers", "checkpoint_every", "keep_checkpoints",
                        "eval_every", "seed", "resolution")},
    **{k: float for k in ("lr", "weight_decay", "max_grad_norm", "alpha", "lora_dropout",
                          "self_aug_p", "prompt_dropout", "holdout", "min_routed_psnr")},
    **{k: str for k in ("painter", "model", "lr_schedule", "prompt", "mixed_precision",
                        "device")},
    "gradient_checkpointing": bool,
    "self_aug_t": "range",
    "t_range": "range",
    "target_modules": "strings",
}  # fmt: skip
_OPTIONAL = frozenset({"model", "alpha", "target_modules", "prompt", "resolution", "device"})
