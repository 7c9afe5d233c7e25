"""``sd-inpaint``: per-frame synthesis with a Stable Diffusion inpainting pipeline (diffusers).

For each target frame the warped memory image is the init image (its holes pre-filled by
:func:`models.geometry.fill.inpaint_rgb`, so the diffusion starts from a plausible picture rather than
black), the never-seen mask (dilated a few pixels so the seam is repainted too) is the
inpainting mask, and the frame is generated at the model's native resolution. After decoding,
every memory-covered pixel is pasted back bit for bit; only the painted side of the seam is
feathered towards the pre-filled image, so covered pixels never change.

Weights load through :data:`models.manager.MANAGER` from a hub id or a local folder, and the
folder is validated before any work: missing components, an empty tokenizer (transformers
silently builds one when ``tokenizer/`` is missing), a text-to-image UNet (4 input channels
instead of 9) or a model too big for the GPU each raise :class:`ModelError`.
diffusers is imported only when the backend is built.
"""

from __future__ import annotations

import json
import math
import struct
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.geometry.fill import fill_depth, inpaint_rgb
from models.manager import (
    MANAGER,
    ModelError,
    free_vram_gb,
    gpu,
    load_error,
    pick_device,
    pick_dtype,
    resolve_pipeline_dir,
)
from models.synthesis.base import SynthesisRequest, SynthesisResult, register_synthesis_backend
from models.synthesis.lora import apply_lora, read_lora

BACKEND = "sd-inpaint"
DEFAULT_MODEL = "stabilityai/stable-diffusion-2-inpainting"
DEFAULT_PROMPT = "a photo of the same scene, continuing naturally, realistic, consistent lighting"
DEFAULT_NEGATIVE = "blurry, distorted, text, watermark, people, frame, border"
OFFLINE_ALTERNATIVE = "--synthesis reproject"
# Components an SD inpainting folder must hold; safety checker / feature extractor are optional.
REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
OPTIONAL = {"safety_checker", "feature_extractor", "image_encoder"}
PIPELINE_CLASSES = {
    "StableDiffusionPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLInpaintPipeline",
}
# Activations, attention buffers and the CUDA context at 512-768 px, on top of the weights.
_ACTIVATION_MARGIN = 2.0 * 2**30
_VOCAB_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---------------------------------------------------------------------------------------------
# Validation (no weights are loaded here)
def check_model_folder(folder: Path, model_id: str) -> dict[str, Any]:
    """Raise ModelError unless ``folder`` holds a diffusers SD *inpainting* pipeline.

    Reads only model_index.json and the UNet config; returns the parsed model_index.
    """
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise load_error(
            BACKEND,
            model_id,
            OFFLINE_ALTERNATIVE,
            FileNotFoundError(f"{folder} has no model_index.json (not a diffusers pipeline)"),
        )
    index = json.loads(index_file.read_text())
    cls = index.get("_class_name", "?")
    if cls not in PIPELINE_CLASSES:
        raise ModelError(
            f"model {model_id!r} is a {cls}, not a Stable Diffusion inpainting pipeline; pass an "
            f"inpainting model with --model (default {DEFAULT_MODEL}) or use {OFFLINE_ALTERNATIVE}"
        )
    listed = {k for k, v in index.items() if not k.startswith("_") and v and v[0] is not None}
    needed = set(REQUIRED) | (listed - OPTIONAL)
    for name in sorted(needed):
        sub = folder / name
        if name not in listed or not sub.is_dir() or not any(sub.iterdir()):
            raise load_error(
                BACKEND,
                model_id,
                OFFLINE_ALTERNATIVE,
                FileNotFoundError(f"the model folder has no {name}/ component ({folder / name})"),
            )
    for name in sorted(n for n in needed if n.startswith("tokenizer")):
        if not any((folder / name / f).is_file() for f in _VOCAB_FILES):
            raise load_error(
                BACKEND,
                model_id,
                OFFLINE_ALTERNATIVE,
                FileNotFoundError(
                    f"the model folder's {name}/ has no vocabulary ({' or '.join(_VOCAB_FILES)}); "
                    "transformers would silently build an empty tokenizer"
                ),
            )
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    if int(unet_cfg.get("in_channels", 0)) != 9:
        raise ModelError(
            f"model {model_id!r} is a text-to-image model, not an inpainting model (its UNet takes "
            f"{unet_cfg.get('in_channels')} input channels; inpainting needs 9: latents, mask and "
            f"masked image). Use e.g. {DEFAULT_MODEL} or {OFFLINE_ALTERNATIVE}"
        )
    return index


def _safetensors_params(f: Path) -> int:
    """Number of parameters in a .safetensors file, from its JSON header alone."""
    with f.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def weight_bytes(folder: Path, dtype: torch.dtype, components: tuple[str, ...]) -> list[int]:
    """Bytes each of ``components`` will take in ``dtype`` (from safetensors headers, else
    .bin file sizes, assumed fp32), without loading anything."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = []
    for name in components:
        files = sorted((folder / name).glob("*.safetensors"))
        # One copy per component: folders often hold an fp16 variant next to the fp32 weights.
        main = [f for f in files if ".fp16." not in f.name] or files
        total = sum(_safetensors_params(f) for f in main) * itemsize
        if total == 0:
            bins = sorted((folder / name).glob("*.bin"))
            bins = [f for f in bins if ".fp16." not in f.name] or bins
            total = sum(f.stat().st_size for f in bins) * itemsize // 4
        sizes.append(total)
    return sizes


def plan_placement(need: int, largest: int, free: int | None, have_accelerate: bool) -> str:
    """ "gpu" (everything resident), "offload" (one model at a time) or raise ModelError.

    need: bytes of all weights plus activations; largest: bytes of the biggest component plus
    activations (what model CPU offload keeps on the GPU); free: free VRAM bytes (None: CPU).
    """
    if free is None or need <= free:
        return "gpu"
    if have_accelerate and largest <= free:
        return "offload"
    gib = 2**30
    why = "" if have_accelerate else " (install accelerate to offload parts of it to the CPU)"
    raise ModelError(
        f"the {BACKEND} model needs about {need / gib:.1f} GiB of GPU memory "
        f"({largest / gib:.1f} GiB with CPU offload) but only {free / gib:.1f} GiB is free{why}; "
        f"free GPU memory, use --device cpu, or use {OFFLINE_ALTERNATIVE}"
    )


def _parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return pick_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _tokenizer_works(tok: Any) -> bool:
    """False for the tokenizer transformers builds silently when the vocabulary is missing: it
    holds only special tokens (``len`` 0-2) and encodes every word to them."""
    if len(tok) == 0:
        return False
    ids = tok("a photo of a room", add_special_tokens=False).input_ids
    special = set(tok.all_special_ids)
    return any(i not in special for i in ids)


def inpaint_inputs(
    warped: torch.Tensor,
    valid: torch.Tensor,
    depth: torch.Tensor,
    dilate: int,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the painter is given for one frame (shared by inference and ``loci train``).

    warped (H, W, 3) float [0, 1], valid (H, W) bool, depth (H, W) metres; size: (w, h) to
    generate at. Returns the pre-filled init image (H, W, 3) at frame size, the same image
    (1, 3, h, w) at work size, and the inpainting mask (1, 1, h, w) (1 = paint): the never-seen
    pixels dilated by ``dilate`` px, and any work pixel a hole touches.
    """
    valid = valid.bool().cpu()
    warped = warped.float().cpu()
    w, h = size
    if bool(valid.any()):
        init = inpaint_rgb(warped, valid, fill_depth(depth.float().cpu(), valid))
    else:  # nothing seen at all: let the model paint from a neutral start
        init = torch.full_like(warped, 0.5)
    hole = (~valid).float()[None, None]
    if dilate > 0:
        hole = F.max_pool2d(hole, 2 * dilate + 1, stride=1, padding=dilate)
    image = F.interpolate(init.permute(2, 0, 1)[None], (h, w), mode="bilinear", antialias=True)
    # Any hole coverage at work resolution counts as hole: never keep a half-seen pixel.
    mask = (F.interpolate(hole, (h, w), mode="bilinear", antialias=True) > 1e-3).float()
    return init, image.clamp(0, 1), mask


def check_pipeline(pipe: Any, model_id: str) -> None:
    """Checks on a loaded pipeline that the folder layout cannot show: working tokenizers (an
    empty one encodes every prompt to nothing) and an inpainting UNet (9 input channels)."""
    for attr in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, attr, None)
        if tok is None and attr == "tokenizer_2":
            continue
        if tok is None or not _tokenizer_works(tok):
            raise ModelError(
                f"model {model_id!r}: the {attr} is empty (its {attr}/ folder is missing "
                f"or incomplete: it needs vocab.json + merges.txt or tokenizer.json); "
                f"re-download the model or use {OFFLINE_ALTERNATIVE}"
            )
    if int(pipe.unet.config.in_channels) != 9:
        raise ModelError(f"model {model_id!r} is a text-to-image model, not an inpainting model")


def pipe_work_size(
    pipe: Any, width: int, height: int, resolution: int | None = None
) -> tuple[int, int]:
    """(width, height) ``pipe`` generates a width x height frame at: the native long side
    (``unet.sample_size * vae_scale_factor``) unless ``resolution`` is given, aspect kept,
    multiples of the VAE factor (the UNet copes with latent sizes its down-blocks do not divide)."""
    m = int(pipe.vae_scale_factor)
    native = int(pipe.unet.config.sample_size) * m
    s = int(resolution or native) / max(width, height)
    return max(m, round(width * s / m) * m), max(m, round(height * s / m) * m)


def resolve_folder(model_id: str) -> Path:
    """The local folder of ``model_id``, downloading (online only) what the pipeline needs."""
    return resolve_pipeline_dir(BACKEND, model_id, OFFLINE_ALTERNATIVE)


# ---------------------------------------------------------------------------------------------
@gpu
def _run(pipe: Any, **kwargs: Any) -> Any:
    """The heavy call (``spaces.GPU`` on ZeroGPU Spaces): returns (B, h, w, 3) float numpy."""
    with torch.inference_mode():
        return pipe(output_type="np", **kwargs).images


class SDInpaintSynthesis:
    """Paint never-seen pixels with a Stable Diffusion inpainting model; route the rest.

    Args:
        model: hub id or local diffusers folder (default ``stabilityai/stable-diffusion-2-inpainting``).
        prompt: default prompt (a request's own ``prompt`` wins); negative_prompt likewise.
        steps: denoising steps. guidance_scale: classifier-free guidance (<= 1 disables it).
        strength: how far the masked area is re-noised (1.0: fully generated).
        feather: px on the painted side of the seam blended towards the pre-filled image.
        dilate: px the never-seen mask grows into covered pixels, so SD repaints the seam.
        resolution: long side (px) to generate at; None: the model's native size
            (``unet.sample_size * vae_scale_factor``, 512 for SD 2 inpainting).
        device, dtype: None picks CUDA + bf16/fp16 when available, else CPU + fp32.
        offload: None decides from free VRAM; True forces model CPU offload, False forbids it.
        lora: a LoRA folder written by ``loci train`` (None: the base model); lora_scale: its
            strength (1 = as trained, 0 = off). The adapted pipeline is cached separately from
            the base one, so a world with and one without the adapter can run side by side.
    """

    name = BACKEND
    chunk_size = 1

    def __init__(
        self,
        model: str | Path | None = None,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str | None = DEFAULT_NEGATIVE,
        steps: int = 25,
        guidance_scale: float = 7.5,
        strength: float = 1.0,
        feather: int = 4,
        dilate: int = 3,
        resolution: int | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        offload: bool | None = None,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
    ) -> None:
        if int(steps) < 1:
            raise ModelError(f"steps must be at least 1, got {steps}")
        if not 0.0 < float(strength) <= 1.0:
            raise ModelError(f"strength must be in (0, 1], got {strength}")
        self.model_id = str(model or DEFAULT_MODEL)
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.steps, self.guidance_scale, self.strength = int(steps), guidance_scale, strength
        self.feather, self.dilate, self.resolution = int(feather), int(dilate), resolution
        self.device = pick_device(device)
        self.dtype = _parse_dtype(dtype, self.device)
        self.offload = offload
        self.lora = read_lora(lora, BACKEND) if lora else None
        self.lora_scale = float(lora_scale)
        self.folder = resolve_folder(self.model_id)
        check_model_folder(self.folder, self.model_id)
        key = self.model_id
        if self.lora is not None:
            key += f" + LoRA {self.lora.sha256[:16]} x{self.lora_scale:g}"
        self.pipe = MANAGER.get(BACKEND, key, self._load, device=self.device, dtype=self.dtype)
        self.check()

    def record(self) -> dict[str, Any]:
        """What world.json keeps about this painter beyond its name (the LoRA, if any)."""
        return {} if self.lora is None else {"lora": self.lora.record(self.lora_scale)}

    # -- loading ---------------------------------------------------------------------------
    def _load(self, model_id: str, dtype: torch.dtype, device: str) -> Any:
        try:
            from diffusers import AutoPipelineForInpainting
        except ImportError as exc:  # pragma: no cover - the project installs diffusers
            raise ModelError(f"{BACKEND} needs diffusers; or use {OFFLINE_ALTERNATIVE}") from exc
        placement = "gpu"
        if device.startswith("cuda"):
            # Budget before loading: a model that cannot fit fails here, not mid-generation.
            parts = ("unet", "vae", "text_encoder", "text_encoder_2")
            parts = tuple(n for n in parts if (self.folder / n).is_dir())
            sizes = weight_bytes(self.folder, dtype, parts)
            free = free_vram_gb(device)
            placement = plan_placement(
                sum(sizes) + int(_ACTIVATION_MARGIN),
                max(sizes) + int(_ACTIVATION_MARGIN),
                None if free is None else int(free * 2**30),
                find_spec("accelerate") is not None,
            )
            if self.offload is True:
                placement = "offload"
            elif self.offload is False and placement == "offload":
                raise ModelError(
                    f"the {BACKEND} model does not fit in free GPU memory and offload=False; "
                    f"allow offload, use --device cpu, or use {OFFLINE_ALTERNATIVE}"
                )
        try:
            pipe = AutoPipelineForInpainting.from_pretrained(
                str(self.folder),
                dtype=dtype,
                local_files_only=True,
                safety_checker=None,
                requires_safety_checker=False,
            )
        except Exception as exc:  # corrupt weights, missing files, version mismatch
            raise load_error(BACKEND, model_id, OFFLINE_ALTERNATIVE, exc) from exc
        # Checked here, before the weights move to the GPU, so a bad model is never cached.
        self._check_pipe(pipe)
        if self.lora is not None:
            apply_lora(pipe, self.lora, self.lora_scale)
        if placement == "offload":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        pipe._loci_placement = placement  # reported in result meta
        return pipe

    def check(self) -> None:
        """Checks on the loaded pipeline that the folder layout cannot show."""
        self._check_pipe(self.pipe)

    def _check_pipe(self, pipe: Any) -> None:
        check_pipeline(pipe, self.model_id)

    # -- generation ------------------------------------------------------------------------
    def work_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) to generate at (see :func:`pipe_work_size`)."""
        return pipe_work_size(self.pipe, width, height, self.resolution)

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]:
        return [self._one(r) for r in requests]

    def _one(self, r: SynthesisRequest) -> SynthesisResult:
        """rgb (H, W, 3) float32: covered pixels = r.warped_rgb exactly, the rest generated."""
        t0 = time.perf_counter()
        valid = r.valid.bool().cpu()
        warped = r.warped_rgb.float().cpu()
        H, W = valid.shape
        if bool(valid.all()):
            return SynthesisResult(warped.clone(), valid.clone(), None, {"painted": 0.0})
        w, h = self.work_size(W, H)
        init, image, mask = inpaint_inputs(warped, valid, r.warped_depth, self.dilate, (w, h))
        gen = torch.Generator("cpu").manual_seed(int(r.seed))
        out = _run(
            self.pipe,
            prompt=r.prompt or self.prompt,
            negative_prompt=self.negative_prompt if self.guidance_scale > 1 else None,
            image=image,
            mask_image=mask,
            height=h,
            width=w,
            strength=self.strength,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=gen,
        )
        generated = torch.from_numpy(out[0]).float().permute(2, 0, 1)[None]
        generated = F.interpolate(generated, (H, W), mode="bicubic", align_corners=False)
        generated = generated[0].permute(1, 2, 0).clamp(0, 1)
        rgb = torch.where(valid[..., None], warped, self._feather(generated, init, valid))
        meta = {
            "painted": float((~valid).float().mean()),
            "work_size": [w, h],
            "seconds": time.perf_counter() - t0,
            "placement": getattr(self.pipe, "_loci_placement", "gpu"),
        }
        if self.lora is not None:
            meta["lora"] = self.lora.sha256[:12]
        return SynthesisResult(rgb, valid.clone(), None, meta)

    def _feather(self, generated: torch.Tensor, init: torch.Tensor, valid: torch.Tensor):
        """Blend the first ``feather`` painted pixels next to memory towards ``init`` (which
        continues memory smoothly), so the seam has no colour step. (H, W, 3) float32."""
        if self.feather <= 0 or not bool(valid.any()):
            return generated
        # Distance (px, chessboard) from memory, by repeated dilation: cheap for small bands.
        near = valid.float()[None, None]
        alpha = torch.ones_like(near)
        for i in range(self.feather, 0, -1):
            # Pixels first reached at this step form the ring at distance feather - i + 1.
            grown = F.max_pool2d(near, 3, stride=1, padding=1)
            alpha = torch.where(
                (grown > 0) & (near == 0), alpha.new_tensor(1 - i / (self.feather + 1)), alpha
            )
            near = grown
        a = alpha[0, 0][..., None]
        return generated * a + init * (1 - a)


@register_synthesis_backend(BACKEND)
def _factory(**options: Any) -> SDInpaintSynthesis:
    return SDInpaintSynthesis(**options)
