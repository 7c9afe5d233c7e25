"""The fine-tuning loop of ``loci train run``: LoRA on a painter's denoiser, with
self-augmented conditioning, loss on trusted pixels only, checkpoints and exact resume.

One step (``grad_accum`` micro-batches of ``batch_size``)::

    batch      samples -> painter inputs, exactly as the backend prepares a frame
    encode     clean target latents x0, conditioning, history latents, trusted-latent weight
    self-aug   with probability p per sample: noise its history to a level in self_aug_t, let the
               model estimate it in one step (no gradient, nothing known), and condition on
               that estimate instead of the clean history, so conditions carry the model's own
               artefacts (p = 0: the plain recipe)
    loss       noise a fresh t in t_range, predict, MSE against the target on trusted latents
    update     AdamW on the LoRA weights (fp32), gradient clipping, LR warm-up (+ cosine)

Every random draw of step s comes from generators seeded by (seed, s), and checkpoints hold the
LoRA weights, optimizer and LR-schedule state; so a run killed and resumed from a checkpoint
gives the loss curve an uninterrupted run gives. Files in the run folder::

    config.json          the resolved settings (a resume must match them)
    metrics.jsonl        one line per step ({"split": "train", ...}) and per evaluation
                         ({"split": "heldout", "loss", "loss_selfaug"})
    checkpoints/step-NNNNNN/{lora/, state.pt}   every checkpoint_every steps (last k kept)
    lora/                the final adapter (``--lora`` loads it)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.synthesis.lora import ADAPTER_NAME, write_lora
from models.train.config import TrainConfig
from models.train.denoiser import PainterBatch, PainterDenoiser, TrainError
from models.train.painters import create_painter_denoiser
from models.train.recipe import (
    batch_loss,
    evaluate_batches,
    generator,
    routed_psnr_ok,
    split_samples,
    step_seed,
)

METRICS = "metrics.jsonl"
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
LORA_DIR = "lora"


def resolve_precision(config: TrainConfig, device: str) -> tuple[torch.dtype, torch.dtype | None]:
    """(dtype of the frozen weights, autocast dtype or None) for ``config.mixed_precision``."""
    mp = config.mixed_precision
    cuda = device.startswith("cuda")
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    if mp == "fp16" and not cuda:
        raise TrainError("mixed_precision fp16 needs a CUDA GPU; use bf16 or no on a CPU")
    dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mp]
    return (dtype or torch.float32), dtype


def build_painter(config: TrainConfig, sample_size: tuple[int, int]) -> PainterDenoiser:
    """The painter ``config`` names, on its device, with frozen weights in the run's precision."""
    from models.manager import pick_device

    device = pick_device(config.device)
    weight_dtype, _ = resolve_precision(config, device)
    return create_painter_denoiser(
        config.painter,
        model=config.model,
        device=device,
        weight_dtype=weight_dtype,
        prompt=config.prompt,
        resolution=config.resolution,
        sample_size=sample_size,
    )


def micro_batch_indices(train_idx: list[int], config: TrainConfig, step: int) -> list[list[int]]:
    """Sample indices of each micro-batch of ``step``: consecutive slices of per-epoch
    permutations seeded by (seed, epoch), a pure function of the step (so a resumed run reads
    the batches an uninterrupted one reads)."""
    n, out = len(train_idx), []
    for micro in range(config.grad_accum):
        start = (step * config.grad_accum + micro) * config.batch_size
        idx = []
        for pos in range(start, start + config.batch_size):
            epoch, k = divmod(pos, n)
            g = generator(config.seed, epoch, 7)
            idx.append(train_idx[int(torch.randperm(n, generator=g)[k])])
        out.append(idx)
    return out


class _StepBatches(torch.utils.data.Dataset):
    """Item k: the prepared micro-batch k counted from step ``start`` (for DataLoader workers)."""

    def __init__(self, dataset: Any, train_idx: list[int], config: TrainConfig,
                 prepare: Callable[[list[dict[str, Any]]], PainterBatch], start: int) -> None:  # fmt: skip
        self.dataset, self.train_idx, self.config = dataset, train_idx, config
        self.prepare, self.start = prepare, start

    def __len__(self) -> int:
        return max(0, self.config.steps - self.start) * self.config.grad_accum

    def __getitem__(self, k: int) -> PainterBatch:
        step, micro = divmod(k, self.config.grad_accum)
        idx = micro_batch_indices(self.train_idx, self.config, self.start + step)[micro]
        return self.prepare([self.dataset[i] for i in idx])


@dataclass
class TrainResult:
    step: int
    lora: Path
    metrics: Path
    evaluation: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)


class Trainer:
    """Fine-tunes ``painter`` on ``dataset`` (a sequence of stored samples with ``infos``).

    Args:
        config: :class:`TrainConfig`.
        painter: a :class:`PainterDenoiser` (see :func:`build_painter`).
        dataset: indexable samples (dicts of arrays, see ``storage.train.shards``) with an
            ``infos`` list (sequence, order, routed_psnr per sample).
        run_dir: where the run's files go.
        dataset_info: what the LoRA records about its data (path, sample count).
    """

    def __init__(
        self,
        config: TrainConfig,
        painter: PainterDenoiser,
        dataset: Any,
        run_dir: str | Path,
        dataset_info: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.painter = painter
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.dataset_info = dict(dataset_info or {})
        infos = list(dataset.infos)
        floor = config.min_routed_psnr

        def good(i: int) -> bool:
            return routed_psnr_ok(infos[i], floor)

        train, held = split_samples(infos, config.holdout)
        self.train_idx = [i for i in train if good(i)]
        self.held_idx = [i for i in held if good(i)][: config.eval_samples]
        self.skipped = len(train) + len(held) - len([i for i in train + held if good(i)])
        if not self.train_idx:
            raise TrainError(
                f"no training samples left ({len(infos)} stored, {self.skipped} below "
                f"min_routed_psnr {floor} dB, {len(held)} held out); lower min_routed_psnr or "
                "holdout, or prepare more footage"
            )
        _, self.amp = resolve_precision(config, str(painter.device))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self._params = self._inject_lora()
        self.optimizer = torch.optim.AdamW(
            self._params, lr=config.lr, weight_decay=config.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

    # -- setup ---------------------------------------------------------------------------------
    def _inject_lora(self) -> list[torch.nn.Parameter]:
        try:
            from peft import LoraConfig
        except ImportError as e:
            raise TrainError("loci train needs peft: pip install -e '.[models]'") from e

        cfg, net = self.config, self.painter.network
        targets = list(cfg.target_modules or self.painter.default_targets)
        torch.manual_seed(cfg.seed)  # the LoRA's initial weights
        lora = LoraConfig(
            r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            init_lora_weights="gaussian", target_modules=targets,
        )  # fmt: skip
        try:
            net.add_adapter(lora, adapter_name=ADAPTER_NAME)
        except ValueError as e:
            raise TrainError(f"cannot put LoRA on modules {targets}: {e}") from e
        params = [p for p in net.parameters() if p.requires_grad]
        for p in params:  # trainable weights in fp32 whatever the frozen weights' precision
            p.data = p.data.float()
        if cfg.gradient_checkpointing:
            net.enable_gradient_checkpointing()
        net.train()
        return params

    def _lr_factor(self, step: int) -> float:
        cfg = self.config
        warm = min(1.0, (step + 1) / (cfg.warmup_steps + 1))
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, step / max(1, cfg.steps))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm

    # -- data ----------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[list[int]]:
        """Sample indices of each micro-batch of ``step`` (see :func:`micro_batch_indices`)."""
        return micro_batch_indices(self.train_idx, self.config, step)

    def batches(self, start: int) -> Iterator[PainterBatch]:
        """Painter batches of every micro-batch from step ``start`` on, in order; prepared by
        ``num_workers`` DataLoader workers ahead of the training step (0: in this process)."""
        steps = _StepBatches(self.dataset, self.train_idx, self.config, self.painter.prepare, start)
        workers = self.config.num_workers
        return iter(torch.utils.data.DataLoader(
            steps, batch_size=None, shuffle=False, num_workers=workers,
            prefetch_factor=2 if workers else None, persistent_workers=False,
        ))  # fmt: skip

    def _batch(self, indices: list[int]) -> PainterBatch:
        return self.painter.prepare([self.dataset[i] for i in indices])

    # -- one step ------------------------------------------------------------------------------
    def train_step(
        self, step: int, batches: Iterator[PainterBatch] | None = None
    ) -> dict[str, Any]:
        """One optimizer step (``step`` counts from 0) on ``batches`` (default: prepared here);
        returns its metrics."""
        cfg = self.config
        t0 = time.perf_counter()
        torch.manual_seed(step_seed(cfg.seed, step, 1))  # LoRA dropout, if any
        if batches is None:
            batches = iter([self._batch(idx) for idx in self.micro_batches(step)])
        losses, stats = [], []
        for micro in range(cfg.grad_accum):
            loss, st = batch_loss(self.painter, cfg, next(batches), step, micro, self.amp)
            scaled = loss / cfg.grad_accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            losses.append(float(loss.detach()))
            stats.append(st)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._params, cfg.max_grad_norm))
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        n = cfg.batch_size * cfg.grad_accum
        return {
            "split": "train",
            "step": step + 1,
            "loss": sum(losses) / len(losses),
            "lr": lr,
            "grad_norm": grad_norm,
            **{k: sum(s[k] for s in stats) / len(stats) for k in stats[0]},
            "seconds": seconds,
            "samples_per_s": n / max(seconds, 1e-9),
        }

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Held-out losses (see :func:`evaluate_batches`); {} without held-out samples."""
        if not self.held_idx:
            return {}
        bs = self.config.batch_size
        batches = (self._batch(self.held_idx[i : i + bs]) for i in range(0, len(self.held_idx), bs))
        self.painter.network.eval()
        try:
            out = evaluate_batches(self.painter, self.config, batches, self.amp)
        finally:
            self.painter.network.train()
        return {**out, "samples": len(self.held_idx)}

    # -- files ---------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS

    def _log(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def _truncate_metrics(self, step: int) -> None:
        """Keep the metric lines up to ``step`` (a killed run may have logged past its last
        checkpoint, or died mid-line)."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if int(rec.get("step", 0)) <= step:
                kept.append(line)
        tmp = self.metrics_path.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    def _lora_meta(self, step: int, evaluation: dict[str, float] | None = None) -> dict[str, Any]:
        cfg = self.config
        return {
            **self.painter.lora_meta(),
            "rank": cfg.rank,
            "alpha": cfg.lora_alpha,
            "target_modules": list(cfg.target_modules or self.painter.default_targets),
            "steps": step,
            "self_aug_p": cfg.self_aug_p,
            "training": {
                "config": cfg.to_dict(),
                "dataset": self.dataset_info,
                "samples": {"train": len(self.train_idx), "heldout": len(self.held_idx)},
                "evaluation": evaluation or {},
            },
        }

    def _write_lora(self, folder: Path, step: int, evaluation: dict | None = None) -> Path:
        p = self.painter
        return write_lora(
            folder, type(p.pipeline), p.network_name, p.network, self._lora_meta(step, evaluation)
        )

    def checkpoints(self) -> list[Path]:
        root = self.run_dir / CHECKPOINTS
        if not root.is_dir():
            return []
        found = [d for d in root.glob("step-*") if (d / "state.pt").is_file()]
        return sorted(found, key=lambda d: int(d.name.split("-")[1]))

    def save_checkpoint(self, step: int) -> Path:
        from peft.utils import get_peft_model_state_dict

        root = self.run_dir / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{step:06d}"
        temp = root / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            self._write_lora(temp / LORA_DIR, step)
            state = {
                "step": step,
                "lora": get_peft_model_state_dict(self.painter.network, adapter_name=ADAPTER_NAME),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "config": self.config.to_dict(),
            }
            torch.save(state, temp / "state.pt")
            if final.exists():
                shutil.rmtree(final)
            os.replace(temp, final)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        for old in self.checkpoints()[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, folder: Path) -> int:
        from peft.utils import set_peft_model_state_dict

        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        set_peft_model_state_dict(self.painter.network, state["lora"], adapter_name=ADAPTER_NAME)
        for prm in self._params:  # set_peft_model_state_dict copies in the stored dtype
            prm.data = prm.data.float()
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return int(state["step"])

    def _prepare_run_dir(self, resume: bool) -> int:
        """Write or check config.json; with ``resume``, load the newest checkpoint. The step
        training starts from."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.run_dir / CONFIG
        mine = self.config.to_dict()
        if cfg_file.is_file():
            if not resume:
                raise TrainError(
                    f"{self.run_dir} already holds a training run; pass --resume to continue it "
                    "or choose another --out"
                )
            saved = json.loads(cfg_file.read_text(encoding="utf-8"))
            changed = self.config.changed_from(saved)
            if changed:
                raise TrainError(
                    f"resume with the settings the run started with: {', '.join(changed)} "
                    "changed (only steps, checkpoint_every, keep_checkpoints, eval_every, "
                    "num_workers and device may change)"
                )
        tmp = cfg_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(mine, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, cfg_file)
        ckpts = self.checkpoints() if resume else []
        start = self.load_checkpoint(ckpts[-1]) if ckpts else 0
        self._truncate_metrics(start)
        return start

    # -- the loop ------------------------------------------------------------------------------
    def run(
        self,
        resume: bool = False,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> TrainResult:
        """Train up to ``config.steps``; ``on_record`` sees every metrics record as it is
        logged (a progress bar; an exception raised there stops the run like a kill would)."""
        cfg = self.config
        start = self._prepare_run_dir(resume)

        def log(record: dict[str, Any]) -> None:
            self._log(record)
            if on_record is not None:
                on_record(record)

        log({"split": "info", "step": start, "resumed": start > 0, "train_samples":
             len(self.train_idx), "heldout_samples": len(self.held_idx),
             "skipped_low_psnr": self.skipped})  # fmt: skip
        if start == 0 and self.held_idx:
            log({"split": "heldout", "step": 0, **self.evaluate()})
        batches = self.batches(start)
        for step in range(start, cfg.steps):
            log(self.train_step(step, batches))
            done = step + 1
            if done % cfg.eval_every == 0 and done < cfg.steps and self.held_idx:
                log({"split": "heldout", "step": done, **self.evaluate()})
            if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                self.save_checkpoint(done)
        evaluation = self.evaluate()
        if evaluation and start < cfg.steps:
            log({"split": "heldout", "step": cfg.steps, **evaluation})
        self.save_checkpoint(cfg.steps)
        lora = self._write_lora(self.run_dir / LORA_DIR, cfg.steps, evaluation)
        return TrainResult(
            cfg.steps, lora, self.metrics_path, evaluation,
            {"train": len(self.train_idx), "heldout": len(self.held_idx), "skipped": self.skipped},
        )  # fmt: skip
