"""``sd-inpaint`` as a trainable painter (:class:`PainterDenoiser`): the UNet of a Stable
Diffusion inpainting pipeline, conditioned as the ``sd-inpaint`` backend conditions it.

Conditioning, per sample: the inpainting mask at latent size and the VAE latents of the masked
init image (``init * (mask < 0.5)``), made by the pipeline's own ``image_processor``,
``mask_processor`` and ``prepare_mask_latents`` from the inputs :func:`inpaint_inputs` builds at
inference; plus the prompt's text embedding. The *history* is the masked-image latent: the
routed memory the painter sees. Self-augmentation decodes the model's one-step estimate of a
noised history, keeps it on the known pixels (holes stay masked) and re-encodes it.

Noise schedule: DDPM from the pipeline's scheduler config; epsilon or v prediction as the model
was trained.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.manager import ModelError, pick_device
from models.synthesis.sd_inpaint import (
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    check_model_folder,
    check_pipeline,
    inpaint_inputs,
    pipe_work_size,
    resolve_folder,
)
from models.train.denoiser import (
    Cond,
    Encoded,
    PainterBatch,
    TrainError,
    default_weight_dtype,
    drop_text,
    fill_untrusted,
)


def prepare_batch(
    samples: list[dict[str, Any]], size: tuple[int, int], dilate: int
) -> PainterBatch:
    """Stored samples -> a :class:`PainterBatch` at work size (w, h), as the backend prepares a
    frame (module-level so DataLoader workers can run it)."""
    w, h = size
    targets, images, holes, trusts = [], [], [], []
    for s in samples:
        warped = torch.from_numpy(np.asarray(s["warped_rgb"], np.float32))
        valid = torch.from_numpy(np.asarray(s["valid"], bool))
        depth = torch.from_numpy(np.asarray(s["warped_depth"], np.float32))
        _, image, mask = inpaint_inputs(warped, valid, depth, dilate, (w, h))
        trust = torch.from_numpy(np.asarray(s["trust"], bool))
        target = fill_untrusted(torch.from_numpy(np.asarray(s["target"])).float() / 255.0, trust)
        target = target.permute(2, 0, 1)[None]
        target = F.interpolate(target, (h, w), mode="bilinear", antialias=True).clamp(0, 1)
        untrusted = (~trust).float()[None, None]
        # A work pixel is trusted only if no untrusted pixel contributes to it.
        untrusted = F.interpolate(untrusted, (h, w), mode="bilinear", antialias=True)
        targets.append(target)
        images.append(image)
        holes.append(mask)
        trusts.append((untrusted <= 1e-3).float())
    return PainterBatch(torch.cat(targets), torch.cat(images), torch.cat(holes), torch.cat(trusts))


class SDInpaintDenoiser:
    """The trainable ``sd-inpaint`` painter.

    Args:
        model: hub id or local folder (default: the backend's default model).
        device: None picks CUDA when present. weight_dtype: dtype of the frozen weights (None:
            bf16/fp16 on CUDA, fp32 on CPU). prompt: the text the backend paints with.
        resolution: long side to train at (None: the model's native size, as the backend).
        dilate: hole dilation in px (the backend's default).
        sample_size: (width, height) of the stored samples (fixes the work size).
    """

    name = "sd-inpaint"
    network_name = "unet"
    default_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(
        self,
        model: str | Path | None = None,
        device: str | None = None,
        weight_dtype: torch.dtype | None = None,
        prompt: str | None = None,
        resolution: int | None = None,
        dilate: int = 3,
        sample_size: tuple[int, int] = (512, 384),
    ) -> None:
        from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline

        self.model_id = str(model or DEFAULT_MODEL)
        self.device = torch.device(pick_device(device))
        self.weight_dtype = weight_dtype or default_weight_dtype(self.device)
        folder = resolve_folder(self.model_id)
        index = check_model_folder(folder, self.model_id)
        if "XL" in index.get("_class_name", ""):
            raise TrainError(
                f"{self.model_id} is an SDXL pipeline; loci train fine-tunes SD 1.x/2.x "
                "inpainting models (SDXL needs extra conditioning that is not wired yet)"
            )
        try:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                str(folder), dtype=weight_dtype, local_files_only=True,
                safety_checker=None, requires_safety_checker=False,
            )  # fmt: skip
        except Exception as e:  # corrupt weights, version mismatch
            raise ModelError(f"cannot load {self.model_id} for training: {e}") from e
        check_pipeline(pipe, self.model_id)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.requires_grad_(False)
        pipe.vae.eval()
        pipe.text_encoder.eval()
        self.pipeline = pipe
        self.network = pipe.unet
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction = self.scheduler.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction"):
            raise TrainError(f"{self.model_id} predicts {self.prediction!r}; need epsilon or v")
        self.num_timesteps = int(self.scheduler.config.num_train_timesteps)
        self._abar = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.vsf = int(pipe.vae_scale_factor)
        self.sf = float(pipe.vae.config.scaling_factor)
        self.prompt = prompt or DEFAULT_PROMPT
        with torch.no_grad():
            emb, _ = pipe.encode_prompt([self.prompt, ""], self.device, 1, False)
        self._text, self._empty = emb[:1], emb[1:]
        pipe.text_encoder.to("cpu")  # the prompts are encoded: its memory goes to the network
        self.size = pipe_work_size(pipe, *sample_size, resolution)
        self.dilate = int(dilate)
        self._free_latents: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def prepare(self):
        """samples -> PainterBatch (picklable, for DataLoader workers)."""
        return functools.partial(prepare_batch, size=self.size, dilate=self.dilate)

    # -- latents -------------------------------------------------------------------------------
    def _mask_latents(
        self, hole: torch.Tensor, image01: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's own mask and masked-image latents for images in [0, 1]."""
        pipe = self.pipeline
        h, w = image01.shape[-2:]
        image = pipe.image_processor.preprocess(image01, height=h, width=w).to(self.device)
        mask = pipe.mask_processor.preprocess(hole, height=h, width=w).to(self.device)
        masked = image * (mask < 0.5)
        return pipe.prepare_mask_latents(
            mask, masked, len(image), h, w, self.weight_dtype, self.device, generator, False
        )

    def _encode(self, image01: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
            retrieve_latents,
        )

        x = (image01 * 2 - 1).to(self.device, self.weight_dtype)
        return retrieve_latents(self.pipeline.vae.encode(x), generator=generator) * self.sf

    @torch.no_grad()
    def encode(self, batch: PainterBatch, generator: torch.Generator) -> Encoded:
        mask, masked = self._mask_latents(batch.hole, batch.image, generator)
        x0 = self._encode(batch.target, generator).float()
        # A latent cell counts only if every pixel it covers is trusted.
        weight = (F.avg_pool2d(batch.trust, self.vsf) >= 1 - 1e-6).float().to(self.device)
        text = self._text.expand(len(batch), -1, -1)
        cond = {"mask": mask, "masked": masked, "text": text}
        return Encoded(x0, cond, masked.float(), weight)

    # -- the diffusion parameterisation --------------------------------------------------------
    def sample_t(self, n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, generator=generator)
        t = ((lo + (hi - lo) * u) * self.num_timesteps).long()
        return t.clamp(0, self.num_timesteps - 1).to(self.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._abar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        dt = self.weight_dtype
        x = torch.cat([x_t.to(dt), cond["mask"].to(dt), cond["masked"].to(dt)], 1)
        return self.network(x, t, encoder_hidden_states=cond["text"].to(dt)).sample

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "epsilon":
            return noise
        a = self._abar[t].view(-1, 1, 1, 1)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def estimate_x0(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        a = self._abar[t].view(-1, 1, 1, 1)
        pred = pred.float()
        if self.prediction == "epsilon":
            return (x_t - (1 - a).sqrt() * pred) / a.sqrt()
        return a.sqrt() * x_t - (1 - a).sqrt() * pred

    # -- conditioning edits --------------------------------------------------------------------
    @torch.no_grad()
    def free_condition(self, cond: Cond) -> Cond:
        """Nothing known: the mask covers everything and the masked image is empty."""
        n, _, hl, wl = cond["mask"].shape
        key = (hl, wl)
        if key not in self._free_latents:
            h, w = hl * self.vsf, wl * self.vsf
            ones = torch.ones(1, 1, h, w)
            # A fixed generator: the cached latent must not depend on when it is first made
            # (global RNG draws would make a resumed run differ from an uninterrupted one).
            fixed = torch.Generator().manual_seed(0)
            _, empty = self._mask_latents(ones, torch.zeros(1, 3, h, w), fixed)
            self._free_latents[key] = empty
        masked = self._free_latents[key].expand(n, -1, -1, -1)
        return {**cond, "mask": torch.ones_like(cond["mask"]), "masked": masked}

    @torch.no_grad()
    def with_history(
        self, cond: Cond, history_x0: torch.Tensor, batch: PainterBatch, generator: torch.Generator
    ) -> Cond:
        """The conditioning whose known pixels show the decoded ``history_x0`` (holes masked)."""
        vae = self.pipeline.vae
        decoded = vae.decode(history_x0.to(self.weight_dtype) / self.sf).sample
        image01 = ((decoded.float() + 1) / 2).clamp(0, 1).cpu()
        _, masked = self._mask_latents(batch.hole, image01, generator)
        return {**cond, "masked": masked}

    def drop_prompt(self, cond: Cond, drop: torch.Tensor) -> Cond:
        return drop_text(cond, drop, self._empty)

    def lora_meta(self) -> dict[str, Any]:
        """What the LoRA folder records about the base (backend and model)."""
        return {"backend": self.name, "base_model": self.model_id, "prompt": self.prompt}
