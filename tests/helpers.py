"""Shared test helpers: where the real data lives, and image metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The real data (../shared/data, see its README); LOCI_TEST_DATA points elsewhere.
DATA = Path(os.environ.get("LOCI_TEST_DATA") or ROOT.parent / "shared" / "data")
DATA_REASON = (
    f"needs the real data in {DATA} (8 photos, the TUM fr3 RGB-D sequence with mocap poses, "
    "single RGB-D frames: the shared/data folder next to the repository, see its README; "
    "or set LOCI_TEST_DATA)"
)
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


TRAIN_BASE = dict(steps=8, batch_size=2, lr=1e-2, warmup_steps=0, rank=4, alpha=8, holdout=0.2,
                  min_routed_psnr=0, checkpoint_every=3, eval_every=4, eval_samples=4)  # fmt: skip


def make_trainer(model: Path, data: Path, run: Path, **settings):
    """A ``loci train`` Trainer on a fresh painter (``TRAIN_BASE`` settings, overridden)."""
    from models.train.config import load_config
    from models.train.trainer import Trainer, build_painter
    from storage.train.shards import SampleDataset

    config = load_config(None, {**TRAIN_BASE, "model": str(model), **settings})
    ds = SampleDataset(data)
    return Trainer(config, build_painter(config, (ds.width, ds.height)), ds, run)


def train_losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training step a run logged."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if r["split"] == "train"]
