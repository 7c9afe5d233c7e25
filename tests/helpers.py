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


def tiny_t5_tokenizer():
    """A T5 tokenizer built with no download (STACK_NOTES): a ``tokenizers`` Unigram model
    trained on a few sentences, with T5's special tokens and no extra ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=64, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    sentences = ["a photo of a room", "a street in the rain", "the same scene, continuing"]
    tok.train_from_iterator(sentences, trainer)
    return T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        extra_ids=0, model_max_length=512,
    )  # fmt: skip


def tiny_wan(folder: Path, kind: str = "vace") -> Path:
    """A tiny random Wan pipeline with the real class layout, saved to ``folder``.

    kind: "vace" (WanVACEPipeline), "i2v" (Wan 2.1 WanImageToVideoPipeline with a CLIP image
    encoder) or "ti2v" (Wan 2.2 TI2V layout: WanPipeline with expand_timesteps and a 48-channel,
    16x VAE). A few hundred kB; loads with ``from_pretrained(folder)`` offline.
    """
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
        WanVACEPipeline,
        WanVACETransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = tiny_t5_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                   num_heads=4, relative_attention_num_buckets=8)
    )  # fmt: skip
    dit = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, text_dim=32,
               freq_dim=32, ffn_dim=64, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
               rope_max_seq_len=32)  # fmt: skip
    vae = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
               temperal_downsample=[False, True, True])  # fmt: skip
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=3.0,
    )  # fmt: skip
    common = dict(tokenizer=tokenizer, text_encoder=text_encoder, scheduler=scheduler)
    if kind == "vace":
        transformer = WanVACETransformer3DModel(**dit, in_channels=16, out_channels=16,
                                                num_layers=3, vace_layers=[0, 2],
                                                vace_in_channels=96)  # fmt: skip
        pipe = WanVACEPipeline(transformer=transformer, vae=AutoencoderKLWan(**vae), **common)
    elif kind == "i2v":
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        transformer = WanTransformer3DModel(**dit, in_channels=36, out_channels=16, num_layers=2,
                                            image_dim=32, added_kv_proj_dim=32)  # fmt: skip
        encoder = CLIPVisionModel(
            CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                             num_attention_heads=4, image_size=32, patch_size=8)
        )  # fmt: skip
        pipe = WanImageToVideoPipeline(
            transformer=transformer, vae=AutoencoderKLWan(**vae), image_encoder=encoder,
            image_processor=CLIPImageProcessor(crop_size=32, size=32), **common,
        )  # fmt: skip
    elif kind == "ti2v":
        transformer = WanTransformer3DModel(**dit, in_channels=48, out_channels=48, num_layers=2)
        vae22 = dict(vae, base_dim=8, decoder_base_dim=8, z_dim=48, is_residual=True,
                     in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                     scale_factor_temporal=4, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)  # fmt: skip
        pipe = WanPipeline(transformer=transformer, vae=AutoencoderKLWan(**vae22),
                           expand_timesteps=True, **common)  # fmt: skip
    else:
        raise ValueError(f"unknown tiny Wan kind {kind!r}")
    pipe.save_pretrained(folder)
    return folder
