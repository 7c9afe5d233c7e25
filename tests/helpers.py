"""Shared test helpers: where the real data lives, and image metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PHOTOS = DATA / "photos"
TUM = DATA / "posed" / "tum_fr3_long_office_household"


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of uint8 images a, b over ``mask`` (all pixels when None)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    mse = float(((a - b) ** 2).mean()) if a.size else float("nan")
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def tum_trajectory(indices: list[int]) -> dict:
    """trajectory.json dict for TUM frames ``indices`` (640x480, real poses)."""
    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    frames = [{"K": cams["frames"][i]["K"], "c2w": cams["frames"][i]["c2w"]} for i in indices]
    return {
        "convention": "opencv_c2w",
        "width": cams["width"],
        "height": cams["height"],
        "frames": frames,
    }


def tum_frame_path(i: int) -> Path:
    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    return TUM / cams["frames"][i]["file"]


def tum_depth_path() -> Path:
    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    return TUM / cams["frames"][0]["depth"]


def tiny_clip_tokenizer(folder: Path, model_max_length: int = 77):
    """A CLIP tokenizer built with no download (STACK_NOTES): the 256 byte-level characters,
    their "</w>" forms and the two special tokens (514 entries), and a merges.txt holding only
    the version line. Written to ``folder``; ``model_max_length`` must be set (an unset one
    overflows when tokenising)."""
    from transformers import CLIPTokenizer

    bs = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length
    )


def tiny_dav2(folder: Path, kind: str = "relative") -> Path:
    """A tiny random Depth Anything V2 (``depth_estimation_type=kind``) saved to ``folder`` with
    its image processor, loadable by ``from_pretrained(folder)`` offline."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=56, patch_size=14, out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )  # fmt: skip
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1], fusion_hidden_size=16, head_hidden_size=8,
        depth_estimation_type=kind, max_depth=20,
    )  # fmt: skip
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14
    ).save_pretrained(folder)
    return folder


def build_tiny_inpaint(
    folder: Path, in_channels: int = 9, blocks: tuple[int, int] = (32, 64)
) -> Path:
    """Save a tiny random SD (inpainting when in_channels == 9) pipeline to ``folder``
    (``blocks``: the UNet's channels, to build a second, incompatible architecture)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=blocks,
        layers_per_block=1,
        sample_size=32,  # x vae factor 2 -> native 64 px, the test frame width
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    )
    tokenizer = tiny_clip_tokenizer(folder.parent / f"{folder.name}_tok_src")
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
