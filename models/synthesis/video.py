"""``video``: chunks of frames painted by a diffusers image-to-video model, camera-controlled
without training by warped-latent guidance.

Per chunk of ``chunk_size`` target cameras (the pipeline hands them over together):

1. every request's warped memory image is pre-filled (``models.geometry.fill.inpaint_rgb``, background
   first) and encoded with the pipeline's VAE into ``z_mem`` (one latent per frame);
2. each ``valid`` mask is reduced to the latent grid; a latent cell counts as covered only if
   *all* its pixels are covered (max-pool of the uncovered mask), so no unseen pixel is forced;
3. the video model denoises the chunk, conditioned on the first target's pre-filled warp; after
   every scheduler step (``callback_on_step_end``, so diffusers' own loop runs unchanged) the
   covered cells are replaced by ``z_mem`` noised to the scheduler's current level with one
   fixed noise per chunk; after the last step they hold the clean ``z_mem``. The trajectory and
   the memory are thereby imposed, and the model paints the rest with temporal coherence;
4. after decoding, covered pixels are pasted back exactly (``where(valid, warped, decoded)``)
   with a feathered blend on the painted side of the border only.

Why the conditioning image is the first target's pre-filled warp and not the latest memory
frame: image-to-video models reproduce their conditioning image as frame 0, and frame 0 of the
chunk is the first *target* camera. Conditioning on the latest memory frame (the previous
camera) would pull frame 0 back to the previous view, against the guidance. The warp carries
the memory's content into the right pose, and the backend only ever sees the requests.

Families are picked from ``model_index.json``'s ``_class_name``. Stable Video Diffusion is
implemented; a Wan-I2V folder is pointed to the ``wan-i2v`` backend (which models Wan's 4x
temporal compression); CogVideoX-I2V folders are recognised and validated, then refused with a
clear message (their latents are temporally compressed 4x too). diffusers is imported only when the backend is built.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.geometry.fill import fill_depth, inpaint_rgb
from models.manager import (
    MANAGER,
    ModelError,
    free_vram_gb,
    gpu,
    load_error,
    local_path,
    pick_device,
)
from models.synthesis.base import SynthesisRequest, SynthesisResult, register_synthesis_backend

OFFLINE_ALTERNATIVE = "--synthesis reproject"


@dataclass(frozen=True)
class Family:
    """An image-to-video pipeline class the backend knows: default hub id, VRAM it needs
    resident in bf16 (below that, model CPU offload is used), whether it takes a prompt."""

    name: str
    default_model: str
    resident_vram_gb: float
    prompt: bool
    supported: bool
    tokenizer: bool


FAMILIES: dict[str, Family] = {
    "StableVideoDiffusionPipeline": Family(
        "svd", "stabilityai/stable-video-diffusion-img2vid-xt", 16.0, False, True, False
    ),
    "CogVideoXImageToVideoPipeline": Family(
        "cogvideox", "THUDM/CogVideoX-5b-I2V", 28.0, True, False, True
    ),
    "WanImageToVideoPipeline": Family(
        "wan", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 40.0, True, False, True
    ),
}
DEFAULT_MODEL = FAMILIES["StableVideoDiffusionPipeline"].default_model


# ---------------------------------------------------------------------------------------------
# Finding and validating the model folder (cheap: JSON only, before any weight is read)


def resolve_model_dir(model: str) -> Path:
    """The local folder of ``model`` (a directory, or a hub id in the cache, downloaded when
    online). Raises ModelError naming the offline backend when it cannot be had."""
    path = local_path(model)
    if path is not None:
        return path
    p = Path(model).expanduser()
    if p.is_absolute() or model.startswith((".", "~")):
        raise load_error("video", model, OFFLINE_ALTERNATIVE, FileNotFoundError(f"no folder {p}"))
    try:
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(model))
    except Exception as exc:  # offline, unknown repo, gated repo, network error
        raise load_error("video", model, OFFLINE_ALTERNATIVE, exc) from exc


def inspect_model(path: Path, model: str) -> Family:
    """Check that ``path`` holds a complete image-to-video pipeline and return its family.

    Checked: model_index.json present; its class is one of :data:`FAMILIES`; every component
    folder it names exists; a tokenizer folder is non-empty where the family has one; SVD's
    image encoder takes 224 px (the pipeline always resizes the conditioning image to 224).
    """
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise load_error(
            "video", model, OFFLINE_ALTERNATIVE, FileNotFoundError("no model_index.json")
        )
    index = json.loads(index_file.read_text())
    cls = index.get("_class_name", "?")
    if cls not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise ModelError(
            f"{model!r} is a {cls}, not an image-to-video model; the video backend takes one of "
            f"{known} (e.g. --model {DEFAULT_MODEL}), or use {OFFLINE_ALTERNATIVE}"
        )
    family = FAMILIES[cls]
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if not (path / name).is_dir():
            raise ModelError(f"{model!r} is missing its {name}/ folder (an incomplete download?)")
    if family.tokenizer:
        tok = path / "tokenizer"
        if not tok.is_dir() or not any(tok.iterdir()):
            raise ModelError(f"{model!r} has no tokenizer files in tokenizer/")
    if family.name == "svd":
        cfg = json.loads((path / "image_encoder" / "config.json").read_text())
        size = cfg.get("image_size", cfg.get("vision_config", {}).get("image_size"))
        if size != 224:
            raise ModelError(
                f"{model!r}: the image encoder takes {size} px, but Stable Video Diffusion "
                "always feeds it 224 px images; the folder does not hold a working SVD model"
            )
    if family.name == "wan":
        raise ModelError(
            f"{model!r} is a {cls}: Wan image-to-video models run through their own backend "
            f"(Wan's latents pack 4 frames each): use --synthesis wan-i2v --model {model}"
        )
    if not family.supported:
        raise ModelError(
            f"{model!r} is a {cls}: recognised, but the video backend implements warped-latent "
            f"guidance for Stable Video Diffusion only so far; use --model {DEFAULT_MODEL}, "
            f"--synthesis sd-inpaint, or {OFFLINE_ALTERNATIVE}"
        )
    return family


# ---------------------------------------------------------------------------------------------
# Guidance pieces (pure tensor code, unit-tested on their own)


def latent_cover(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(F, h, w) bool: latent cells whose pixels are ALL covered.

    valid: (F, H, W) bool at any resolution; size: (h, w) of the latent grid. Adaptive max
    pooling of the uncovered mask maps each cell to its whole (rounded-out) pixel window, so a
    single uncovered pixel anywhere under a cell releases it to the model.
    """
    uncovered = (~valid).float()[:, None]
    return F.adaptive_max_pool2d(uncovered, size)[:, 0] == 0


def noised_to_current_level(scheduler: Any, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``z`` noised to the level the scheduler's latents are at right after a ``step``.

    Sigma-parameterised schedulers (EulerDiscrete: x = z + sigma * n; flow matching:
    x = (1 - sigma) z + sigma n) keep ``sigmas`` and a ``step_index`` that ``step`` has already
    advanced to the next level, so this is the level of the latents the callback receives.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    idx = getattr(scheduler, "step_index", None)
    if sigmas is None or idx is None:
        raise ModelError(f"warped-latent guidance does not support {type(scheduler).__name__}")
    s = sigmas[min(int(idx), len(sigmas) - 1)].to(device=z.device, dtype=torch.float32)
    if "FlowMatch" in type(scheduler).__name__:
        return (1 - s) * z + s * noise
    return z + s * noise


class WarpedLatentGuidance:
    """``callback_on_step_end`` that pins covered latent cells to the (noised) memory latents.

    z_mem: (B, F, C, h, w) float32 clean memory latents (the pipeline's latent layout);
    cover: broadcastable bool mask of covered cells, e.g. (B, F, 1, h, w);
    noise: like z_mem, fixed for the chunk; steps: number of denoising steps.
    """

    def __init__(self, z_mem: torch.Tensor, cover: torch.Tensor, noise: torch.Tensor, steps: int):
        self.z_mem, self.cover, self.noise, self.steps = z_mem, cover, noise, steps
        self.calls = 0

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        latents = kwargs["latents"]
        self.calls += 1
        if not bool(self.cover.any()):
            return kwargs  # nothing seen: the unguided trajectory, bit for bit
        z = self.z_mem.to(latents.device)
        if i >= self.steps - 1:
            target = z  # the final latents hold the clean memory
        else:
            target = noised_to_current_level(pipe.scheduler, z, self.noise.to(latents.device))
        cover = self.cover.to(latents.device)
        kwargs["latents"] = torch.where(cover, target.to(latents.dtype), latents)
        return kwargs


def feathered_paste(
    decoded: torch.Tensor, warped: torch.Tensor, filled: torch.Tensor, valid: torch.Tensor, px: int
) -> torch.Tensor:
    """(H, W, 3): warped pixels where valid (exactly); decoded elsewhere, blended towards the
    pre-filled continuation of memory over the first ``px`` painted pixels from the border, so
    the seam shows no step while no covered pixel is touched."""
    if px > 0 and bool(valid.any()) and not bool(valid.all()):
        dist = cv2.distanceTransform((~valid).numpy().astype(np.uint8), cv2.DIST_L2, 3)
        a = torch.from_numpy(np.clip(dist / px, 0.0, 1.0)).to(decoded.dtype)[..., None]
        decoded = a * decoded + (1 - a) * filled
    return torch.where(valid[..., None], warped, decoded.clamp(0, 1))


# ---------------------------------------------------------------------------------------------


@dataclass
class ChunkOutput:
    """frames: (F, H, W, 3) float32 [0, 1] decoded at the request size (before paste-back);
    latents: (1, F, C, h, w) final latents; z_mem: same shape; cover: (F, h, w) bool."""

    frames: torch.Tensor
    latents: torch.Tensor
    z_mem: torch.Tensor
    cover: torch.Tensor


class VideoSynthesis:
    """Image-to-video synthesis of a chunk of frames with warped-latent guidance.

    Args:
        model: hub id or local diffusers folder (default SVD-XT).
        chunk_size: frames per chunk (8 suits SVD on a 24 GB GPU; tests use 2-3).
        steps: denoising steps; guidance: max classifier-free guidance (1 disables it).
        device / dtype: default CUDA bf16 when there is a GPU, else CPU fp32.
        run_width: width the model runs at (height keeps the aspect); both rounded to the
            model's size factor. None: the request width.
        offload: model CPU offload; None decides from free VRAM.
        prompt: for families that take one (SVD does not; it is then ignored).
        feather: painted-side blend width in pixels. fps / motion_bucket_id /
        noise_aug_strength: SVD micro-conditioning.
    """

    name = "video"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        chunk_size: int = 8,
        steps: int = 25,
        guidance: float = 3.0,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        run_width: int | None = None,
        offload: bool | None = None,
        prompt: str | None = None,
        feather: int = 4,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
    ) -> None:
        if int(chunk_size) < 1 or int(steps) < 1:
            raise ModelError("chunk_size and steps must be at least 1")
        self.model_id = str(model)
        self.chunk_size, self.steps, self.guidance = int(chunk_size), int(steps), float(guidance)
        self.run_width, self.prompt, self.feather = run_width, prompt, int(feather)
        self.fps, self.motion_bucket_id = int(fps), int(motion_bucket_id)
        self.noise_aug_strength = float(noise_aug_strength)
        self.device = pick_device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype or (torch.bfloat16 if self.device == "cuda" else torch.float32)
        # Validate before any weight is read, then load once per (model, dtype, device).
        path = resolve_model_dir(self.model_id)
        self.family = inspect_model(path, self.model_id)
        if offload is None:
            free = free_vram_gb(self.device)
            offload = free is not None and free < self.family.resident_vram_gb
        self.offload = bool(offload)
        key = f"{path.resolve()}{'+offload' if self.offload else ''}"
        self.pipe = MANAGER.get(
            "video",
            key,
            lambda _id, dt, dev: self._load(path, dt, dev),
            device=self.device,
            dtype=self.dtype,
        )

    def _load(self, path: Path, dtype: torch.dtype, device: str) -> Any:
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(str(path), dtype=dtype)
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            raise load_error("video", self.model_id, OFFLINE_ALTERNATIVE, exc) from exc
        tok = getattr(pipe, "tokenizer", None)
        if self.family.tokenizer and (tok is None or len(tok) == 0):
            raise ModelError(f"{self.model_id!r}: its tokenizer loaded empty (files missing)")
        if self.offload and device == "cuda":
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -----------------------------------------------------------------------------------------
    def run_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the model runs at: multiples of VAE factor x UNet downsampling."""
        pipe = self.pipe
        factor = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.down_block_types) - 1)
        w = self.run_width or width
        h = height * w / width

        def snap(v: float) -> int:
            return max(factor, int(round(v / factor)) * factor)

        return snap(w), snap(h)

    def pipeline_kwargs(self, cond: np.ndarray, frames: int, seed: int) -> dict[str, Any]:
        """The image-to-video call for a chunk, without guidance: cond (h, w, 3) uint8 at the
        run size. Also what the tests call for the unguided reference."""
        from PIL import Image

        h, w = cond.shape[:2]
        return dict(
            image=Image.fromarray(cond),
            height=h,
            width=w,
            num_frames=frames,
            num_inference_steps=self.steps,
            min_guidance_scale=1.0,
            max_guidance_scale=self.guidance,
            fps=self.fps,
            motion_bucket_id=self.motion_bucket_id,
            noise_aug_strength=self.noise_aug_strength,
            decode_chunk_size=self.chunk_size,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pt",
        )

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(F, h, w, 3) float [0, 1] -> (1, F, C, h/8, w/8) scaled latents (the VAE's mode:
        deterministic), in SVD's (batch, frames, channels, ...) layout, float32."""
        vae = self.pipe.vae
        # _execution_device, not vae.device: under CPU offload the VAE sits on the CPU until
        # its hook moves it, and the input must already be where it will run.
        x = (rgb.permute(0, 3, 1, 2) * 2 - 1).to(self.pipe._execution_device, vae.dtype)
        z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
        return z.float()[None].cpu()

    @gpu
    def run_chunk(self, filled: torch.Tensor, valid: torch.Tensor, seed: int) -> ChunkOutput:
        """Generate a chunk with warped-latent guidance.

        filled: (F, H, W, 3) float32 [0, 1] pre-filled warped memory; valid: (F, H, W) bool.
        """
        with torch.no_grad():
            return self._run_chunk(filled, valid, seed)

    def _run_chunk(self, filled: torch.Tensor, valid: torch.Tensor, seed: int) -> ChunkOutput:
        n, H, W = valid.shape
        rw, rh = self.run_size(W, H)
        small = F.interpolate(filled.permute(0, 3, 1, 2), size=(rh, rw), mode="area")
        small = small.permute(0, 2, 3, 1).clamp(0, 1)
        z_mem = self.encode(small)
        cover = latent_cover(valid, tuple(z_mem.shape[-2:]))
        # A fixed noise per chunk, from its own seeded generator: the pipeline's generator
        # stays untouched, so with nothing covered the output is the unguided one exactly.
        noise = torch.randn(z_mem.shape, generator=torch.Generator("cpu").manual_seed(seed + 1))
        guide = WarpedLatentGuidance(z_mem, cover[None, :, None], noise, self.steps)
        cond = (small[0] * 255).round().to(torch.uint8).numpy()
        kwargs = self.pipeline_kwargs(cond, n, seed)
        kwargs.update(output_type="latent", callback_on_step_end=guide)
        latents = self.pipe(**kwargs).frames  # (1, F, C, h, w)
        video = self.pipe.decode_latents(latents, n, self.chunk_size)  # (1, 3, F, h, w) [-1, 1]
        frames = (video[0].permute(1, 0, 2, 3).float().cpu() / 2 + 0.5).clamp(0, 1)
        frames = F.interpolate(frames, size=(H, W), mode="bilinear", align_corners=False)
        self.pipe.maybe_free_model_hooks()
        return ChunkOutput(frames.permute(0, 2, 3, 1), latents.float().cpu(), z_mem, cover)

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]:
        """Paint a chunk (len(requests) <= chunk_size frames, one seed: the first request's)."""
        if not requests:
            return []
        t0 = time.perf_counter()
        filled = []
        for r in requests:
            if bool(r.valid.any()):
                depth = fill_depth(r.warped_depth, r.valid)
                filled.append(inpaint_rgb(r.warped_rgb, r.valid, depth))
            else:  # nothing seen at all: neutral grey for the model to repaint
                filled.append(torch.full_like(r.warped_rgb, 0.5))
        valid = torch.stack([r.valid for r in requests])
        out = self.run_chunk(torch.stack(filled).float(), valid, int(requests[0].seed))
        seconds = time.perf_counter() - t0
        results = []
        for k, r in enumerate(requests):
            rgb = feathered_paste(out.frames[k], r.warped_rgb, filled[k], r.valid, self.feather)
            meta = {
                "painted": float((~r.valid).float().mean()),
                "guided_cells": float(out.cover[k].float().mean()),
                "model": self.model_id,
                "family": self.family.name,
                "chunk_seconds": seconds,
            }
            results.append(SynthesisResult(rgb, r.valid.clone(), None, meta))
        return results


@register_synthesis_backend("video")
def _factory(**options: Any) -> VideoSynthesis:
    return VideoSynthesis(**options)
