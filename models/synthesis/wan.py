"""What the Wan-family painters (``vace``, ``wan-i2v``) share.

A Wan painter gets a chunk of target views from the exploration loop and turns it into one
pipeline call:

* :func:`build_inputs` lays the chunk out as a video: ``[context frames] + [targets] (+ pad)``.
  The context is the world's last finished frame(s) (``SynthesisRequest.history``), kept as is,
  so motion and appearance carry over from the previous chunk, or from the photo for the first
  one. Each target is its warped memory render with the never-seen holes pre-filled
  (``models.geometry.fill``, so the VAE sees no black). Wan takes 4k+1 frames, so the chunk is
  padded with copies of its last target, which are generated and thrown away. The mask (1 =
  generate) is the never-seen pixels dilated a few pixels and rounded out to whole VAE cells;
  routed pixels strongly magnified in the target (``stretch`` > ``max_stretch``) are generated
  too, their routed content left visible, so walking forward gains detail instead of blur;
* frames run at the model's trained area (aspect kept, sides multiples of 16) and are resized
  back; after decoding, every exact pixel is pasted back bit for bit, with a feather on the
  painted side only (:func:`models.synthesis.video.feathered_paste`);
* :class:`WanPainter` checks the folder (JSON only), makes the VRAM plan before any weight is
  read (:mod:`models.synthesis.vram`: placement, VAE tiling, estimated peak and time, printed and
  stored in world.json via ``info``), refuses a CPU run that would take hours unless forced,
  loads once per placement through the model manager, and caches prompt embeddings (the 5.7B
  text encoder then runs once per prompt). The transformer stays reachable as ``denoiser`` (and
  the pipeline as ``pipe``) for LoRA adapters.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
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
    host_ram_gb,
    load_error,
    pick_device,
    pick_dtype,
    resolve_pipeline_dir,
)
from models.synthesis import vram
from models.synthesis.base import SynthesisRequest, SynthesisResult
from models.synthesis.video import feathered_paste

OFFLINE_ALTERNATIVE = "--synthesis reproject"
TRAINED_AREA = 480 * 832  # Wan 2.1's 480p family (480x832 and 832x480)
PRESETS = {"fast": 12, "default": 30, "quality": 50}  # denoising steps
DEFAULT_NEGATIVE = (
    "blurry, low quality, distorted, deformed, smeared, static, overexposed, text, watermark, "
    "subtitles, frame, border"
)
CPU_LIMIT_S_PER_FRAME = 120.0  # beyond this, a CPU run is refused unless forced
REQUIRED = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_VOCAB = ("tokenizer.json", "spiece.model", "tokenizer.model")
HINTS = {
    "WanVACEPipeline": "a Wan video completion model: use --synthesis vace",
    "WanImageToVideoPipeline": "a Wan image-to-video model: use --synthesis wan-i2v",
    "WanPipeline": "a Wan text/image-to-video model: use --synthesis wan-i2v",
    "StableDiffusionInpaintPipeline": "an inpainting model: use --synthesis sd-inpaint",
    "StableVideoDiffusionPipeline": "an image-to-video model: use --synthesis video",
}


def check_wan_folder(
    folder: Path, model_id: str, backend: str, accepts: dict[str, str]
) -> dict[str, Any]:
    """Raise ModelError unless ``folder`` holds a complete diffusers pipeline whose class is in
    ``accepts`` (class -> what to pass instead when it is not); JSON only. Returns the index."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise load_error(backend, model_id, OFFLINE_ALTERNATIVE, FileNotFoundError(
            f"{folder} has no model_index.json (not a diffusers pipeline)"))  # fmt: skip
    index = json.loads(index_file.read_text())
    cls = index.get("_class_name", "?")
    if cls not in accepts:
        hint = HINTS.get(cls, "not a Wan video model")
        wanted = " or ".join(accepts)
        raise ModelError(
            f"{model_id!r} holds a {cls} ({hint}); the {backend} backend needs a {wanted}, or "
            f"use the offline backend {OFFLINE_ALTERNATIVE}"
        )
    for name in REQUIRED:
        sub = folder / name
        if not sub.is_dir() or not any(sub.iterdir()):
            raise ModelError(
                f"{model_id!r} has no {name}/ component (an incomplete download?); download it "
                f"again or use {OFFLINE_ALTERNATIVE}"
            )
    if not any((folder / "tokenizer" / f).is_file() for f in _VOCAB):
        raise ModelError(
            f"{model_id!r}: tokenizer/ has no vocabulary ({' or '.join(_VOCAB)}); transformers "
            f"would silently build an empty tokenizer"
        )
    return index


def run_size(width: int, height: int, multiple: int, area: int | None) -> tuple[int, int]:
    """(width, height) the model runs at: aspect kept, sides multiples of ``multiple``, at most
    ``area`` pixels (None: the frame's own size, rounded to the nearest multiple)."""
    if area is None:  # nearest multiple, halves up
        return tuple(max(multiple, int(v / multiple + 0.5) * multiple) for v in (width, height))
    s = math.sqrt(area / (width * height))
    return (
        max(multiple, math.floor(width * s / multiple) * multiple),
        max(multiple, math.floor(height * s / multiple) * multiple),
    )


def wan_frames(n: int) -> int:
    """The smallest frame count >= n that Wan takes (4k + 1)."""
    return n + (-(n - 1)) % 4


@dataclass
class ChunkInputs:
    """What one pipeline call gets, and how to map its output back.

    video: (N, 3, h, w) float [0, 1] at the run size; mask: (N, 1, h, w) float {0, 1}, 1 =
    generate; context: leading frames that are history (kept); targets: frames after them that
    are requests (the rest is padding); exact: (targets, H, W) bool, pixels pasted back as
    routed; filled: (targets, H, W, 3) float, the pre-filled warps (the feather blends to them).
    """

    video: torch.Tensor
    mask: torch.Tensor
    context: int
    targets: int
    exact: torch.Tensor
    filled: torch.Tensor


def build_inputs(
    requests: list[SynthesisRequest],
    size: tuple[int, int],
    *,
    cell: int = 8,
    context: int = 1,
    dilate: int = 4,
    max_stretch: float | None = 1.5,
    sliver: int = 2,
) -> ChunkInputs:
    """The VACE video and mask for a chunk of requests (see the module docstring).

    size: (width, height) to run at, multiples of ``cell``. ``sliver``: holes thinner than
    2 x sliver + 1 px (cracks between splatted pixels) are left to the pre-fill, which continues
    their surroundings well; marked "generate", they would spread to whole 8x8 cells and turn a
    crack-riddled view into one the model regenerates entirely. Pure tensor code: no model.
    """
    w, h = size
    exact, filled, holes = [], [], []
    for r in requests:
        valid = r.valid.bool().cpu()
        keep = valid
        if r.stretch is not None and max_stretch is not None:
            keep = valid & (r.stretch.cpu() <= max_stretch)  # magnified: regenerate, keep visible
        if bool(valid.any()):
            depth = fill_depth(r.warped_depth.float().cpu(), valid)
            fill = inpaint_rgb(r.warped_rgb.float().cpu(), valid, depth)
        else:  # nothing seen at all: a neutral start for the model to repaint
            fill = torch.full_like(r.warped_rgb.float().cpu(), 0.5)
        hole = (~keep).float()[None, None]
        if sliver > 0:  # a morphological opening removes the slivers...
            hole = 1 - F.max_pool2d(1 - hole, 2 * sliver + 1, stride=1, padding=sliver)
        grow = dilate + max(sliver, 0)  # ...and its dilation half is merged with the seam's
        if grow > 0:
            hole = F.max_pool2d(hole, 2 * grow + 1, stride=1, padding=grow)
        exact.append(keep)
        filled.append(fill)
        holes.append(hole)

    def resize(x: torch.Tensor) -> torch.Tensor:  # (n, c, H, W) -> (n, c, h, w)
        return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)

    target_video = resize(torch.stack(filled).permute(0, 3, 1, 2)).clamp(0, 1)
    # Any hole coverage at run size counts, then whole VAE cells: a cell is kept only if all
    # of its pixels are.
    hole_small = (resize(torch.cat(holes)) > 1e-3).float()
    cells = F.max_pool2d(hole_small, cell, stride=cell)
    target_mask = F.interpolate(cells, size=(h, w), mode="nearest")
    history = requests[0].history if context > 0 else None
    ctx = history[-context:] if history is not None else torch.zeros(0, *filled[0].shape)
    ctx_video = resize(ctx.float().permute(0, 3, 1, 2)).clamp(0, 1) if len(ctx) else None
    parts_v = [target_video] if ctx_video is None else [ctx_video, target_video]
    parts_m = (
        [target_mask] if ctx_video is None else [torch.zeros_like(ctx_video[:, :1]), target_mask]
    )
    video, mask = torch.cat(parts_v), torch.cat(parts_m)
    pad = wan_frames(len(video)) - len(video)
    if pad:  # copies of the last target, generated and thrown away
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        mask = torch.cat([mask, mask[-1:].expand(pad, -1, -1, -1)])
    return ChunkInputs(
        video, mask, len(ctx), len(requests), torch.stack(exact), torch.stack(filled)
    )


def apply_plan(pipe: Any, plan: vram.VramPlan, device: str) -> Any:
    """Place ``pipe`` as ``plan`` says (weights already in their dtypes); returns the pipe."""
    if plan.mode == "text-offload":
        pipe.to(device)
        pipe.text_encoder.to("cpu")  # the backend brings it over to encode a new prompt
    elif plan.mode == "model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.mode == "group-offload":
        import torch

        pipe.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=True,
        )
    else:
        pipe.to(device)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    return pipe


@gpu(duration=lambda pipe, kwargs, seconds: seconds)
def _run(pipe: Any, kwargs: dict[str, Any], seconds: float) -> torch.Tensor:
    """The heavy call (``spaces.GPU`` sized by the plan's estimate on a Space):
    (N, 3, h, w) float [0, 1] on the CPU."""
    with torch.inference_mode():
        return pipe(output_type="pt", **kwargs).frames[0].float().cpu()


class WanPainter:
    """What the Wan painters share: folder check, VRAM plan, loading through the model
    manager, cached prompt embeddings, chunk conditioning and exact paste-back. Subclasses set
    ``name``/``default_model``, :meth:`check` and :meth:`_generate` (see :class:`VaceSynthesis`).

    Args:
        model: hub id or local diffusers folder (default: the subclass's ``default_model``).
        prompt / negative_prompt: text (a request's own ``prompt`` wins); empty is fine.
        preset: "fast" (12 steps, previews), "default" (30) or "quality" (50); ``steps`` wins.
        guidance_scale: classifier-free guidance (<= 1 disables it: half the work).
        flow_shift: the flow-matching schedule shift (3 at 480p, 5 at 720p).
        chunk_size: target frames per chunk (16 + 1 context frame = 17 = 4k+1 frames).
        context_frames: finished frames each chunk continues from (kept).
        area: pixels the model runs at: "trained" (default: its trained area), "native" or
            None (the frame size), or a number.
        dilate / feather: px the hole mask grows / the painted side of the seam blends.
        max_stretch: routed pixels magnified more than this are regenerated (None: never).
        device / dtype: default CUDA + bf16 when available (VAE in fp32), else CPU + fp32.
        offload: "auto" or one of ``vram.MODES``; vram_gb: a VRAM budget (GiB) for the plan.
        force_cpu: run on a CPU even when the estimate says it takes hours.
    """

    name = "wan"
    default_model = ""
    trained_area = TRAINED_AREA
    encodes = 2  # videos the VAE encodes per call (for the plan)
    references = 0  # extra latent frames per call (for the plan)

    def __init__(
        self,
        model: str | Path | None = None,
        prompt: str = "",
        negative_prompt: str = DEFAULT_NEGATIVE,
        preset: str = "default",
        steps: int | None = None,
        guidance_scale: float = 5.0,
        flow_shift: float = 3.0,
        chunk_size: int = 16,
        context_frames: int = 1,
        area: int | None | str = "trained",
        dilate: int = 4,
        feather: int = 4,
        max_stretch: float | None = 1.5,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        offload: str = "auto",
        vram_gb: float | None = None,
        force_cpu: bool = False,
    ) -> None:
        if preset not in PRESETS:
            raise ModelError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        self.steps = int(steps if steps is not None else PRESETS[preset])
        if self.steps < 1 or int(chunk_size) < 1 or int(context_frames) < 0:
            raise ModelError("steps and chunk size must be at least 1, context frames at least 0")
        self.model_id = str(model or self.default_model)
        self.prompt, self.negative_prompt = prompt or "", negative_prompt or ""
        self.guidance_scale, self.flow_shift = float(guidance_scale), float(flow_shift)
        self.chunk_size, self.context_frames = int(chunk_size), int(context_frames)
        self.dilate, self.feather, self.max_stretch = int(dilate), int(feather), max_stretch
        self.device = pick_device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.dtype = self.dtype or pick_dtype(self.device)
        self.notes: list[str] = []
        self.folder = resolve_pipeline_dir(self.name, self.model_id, OFFLINE_ALTERNATIVE)
        self.index = self.check(self.folder, self.model_id)
        # The plan comes before any weight is read: a model that cannot fit fails here.
        self.spec = vram.spec_from_folder(self.folder, self.model_id)
        self.area = {"trained": self.trained_area, "native": None}.get(area, area)  # type: ignore[arg-type]
        # Rotary embeddings cover this many patches per axis: larger sizes would crash inside.
        tcfg = json.loads((self.folder / "transformer" / "config.json").read_text())
        self.max_patches = int(tcfg.get("rope_max_seq_len", 1024))
        latent_frames = (wan_frames(self.chunk_size + self.context_frames) - 1) // 4 + 2
        if latent_frames > self.max_patches:
            self.chunk_size = 4 * (self.max_patches - 2) - self.context_frames
            self.notes.append(f"chunk size lowered to {self.chunk_size} frames (the model's limit)")
        w, h = run_size(4, 3, self.spec.multiple, self.area or 512 * 384)
        self.plan = vram.plan(
            self.spec,
            self.workload(w, h),
            device=self.device,
            free_gb=free_vram_gb(self.device),
            budget_gb=vram_gb,
            offload=offload,
            host_gb=host_ram_gb(),
        )
        per_frame = self.plan.seconds_per_chunk / self.chunk_size
        if self.plan.mode == "cpu" and per_frame > CPU_LIMIT_S_PER_FRAME and not force_cpu:
            raise ModelError(
                f"{self.model_id} on this CPU would take about {per_frame / 60:.0f} min per frame "
                f"({self.plan.seconds_per_chunk / 3600:.1f} h per {self.chunk_size}-frame chunk, "
                f"an estimate); use a CUDA GPU, the offline backend {OFFLINE_ALTERNATIVE}, or "
                f"--force-cpu to run it anyway"
            )
        self.notes.append(f"{self.name} VRAM plan: {self.plan.summary()}")
        key = f"{self.folder.resolve()}|{self.plan.mode}|{self.plan.vae_tiling}"
        self.pipe = MANAGER.get(self.name, key, self._load, device=self.device, dtype=self.dtype)
        self._embeds: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None]] = {}

    # -- hooks -----------------------------------------------------------------------------
    @staticmethod
    def check(folder: Path, model_id: str) -> dict[str, Any]:
        """Validate the folder (JSON only) and return its model_index."""
        raise NotImplementedError

    def pipeline_class(self) -> Any:
        raise NotImplementedError

    def _generate(self, inputs: ChunkInputs, first: SynthesisRequest, size: tuple[int, int]):
        """Run the pipeline on a chunk: (N, 3, h, w) float [0, 1]."""
        raise NotImplementedError

    # -- loading ---------------------------------------------------------------------------
    def _load(self, _key: str, dtype: torch.dtype, device: str) -> Any:
        try:
            from diffusers import AutoencoderKLWan

            vae = AutoencoderKLWan.from_pretrained(self.folder / "vae", dtype=torch.float32)
            pipe = self.pipeline_class().from_pretrained(
                str(self.folder), vae=vae, dtype=dtype, local_files_only=True
            )
        except ImportError as exc:
            raise ModelError(f"{self.name} needs diffusers, transformers and ftfy: pip install "
                             f"-e '.[models]', or use {OFFLINE_ALTERNATIVE}") from exc  # fmt: skip
        except Exception as exc:  # corrupt weights, missing files, version mismatch
            raise load_error(self.name, self.model_id, OFFLINE_ALTERNATIVE, exc) from exc
        tok = pipe.tokenizer
        special = set(tok.all_special_ids)
        if len(tok) == 0 or all(i in special for i in tok("a room").input_ids):
            raise ModelError(f"{self.model_id!r}: its tokenizer loaded empty (files missing)")
        if device != "cpu":
            apply_plan(pipe, self.plan, device)
        pipe.set_progress_bar_config(disable=True)
        pipe._loci_lock = threading.Lock()  # one denoising loop per pipeline at a time
        return pipe

    @property
    def denoiser(self) -> torch.nn.Module:
        """The transformer (where a LoRA adapter goes)."""
        return self.pipe.transformer

    def workload(self, width: int, height: int, frames: int | None = None) -> vram.Workload:
        n = frames or wan_frames(self.chunk_size + self.context_frames)
        return vram.Workload(width, height, n, self.references, self.steps,
                             self.guidance_scale > 1, self.encodes)  # fmt: skip

    @property
    def info(self) -> dict[str, Any]:
        """What world.json records about this painter."""
        return {
            "backend": self.name,
            "model": self.model_id,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "flow_shift": self.flow_shift,
            "chunk_size": self.chunk_size,
            "context_frames": self.context_frames,
            "area": self.area,
            "max_stretch": self.max_stretch,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "vram_plan": self.plan.as_dict(),
            "notes": list(dict.fromkeys(self.notes)),
        }

    # -- generation ------------------------------------------------------------------------
    def _prompt_embeds(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings, computed once per prompt (the text encoder is the biggest part)."""
        key = (prompt, self.negative_prompt)
        if key not in self._embeds:
            pipe, cfg = self.pipe, self.guidance_scale > 1
            visiting = self.plan.mode == "text-offload"
            if visiting:
                pipe.text_encoder.to(self.device)
            try:
                pos, neg = pipe.encode_prompt(
                    prompt=prompt, negative_prompt=self.negative_prompt,
                    do_classifier_free_guidance=cfg, device=pipe._execution_device,
                )  # fmt: skip
            finally:
                if visiting:
                    pipe.text_encoder.to("cpu")
            if len(self._embeds) >= 8:
                self._embeds.pop(next(iter(self._embeds)))
            self._embeds[key] = (pos, neg)
        return self._embeds[key]

    def _lease_seconds(self, size: tuple[int, int], frames: int) -> float:
        """GPU seconds to ask a ZeroGPU Space for one call: 1.5x the estimate, 60-600 s."""
        secs = vram.estimate_seconds(self.spec, self.workload(*size, frames), self.plan.mode)
        return min(600.0, max(60.0, 1.5 * secs))

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]:
        """Paint a chunk (one seed: the first request's; one prompt: the first request's)."""
        if not requests:
            return []
        t0 = time.perf_counter()
        H, W = requests[0].valid.shape
        size = run_size(W, H, self.spec.multiple, self.area)
        side = self.max_patches * self.spec.multiple
        if max(size) > side:  # beyond the model's positional range: scale down, aspect kept
            s = side / max(size)
            size = run_size(int(size[0] * s), int(size[1] * s), self.spec.multiple, None)
            size = (min(size[0], side), min(size[1], side))
            self.notes.append(f"frames run at {size[0]}x{size[1]}: the model takes at most "
                              f"{side} px a side")  # fmt: skip
        if size != (W, H):
            why = f"the model's {self.area:,} px area" if self.area else "the frame size"
            self.notes.append(f"frames run at {size[0]}x{size[1]} ({why}, sides multiples of "
                              f"{self.spec.multiple}) and are resized back to {W}x{H}")  # fmt: skip
        inputs = build_inputs(requests, size, cell=self.spec.vae_spatial,
                              context=self.context_frames, dilate=self.dilate,
                              max_stretch=self.max_stretch)  # fmt: skip
        n = len(inputs.video)
        if n != inputs.context + inputs.targets:
            self.notes.append(f"chunks padded to {n} frames (Wan takes 4k+1)")
        with self.pipe._loci_lock:
            out = self._generate(inputs, requests[0], size)
        frames = out[inputs.context : inputs.context + inputs.targets]
        frames = F.interpolate(frames, size=(H, W), mode="bicubic", align_corners=False)
        frames = frames.clamp(0, 1).permute(0, 2, 3, 1)
        seconds = time.perf_counter() - t0
        results = []
        for k, r in enumerate(requests):
            keep = inputs.exact[k]
            rgb = feathered_paste(frames[k], r.warped_rgb.float().cpu(), inputs.filled[k], keep,
                                  self.feather)  # fmt: skip
            meta = {
                "painted": float((~r.valid).float().mean()),
                "regenerated": float((r.valid.cpu() & ~keep).float().mean()),
                "run_size": list(size),
                "chunk_frames": n,
                "context": inputs.context,
                "chunk_seconds": seconds,
                "placement": self.plan.mode,
            }
            results.append(SynthesisResult(rgb, keep.clone(), None, meta))
        return results
