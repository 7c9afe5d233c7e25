"""The per-step mathematics of ``loci train``, over any :class:`PainterDenoiser`.

* :func:`batch_loss`: self-augmented conditioning, then the denoising loss on trusted latents;
* :func:`self_augment`: the history of chosen samples replaced by the model's own one-step
  estimate of it, noised (no gradient flows through it);
* :func:`evaluate_batches`: held-out loss at fixed noise levels, with the clean and with a
  self-augmented history;
* seeds: every draw of step s comes from generators seeded by (seed, s, stream), so a resumed
  run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from models.train.config import TrainConfig
from models.train.denoiser import Cond, Encoded, PainterBatch, PainterDenoiser, scatter, select

EVAL_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # noise levels (fraction of the schedule) evaluated
_MASK64 = (1 << 64) - 1


def step_seed(seed: int, step: int, stream: int) -> int:
    """A seed for draw ``stream`` of step ``step`` (splitmix64 finaliser: nearby inputs spread)."""
    x = seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on ``device`` when ``dtype`` is given; a no-op context otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def split_samples(infos: Sequence[dict[str, Any]], holdout: float) -> tuple[list[int], list[int]]:
    """(train, held-out) sample indices: the last ``holdout`` fraction of each sequence's
    targets is held out (a temporal split: neighbouring frames would leak across a random one).
    A sequence with a single sample stays in training."""
    by_seq: dict[str, list[int]] = {}
    for i, info in enumerate(infos):
        by_seq.setdefault(str(info.get("sequence", "")), []).append(i)
    train, held = [], []
    for idx in by_seq.values():
        idx.sort(key=lambda i: int(infos[i].get("order", i)))
        n = 0
        if holdout > 0 and len(idx) >= 2:
            n = min(len(idx) - 1, max(1, round(holdout * len(idx))))
        train += idx[: len(idx) - n]
        held += idx[len(idx) - n :]
    return sorted(train), sorted(held)


def routed_psnr_ok(info: dict[str, Any], floor: float) -> bool:
    """Whether a sample's routed condition agrees with its target well enough to learn from."""
    v = info.get("routed_psnr")
    return v is None or not math.isfinite(float(v)) or float(v) >= floor


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over latents with weight > 0 (weight broadcast over channels)."""
    se = (pred.float() - target.float()) ** 2
    w = weight.float().expand_as(se)
    return (se * w).sum() / w.sum().clamp(min=1.0)


def self_augment(
    painter: PainterDenoiser,
    enc: Encoded,
    batch: PainterBatch,
    flags: torch.Tensor,
    t_aug: torch.Tensor,
    gen: torch.Generator,
    amp: torch.dtype | None = None,
) -> Cond:
    """``enc.cond`` with the history of the samples ``flags`` (B,) bool replaced by the model's
    one-step estimate of it noised to levels ``t_aug`` (B,): the model sees nothing known while
    it estimates, so the estimate carries its own artefacts. No gradient flows through it."""
    if not bool(flags.any()):
        return enc.cond
    p = painter
    idx = flags.nonzero()[:, 0]
    on_dev = idx.to(p.device)
    with torch.no_grad(), autocast(p.device, amp):
        sub = select(enc.cond, on_dev)
        history = enc.history[on_dev]
        noise = torch.randn(history.shape, generator=gen).to(p.device)
        t = t_aug[idx].to(p.device)
        noisy = p.add_noise(history, noise, t)
        pred = p.predict(noisy, t, p.free_condition(sub))
        estimate = p.estimate_x0(noisy, t, pred).float()
        sub = p.with_history(sub, estimate, batch.select(idx), gen)
    return scatter(enc.cond, on_dev, sub)


def batch_loss(
    painter: PainterDenoiser,
    config: TrainConfig,
    batch: PainterBatch,
    step: int,
    micro: int,
    amp: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one micro-batch (with gradient) and its statistics.

    Three random streams: the main draws (t, noise, prompt drop) do not depend on p, so p = 0
    and p = 0.7 runs with one seed see the same timesteps and noise (a controlled ablation).
    """
    cfg, p = config, painter
    g_main = generator(cfg.seed, step, 10 + micro)
    g_aug = generator(cfg.seed, step, 20 + micro)
    g_vae = generator(cfg.seed, step, 30 + micro)
    B = len(batch)
    enc = p.encode(batch, g_vae)
    flags = torch.rand(B, generator=g_aug) < cfg.self_aug_p
    t_aug = p.sample_t(B, *cfg.self_aug_t, g_aug).cpu()
    cond = self_augment(p, enc, batch, flags, t_aug, g_aug, amp)
    cond = p.drop_prompt(cond, torch.rand(B, generator=g_main) < cfg.prompt_dropout)
    t = p.sample_t(B, *cfg.t_range, g_main)
    noise = torch.randn(enc.x0.shape, generator=g_main).to(p.device)
    with autocast(p.device, amp):
        pred = p.predict(p.add_noise(enc.x0, noise, t), t, cond)
    loss = masked_mse(pred, p.target(enc.x0, noise, t), enc.weight)
    trusted = float(enc.weight.float().mean())
    return loss, {"self_aug": float(flags.float().mean()), "t": float(t.float().mean()),
                  "trusted": trusted}  # fmt: skip


@torch.no_grad()
def evaluate_batches(
    painter: PainterDenoiser,
    config: TrainConfig,
    batches: Iterable[PainterBatch],
    amp: torch.dtype | None = None,
) -> dict[str, float]:
    """Held-out loss at :data:`EVAL_LEVELS` with fixed noise (the same every call): ``loss``
    with the clean history, ``loss_selfaug`` with a self-augmented one (p = 1, the middle of
    self_aug_t), which measures how well the painter copes with its own artefacts."""
    p = painter
    mid = sum(config.self_aug_t) / 2
    total, total_aug, count = 0.0, 0.0, 0
    for b, batch in enumerate(batches):
        g = generator(config.seed, b, 99)
        enc = p.encode(batch, g)
        B = len(batch)
        t_aug = p.sample_t(B, mid, mid + 1e-6, g).cpu()
        aug = self_augment(p, enc, batch, torch.ones(B, dtype=torch.bool), t_aug, g, amp)
        for level in EVAL_LEVELS:
            t = p.sample_t(B, level, level + 1e-6, g)
            noise = torch.randn(enc.x0.shape, generator=g).to(p.device)
            noisy = p.add_noise(enc.x0, noise, t)
            target = p.target(enc.x0, noise, t)
            with autocast(p.device, amp):
                clean = masked_mse(p.predict(noisy, t, enc.cond), target, enc.weight)
                degraded = masked_mse(p.predict(noisy, t, aug), target, enc.weight)
            total += float(clean) * B
            total_aug += float(degraded) * B
            count += B
    if not count:
        return {}
    return {"loss": total / count, "loss_selfaug": total_aug / count}
