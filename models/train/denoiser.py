"""The painter-denoiser protocol: what ``loci train`` needs from a generative painter.

The trainer owns the recipe (timesteps, noise, self-augmented history, masked loss, LoRA,
precision, checkpoints); a painter exposes its network and a few primitives over *latents*:

* ``prepare`` turns stored samples into a :class:`PainterBatch` at the painter's working size,
  with the very code its synthesis backend runs at inference (pre-fill, dilated hole mask);
* ``encode`` (no gradient) gives clean target latents ``x0``, the conditioning, the history
  latents (the routed memory the painter is conditioned on) and a per-latent loss weight (only
  trusted target pixels count);
* ``add_noise`` / ``predict`` / ``target`` / ``estimate_x0`` are the diffusion (or flow)
  parameterisation;
* ``free_condition`` conditions on nothing known (the model paints everything) and
  ``with_history`` swaps the history in a conditioning for another one (self-augmentation).

Painters register a factory by name in ``models.train.painters`` (``sd-inpaint``), heavy
imports inside the factory, like synthesis backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

Cond = dict[str, torch.Tensor]  # every tensor has the batch dimension first


class TrainError(ValueError):
    """Training cannot run as asked (bad config, data or model); the message says what to do."""


@dataclass
class PainterBatch:
    """Samples at the painter's working size (h, w).

    target: (B, 3, h, w) float [0, 1]; image: (B, 3, h, w) the painter's init image (warped
    memory, holes pre-filled); hole: (B, 1, h, w) float {0, 1}, 1 = the painter generates;
    trust: (B, 1, h, w) float {0, 1}, target pixels the loss may use. Video painters hold
    clips, (B, C, N, h, w). extra: per-sample lists a painter needs besides (its references).
    """

    target: torch.Tensor
    image: torch.Tensor
    hole: torch.Tensor
    trust: torch.Tensor
    extra: dict[str, list[Any]] = field(default_factory=dict)  # per-sample extras (references)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def select(self, idx: torch.Tensor) -> PainterBatch:
        rows = [int(i) for i in idx]
        extra = {k: [v[i] for i in rows] for k, v in self.extra.items()}
        return PainterBatch(
            self.target[idx], self.image[idx], self.hole[idx], self.trust[idx], extra
        )


@dataclass
class Encoded:
    """x0: (B, ...) clean target latents; cond: the conditioning; history: (B, ...) latents of
    the routed history the conditioning carries; weight: broadcastable to x0, per-latent loss
    weight in [0, 1] (0 where the target is not trusted)."""

    x0: torch.Tensor
    cond: Cond
    history: torch.Tensor
    weight: torch.Tensor


def default_weight_dtype(device: torch.device) -> torch.dtype:
    """Frozen weights' dtype: bf16 on CUDA (fp16 without bf16), fp32 on a CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def fill_untrusted(target: torch.Tensor, trust: torch.Tensor) -> torch.Tensor:
    """``target`` (H, W, 3) with untrusted pixels replaced by a fill from the trusted ones: the
    VAE's receptive field would otherwise carry them into trusted latents."""
    from models.geometry.fill import push_pull

    if bool(trust.all()):
        return target
    fill = push_pull(target, trust) if bool(trust.any()) else torch.full_like(target, 0.5)
    return torch.where(trust[..., None], target, fill)


def drop_text(cond: Cond, drop: torch.Tensor, empty: torch.Tensor) -> Cond:
    """``cond`` with its ``text`` embedding replaced by ``empty`` where ``drop`` (B,) is True."""
    if not bool(drop.any()):
        return cond
    text = cond["text"]
    keep = drop.view(-1, 1, 1).to(text.device)
    return {**cond, "text": torch.where(keep, empty.expand_as(text).to(text.dtype), text)}


def select(cond: Cond, idx: torch.Tensor) -> Cond:
    return {k: v[idx] for k, v in cond.items()}


def scatter(cond: Cond, idx: torch.Tensor, part: Cond) -> Cond:
    """``cond`` with the rows ``idx`` replaced by ``part`` (new tensors; inputs untouched)."""
    out = {}
    for k, v in cond.items():
        v = v.clone()
        v[idx] = part[k].to(v.dtype)
        out[k] = v
    return out


@runtime_checkable
class PainterDenoiser(Protocol):
    """A generative painter as ``loci train`` sees it (see the module docstring)."""

    name: str  # the synthesis backend it trains (the LoRA loads there)
    model_id: str
    network_name: str  # attribute of the diffusers pipeline holding ``network`` ("unet", ...)
    network: torch.nn.Module  # what LoRA adapts
    pipeline: Any  # the loaded diffusers pipeline (for save_lora_weights and inference)
    default_targets: tuple[str, ...]  # module names LoRA adapts by default
    device: torch.device
    weight_dtype: torch.dtype  # frozen weights' dtype

    def prepare(self, samples: list[dict[str, Any]]) -> PainterBatch: ...

    def encode(self, batch: PainterBatch, generator: torch.Generator) -> Encoded: ...

    def sample_t(self, n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
        """n noise levels, uniform over the fraction [lo, hi] of the schedule."""
        ...

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor: ...

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def estimate_x0(
        self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor
    ) -> torch.Tensor: ...

    def free_condition(self, cond: Cond) -> Cond: ...

    def with_history(
        self, cond: Cond, history_x0: torch.Tensor, batch: PainterBatch, generator: torch.Generator
    ) -> Cond: ...

    def drop_prompt(self, cond: Cond, drop: torch.Tensor) -> Cond:
        """The conditioning with the text prompt emptied where ``drop`` (B,) is True."""
        ...
