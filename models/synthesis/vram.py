"""VRAM planner for the Wan-family painters (``vace``, ``wan-i2v``), worked out before loading.

A Wan pipeline is a DiT (the transformer, 1.3B-17B parameters), a UMT5-XXL text encoder (5.7B),
a video VAE and, for Wan 2.1 I2V, a CLIP image encoder. Where each one lives on a GPU decides
whether a chunk fits and how fast it runs. :func:`plan` tries, fastest first:

    gpu            every component resident
    text-offload   transformer and VAE resident; the text encoder visits the GPU once per
                   prompt (its embeddings are cached)
    model-offload  one component on the GPU at a time (diffusers ``enable_model_cpu_offload``)
    group-offload  transformer blocks streamed from pinned host memory, two at a time
                   (``enable_group_offload(block_level, use_stream=True)``)

each without and with VAE tiling, and keeps the fastest whose estimated peak fits in 90 % of
the free VRAM (or of a budget the user gives). Nothing fits: :class:`ModelError` with the
numbers, before a single weight is read. Weights are bf16 on CUDA except the VAE, which stays fp32 (as the Wan
authors recommend: it is small and bf16 costs detail).

Where the numbers come from (all estimates until measured on a GPU):
* parameters: safetensors headers of a local folder (exact), or the published configs below
  instantiated on the ``meta`` device (exact, no weights needed);
* activations: per-token and per-pixel constants traced by running the real diffusers modules on
  fake tensors and counting live bytes (``tests/test_vram.py`` re-traces them and checks these
  constants); CUDA context, cuBLAS workspaces and allocator slack add ``CUDA_OVERHEAD``;
* time: counted FLOPs (0.9 x 2 x parameters x tokens for the linear layers, plus attention) over
  an assumed effective throughput; see :data:`GPU_FLOPS`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from models.manager import ModelError

GIB = 2**30
CUDA_OVERHEAD = 1.25 * GIB  # context + cuBLAS/cuDNN workspaces + fragmentation (estimate)
BF16, FP32 = 2, 4
# DiT forward activations, elements per token (traced, bf16): a*dim + b*ffn_dim, plus one dim per
# VACE hint kept for the later blocks, plus ~17 dim for per-token timesteps (Wan 2.2 TI2V).
DIT_A, DIT_B, PER_TOKEN_TIMESTEP = 7.9, 1.56, 17.3
# Video VAE peaks in fp32 (traced at 17 frames; the VAE runs causally, a few frames at a time, so
# frame count adds only the output): bytes per pixel of one frame untiled, GiB with 256 px tiles
# (plus 32 B (decode) and 28 B (encode) per pixel per frame of input or output).
VAE_PEAKS = {  # z_dim -> (decode B/px, encode B/px, decode tiled GiB, encode tiled GiB)
    16: (19.6e3, 14.1e3, 1.086, 0.689),
    48: (21.7e3, 7.4e3, 1.214, 1.541),
}
# VAE FLOPs per pixel of each frame (decode, encode), counted like the transformer's.
VAE_FLOPS = {16: (8.6e6, 5.1e6), 48: (18.7e6, 3.6e6)}
VAE_BASE = {16: 96, 48: 160}  # the traced VAEs' base widths
TEXT_TOKENS = 512
# Effective bf16 throughput assumed for time estimates (FLOP/s): about 60 % of an RTX 4090's
# 165 TFLOP/s dense peak; CPU: a measured ~40 GFLOP/s per core in fp32 matmuls on this VM.
GPU_FLOPS = 100e12
CPU_FLOPS_PER_THREAD = 40e9
PCIE_BYTES_PER_S = 20e9  # host -> device for offloaded weights
MODES = ("gpu", "text-offload", "model-offload", "group-offload")
MARGIN = 0.9  # a plan must leave 10 % of the budget spare

# The published Wan pipelines (diffusers layout), enough to plan without downloading anything.
_VAE22 = dict(base_dim=160, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
              decoder_base_dim=256, scale_factor_temporal=4, scale_factor_spatial=16, patch_size=2)  # fmt: skip
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu")  # fmt: skip
CLIP_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
              patch_size=14, image_size=224)  # fmt: skip


def _dit(cls: str, heads: int, ffn: int, layers: int, cin: int, cout: int, **extra: Any):
    cfg = dict(attention_head_dim=128, cross_attn_norm=True, eps=1e-6, freq_dim=256,
               patch_size=[1, 2, 2], qk_norm="rms_norm_across_heads", text_dim=4096,
               num_attention_heads=heads, ffn_dim=ffn, num_layers=layers, in_channels=cin,
               out_channels=cout, **extra)  # fmt: skip
    return (cls, cfg)


_VACE = "WanVACETransformer3DModel"
PUBLISHED: dict[str, dict[str, Any]] = {
    "Wan-AI/Wan2.1-VACE-1.3B-diffusers": {
        "_class_name": "WanVACEPipeline", "vae": ("AutoencoderKLWan", {}),
        "transformer": _dit(_VACE, 12, 8960, 30, 16, 16, vace_layers=list(range(0, 30, 2)),
                            vace_in_channels=96),
    },
    "Wan-AI/Wan2.1-VACE-14B-diffusers": {
        "_class_name": "WanVACEPipeline", "vae": ("AutoencoderKLWan", {}),
        "transformer": _dit(_VACE, 40, 13824, 40, 16, 16, vace_layers=list(range(0, 40, 5)),
                            vace_in_channels=96),
    },
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": {
        "_class_name": "WanPipeline", "expand_timesteps": True, "vae": ("AutoencoderKLWan", _VAE22),
        "transformer": _dit("WanTransformer3DModel", 24, 14336, 30, 48, 48),
    },
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": {
        "_class_name": "WanImageToVideoPipeline", "vae": ("AutoencoderKLWan", {}),
        "transformer": _dit("WanTransformer3DModel", 40, 13824, 40, 36, 16, image_dim=1280,
                            added_kv_proj_dim=5120),
        "image_encoder": ("CLIPVisionModel", CLIP_H),
    },
}  # fmt: skip


@dataclass(frozen=True)
class WanSpec:
    """What the planner needs about one Wan pipeline.

    params: component name -> parameter count (transformer, transformer_2, text_encoder,
    image_encoder, vae). dim / ffn_dim / layers / vace_layers: the DiT's shape. z_dim,
    vae_spatial, vae_base_dim: the VAE (16, 8, 96 for Wan 2.1; 48, 16, 160 for Wan 2.2; the
    traced constants scale with the base width). text_vocab x text_dim:
    the text encoder's embedding table (resident under group offload).
    """

    name: str
    params: dict[str, int]
    dim: int
    ffn_dim: int
    layers: int
    vace_layers: int = 0
    z_dim: int = 16
    vae_spatial: int = 8
    vae_base_dim: int = 96
    per_token_timesteps: bool = False
    text_vocab: int = 256384
    text_dim: int = 4096

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this (VAE factor x patch size 2)."""
        return self.vae_spatial * 2


@dataclass(frozen=True)
class Workload:
    """One pipeline call: ``frames`` at width x height (multiples of ``spec.multiple``),
    ``references`` extra latent frames (VACE reference images), ``steps`` denoising steps,
    ``cfg``: classifier-free guidance (two transformer passes per step), ``encodes``: videos the
    VAE encodes (VACE: the kept and the regenerated parts; I2V: the condition)."""

    width: int
    height: int
    frames: int
    references: int = 0
    steps: int = 30
    cfg: bool = True
    encodes: int = 2

    def tokens(self, spec: WanSpec) -> int:
        latent_frames = (self.frames - 1) // 4 + 1 + self.references
        return latent_frames * (self.height // spec.multiple) * (self.width // spec.multiple)


@dataclass
class VramPlan:
    """Where the components go and what that is estimated to cost (GiB, seconds).

    mode: "cpu" or one of :data:`MODES`; weights_gb: all weights in their run dtypes; stages:
    peak per stage (text, denoise, vae encode, vae decode); host_gb: host RAM the offloaded
    weights occupy; seconds_per_chunk: estimated time of one pipeline call.
    """

    mode: str
    vae_tiling: bool
    peak_gb: float
    weights_gb: float
    host_gb: float
    budget_gb: float | None
    seconds_per_chunk: float
    stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("peak_gb", "weights_gb", "host_gb", "seconds_per_chunk"):
            d[k] = round(d[k], 2)
        d["stages"] = {k: round(v, 2) for k, v in self.stages.items()}
        d["estimate"] = True  # until measured on a GPU
        return d

    def summary(self) -> str:
        if self.mode == "cpu":
            return (
                f"CPU, fp32: {self.weights_gb:.1f} GiB of weights in RAM, about "
                f"{self.seconds_per_chunk:.0f} s per chunk (estimate)"
            )
        host = f", {self.host_gb:.1f} GiB of weights in host RAM" if self.host_gb else ""
        return (
            f"{self.mode}, VAE tiling {'on' if self.vae_tiling else 'off'}: estimated peak "
            f"{self.peak_gb:.1f} of {self.budget_gb:.1f} GiB{host}, about "
            f"{self.seconds_per_chunk:.0f} s per chunk (estimates)"
        )


# ---------------------------------------------------------------------------------------------
# Parameter counts: safetensors headers (a local folder) or meta-device instantiation (configs)


def safetensors_params(path: Path) -> int:
    """Number of parameters in a .safetensors file, from its JSON header alone."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def meta_params(class_name: str, config: dict[str, Any]) -> int:
    """Parameters of ``class_name(**config)`` built on the meta device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        if class_name.startswith(("UMT5", "T5")):
            from transformers import UMT5Config, UMT5EncoderModel

            model = UMT5EncoderModel(UMT5Config(**config))
        elif class_name.startswith("CLIPVision"):
            from transformers import CLIPVisionConfig, CLIPVisionModel

            model = CLIPVisionModel(CLIPVisionConfig(**config))
        else:
            import diffusers

            cls = getattr(diffusers, class_name)
            keep = {k: v for k, v in config.items() if not k.startswith("_")}
            model = cls(**keep)
    return sum(p.numel() for p in model.parameters())


def folder_params(folder: Path, component: str) -> int:
    """Parameters of a component folder: safetensors headers, else its config on meta."""
    files = sorted((folder / component).glob("*.safetensors"))
    main = [f for f in files if ".fp16." not in f.name] or files
    if main:
        return sum(safetensors_params(f) for f in main)
    cfg = json.loads((folder / component / "config.json").read_text())
    cls = cfg.get("_class_name") or (cfg.get("architectures") or ["?"])[0]
    return meta_params(cls, cfg)


def spec_from_configs(
    name: str, index: dict[str, Any], configs: dict[str, dict[str, Any]], params: dict[str, int]
) -> WanSpec:
    """A spec from model_index.json, the component configs and parameter counts."""
    tcfg = configs["transformer"]
    vcfg = configs.get("vae", {})
    te = configs.get("text_encoder", UMT5_XXL)
    z_dim = int(vcfg.get("z_dim", 16))
    spatial = int(
        vcfg.get("scale_factor_spatial") or 2 ** len(vcfg.get("temperal_downsample", [0] * 3))
    )
    return WanSpec(
        name=name,
        params=params,
        dim=int(tcfg.get("num_attention_heads", 12)) * int(tcfg.get("attention_head_dim", 128)),
        ffn_dim=int(tcfg.get("ffn_dim", 8960)),
        layers=int(tcfg.get("num_layers", 30)),
        vace_layers=len(tcfg.get("vace_layers") or []),
        z_dim=z_dim,
        vae_spatial=spatial,
        vae_base_dim=int(vcfg.get("base_dim", 96)),
        per_token_timesteps=bool(index.get("expand_timesteps", False)),
        text_vocab=int(te.get("vocab_size", 256384)),
        text_dim=int(te.get("d_model", 4096)),
    )


def spec_from_folder(folder: Path, name: str | None = None) -> WanSpec:
    """The spec of a local diffusers Wan folder (reads JSON and safetensors headers only)."""
    index = json.loads((folder / "model_index.json").read_text())
    configs, params = {}, {}
    for comp in ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae"):
        spec = index.get(comp)
        if not isinstance(spec, list) or spec[0] is None or not (folder / comp).is_dir():
            continue
        cfg_file = folder / comp / "config.json"
        configs[comp] = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        params[comp] = folder_params(folder, comp)
    if "transformer" not in configs:
        raise ModelError(f"{folder} has no transformer/ component: not a Wan pipeline")
    return spec_from_configs(name or str(folder), index, configs, params)


# Their parameter counts, from :func:`published_params` (``tests/test_vram.py`` recomputes them).
_T5, _VAE21 = 5_680_910_336, 126_892_531
PUBLISHED_PARAMS = {
    "Wan-AI/Wan2.1-VACE-1.3B-diffusers": {"transformer": 2_153_972_032, "vae": _VAE21},
    "Wan-AI/Wan2.1-VACE-14B-diffusers": {"transformer": 17_337_592_896, "vae": _VAE21},
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": {"transformer": 4_999_787_712, "vae": 704_688_668},
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": {
        "transformer": 16_394_878_784, "vae": _VAE21, "image_encoder": 630_766_080,
    },
}  # fmt: skip


def published_params(model_id: str) -> dict[str, int]:
    """Parameter counts of a published model, by building it on the meta device (seconds)."""
    entry = PUBLISHED[model_id]
    params = {"text_encoder": meta_params("UMT5EncoderModel", UMT5_XXL)}
    for comp in ("transformer", "vae", "image_encoder"):
        if comp in entry:
            params[comp] = meta_params(*entry[comp])
    return params


@cache
def published_spec(model_id: str) -> WanSpec:
    """The spec of a published model (see :data:`PUBLISHED`), from its configs alone."""
    entry = PUBLISHED[model_id]
    configs = {"text_encoder": UMT5_XXL}
    configs.update({c: entry[c][1] for c in ("transformer", "vae", "image_encoder") if c in entry})
    params = {"text_encoder": _T5, **PUBLISHED_PARAMS[model_id]}
    return spec_from_configs(model_id, entry, configs, params)


# ---------------------------------------------------------------------------------------------
# The estimates


def dit_activation_bytes(spec: WanSpec, work: Workload) -> float:
    """Peak live activation bytes of one transformer forward (batch 1; CFG runs sequentially)."""
    per_token = DIT_A * spec.dim + DIT_B * spec.ffn_dim + spec.vace_layers * spec.dim
    if spec.per_token_timesteps:
        per_token += PER_TOKEN_TIMESTEP * spec.dim
    return per_token * BF16 * work.tokens(spec)


def vae_activation_bytes(spec: WanSpec, work: Workload, tiled: bool) -> tuple[float, float]:
    """(decode, encode) peak bytes of the fp32 VAE for one call at the workload's size."""
    dec_px, enc_px, dec_tiled, enc_tiled = VAE_PEAKS.get(spec.z_dim, VAE_PEAKS[16])
    scale = spec.vae_base_dim / VAE_BASE.get(spec.z_dim, 96)  # activations grow with width
    dec_px, enc_px, dec_tiled, enc_tiled = (
        x * scale for x in (dec_px, enc_px, dec_tiled, enc_tiled)
    )
    px = work.width * work.height
    if tiled:
        return dec_tiled * GIB + 32 * px * work.frames, enc_tiled * GIB + 28 * px * work.frames
    # The decoded video and its postprocessed copy grow past the traced 17 frames.
    return dec_px * px + 24 * px * max(0, work.frames - 17), enc_px * px


def chunk_flops(spec: WanSpec, work: Workload) -> tuple[float, float]:
    """(transformer, VAE) FLOPs of one pipeline call (counted with torch's FlopCounterMode on
    the real modules: linear layers ~0.9 x 2 x params x tokens, attention 4 L^2 d per block)."""
    L = work.tokens(spec)
    dit = spec.params.get("transformer", 0)
    per_pass = 0.9 * 2 * dit * L + 4 * L * L * spec.dim * (spec.layers + spec.vace_layers)
    passes = work.steps * (2 if work.cfg else 1)
    dec_px, enc_px = VAE_FLOPS.get(spec.z_dim, VAE_FLOPS[16])
    scale = (spec.vae_base_dim / VAE_BASE.get(spec.z_dim, 96)) ** 2  # convolutions: width^2
    px = work.width * work.height * work.frames * scale
    return per_pass * passes, px * (dec_px + work.encodes * enc_px)


def _weights(spec: WanSpec, dtype_bytes: int) -> dict[str, float]:
    return {c: n * (FP32 if c == "vae" else dtype_bytes) for c, n in spec.params.items() if n > 0}


def _group_resident(spec: WanSpec, comp: str, nbytes: float, dtype_bytes: int) -> float:
    """Bytes resident under block-level group offload: two blocks (the running one and the
    prefetched one) plus what is not in a block (the text encoder's embedding table)."""
    if comp == "text_encoder":
        table = spec.text_vocab * spec.text_dim * dtype_bytes
        return table + 2 * (nbytes - table) / 24
    if comp.startswith("transformer"):
        return 2 * nbytes / (spec.layers + spec.vace_layers)
    return nbytes


def stage_peaks(
    spec: WanSpec, work: Workload, mode: str, tiled: bool, dtype_bytes: int = BF16
) -> dict[str, float]:
    """Estimated GPU bytes per stage (text, denoise, encode, decode) for ``mode``."""
    w = _weights(spec, dtype_bytes)
    dec, enc = vae_activation_bytes(spec, work, tiled)
    acts = {
        "text": TEXT_TOKENS * spec.text_dim * 4 * FP32,
        "denoise": dit_activation_bytes(spec, work),
        "encode": enc,
        "decode": dec,
    }
    users = {
        "text": ["text_encoder", "image_encoder"],
        "denoise": ["transformer", "transformer_2"],
        "encode": ["vae"],
        "decode": ["vae"],
    }
    encoders = w.get("text_encoder", 0.0)
    out = {}
    for stage, act in acts.items():
        if mode == "gpu":
            resident = sum(w.values())
        elif mode == "text-offload":
            # Transformer, VAE and image encoder stay; the text encoder visits once per prompt.
            resident = sum(w.values()) - encoders + (encoders if stage == "text" else 0.0)
        elif mode == "model-offload":
            # Offload hooks keep one model at a time; the two Wan 2.2 experts swap per step.
            resident = max((w.get(c, 0.0) for c in users[stage]), default=0.0)
        else:
            resident = max(
                (_group_resident(spec, c, w.get(c, 0.0), dtype_bytes) for c in users[stage]),
                default=0.0,
            )
        out[stage] = resident + act + CUDA_OVERHEAD
    return out


def estimate_seconds(
    spec: WanSpec, work: Workload, mode: str, tiled: bool = False, threads: int | None = None
) -> float:
    """Seconds for one pipeline call: FLOPs over :data:`GPU_FLOPS` (or the CPU rate), plus the
    weight traffic that offloading adds (group offload streams the transformer every pass).
    Prompt embeddings are cached, so the text encoder's one visit per prompt is left out."""
    dit, vae = chunk_flops(spec, work)
    if mode == "cpu":
        rate = CPU_FLOPS_PER_THREAD * (threads or max(1, min(os.cpu_count() or 1, 8)))
        return (dit + vae) / rate
    # The VAE runs in fp32 (TF32 convolutions): about 2.5x slower per FLOP than bf16; tiles
    # overlap, which recomputes about 30 % more.
    vae_s = 2.5 * vae / GPU_FLOPS * (1.3 if tiled else 1.0)
    w = _weights(spec, BF16)
    dit_bytes = w.get("transformer", 0.0) + w.get("transformer_2", 0.0)
    dit_s = dit / GPU_FLOPS
    if mode == "model-offload":
        dit_s += (dit_bytes + w.get("vae", 0.0)) / PCIE_BYTES_PER_S
    elif mode == "group-offload":
        # Streams overlap compute: a pass costs the longer of the two, plus the hooks' own
        # synchronisation (about 10 %).
        passes = work.steps * (2 if work.cfg else 1)
        dit_s = 1.1 * max(dit_s, passes * dit_bytes / PCIE_BYTES_PER_S)
    return dit_s + vae_s


def plan(
    spec: WanSpec,
    work: Workload,
    *,
    device: str,
    free_gb: float | None = None,
    budget_gb: float | None = None,
    offload: str = "auto",
    host_gb: float | None = None,
) -> VramPlan:
    """The fastest placement whose estimated peak fits, or ModelError with the numbers.

    device: "cpu" or "cuda..."; free_gb: free VRAM now (None: unknown, then ``budget_gb`` or
    24 GiB); budget_gb: a cap the user sets (--vram-gb); offload: "auto" or one of :data:`MODES`
    to force; host_gb: available host RAM (offload modes keep the offloaded weights there).
    A placement fits when its peak is at most :data:`MARGIN` of the budget; among those the
    fastest wins, then the one that offloads least.
    """
    if offload not in ("auto", *MODES):
        raise ModelError(f"offload must be auto or one of {', '.join(MODES)}; got {offload!r}")
    weights = _weights(spec, FP32 if device == "cpu" else BF16)
    total = sum(weights.values()) / GIB
    if device == "cpu":
        secs = estimate_seconds(spec, work, "cpu")
        return VramPlan("cpu", False, 0.0, total, total, None, secs)
    limits = [x for x in (free_gb, budget_gb) if x is not None]
    budget = min(limits) if limits else 24.0
    host_of = {
        "gpu": 0.0,
        "text-offload": weights.get("text_encoder", 0.0) / GIB,
        "model-offload": total,
        "group-offload": total,
    }
    options, refused = [], []
    for mode in MODES if offload == "auto" else (offload,):
        for tiled in (False, True):
            stages = {k: v / GIB for k, v in stage_peaks(spec, work, mode, tiled).items()}
            peak = max(stages.values())
            if peak > MARGIN * budget:
                refused.append((peak, mode))
            elif host_gb is not None and host_of[mode] > host_gb:
                refused.append((peak, f"{mode} ({host_of[mode]:.0f} GiB host RAM)"))
            else:
                secs = estimate_seconds(spec, work, mode, tiled)
                options.append((round(secs, 1), MODES.index(mode), tiled, peak, mode, stages))
    if not options:
        peak, mode = min(refused)
        raise ModelError(
            f"{spec.name} does not fit: {budget:.1f} GiB of GPU memory (keeping "
            f"{100 - 100 * MARGIN:.0f} % spare), and the smallest placement, {mode} with VAE "
            f"tiling, needs about {peak:.1f} GiB at {work.width}x{work.height}, {work.frames} "
            f"frames (estimate). Use fewer frames per chunk or a smaller size, free GPU memory, "
            f"or the offline backend --synthesis reproject"
        )
    secs, _, tiled, peak, mode, stages = min(options, key=lambda o: o[:3])
    return VramPlan(mode, tiled, peak, total, host_of[mode], budget, secs, stages)
