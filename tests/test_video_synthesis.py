"""The ``video`` synthesis backend: a tiny random Stable Video Diffusion pipeline built in code,
saved, and loaded back through the backend offline; warped-latent guidance; bad folders."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.geometry.fill import fill_depth, inpaint_rgb
from models.manager import MANAGER, ModelError, weights_present
from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from models.synthesis import create_synthesis_backend
from models.synthesis import video as video_mod  # registers "video"
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"


def build_tiny_svd(path: Path) -> Path:
    """A randomly initialised SVD pipeline (a few MB) saved as a diffusers folder."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    # SVD always resizes the conditioning image to 224 px for its image encoder.
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            intermediate_size=37,
            patch_size=32,
        )
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def svd_dir(tmp_path_factory) -> Path:
    return build_tiny_svd(tmp_path_factory.mktemp("tiny-svd"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def _explore(svd_dir: Path, seed: int = 0):
    """Seed a 64 px world and orbit 3 new frames; returns (events, requests, results, calls
    seen when each event arrived)."""
    backend = create_synthesis_backend(
        "video", model=str(svd_dir), steps=2, chunk_size=2, guidance=1.0
    )
    requests, results = [], []
    inner = backend.synthesize

    def spy(reqs):
        requests.extend(reqs)
        res = inner(reqs)
        results.extend(res)
        return res

    backend.synthesize = spy  # instance attribute shadows the method
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=64, seed=seed))
    world = pipe.seed(_photo())
    traj = make_preset("orbit", world.cameras[0], 4, up=world.up, scene_depth=world.scene_depth)
    events, calls_seen = [], []
    for ev in pipe.explore(world, traj.cameras[1:]):
        events.append(ev)
        calls_seen.append(len(requests) // 2 + len(requests) % 2)
    return world, events, requests, results, calls_seen


def test_video_backend_in_world_pipeline(svd_dir):
    world, events, requests, results, calls_seen = _explore(svd_dir)
    H, W = world.height, world.width
    assert W == 64 and len(events) == 3 and [e.index for e in events] == [1, 2, 3]
    # Frames stream per chunk: frames 1-2 arrive after the first call, frame 3 after the second.
    assert calls_seen == [1, 1, 2]
    painted_change = []
    for ev, req, res in zip(events, requests, results, strict=True):
        assert ev.rgb.shape == (H, W, 3) and ev.rgb.dtype == np.uint8
        assert ev.depth.shape == (H, W) and np.isfinite(ev.depth).all()
        assert res.rgb.shape == (H, W, 3) and res.depth_hint is None
        assert torch.equal(res.source_mask, req.valid)
        # Covered pixels: the warped memory, bit for bit (float result and the uint8 frame).
        v = req.valid
        assert torch.equal(res.rgb[v], req.warped_rgb[v])
        expect = (req.warped_rgb * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(ev.rgb[v.numpy()], expect[v.numpy()])
        assert float(v.float().mean()) > 0.3
        if bool(v.all()):
            continue  # the orbit's last frame is back where memory covers it all
        # Painted pixels: the model's, not the hole filler's.
        filled = inpaint_rgb(req.warped_rgb, v, fill_depth(req.warped_depth, v))
        painted_change.append(float((res.rgb[~v] - filled[~v]).abs().mean()))
        assert res.meta["family"] == "svd" and 0 <= res.meta["guided_cells"] <= 1
    assert len(painted_change) >= 2 and min(painted_change) > 0.01
    # Same seed, same world.
    _, again, *_ = _explore(svd_dir)
    for a, b in zip(events, again, strict=True):
        assert np.array_equal(a.rgb, b.rgb)


def _chunk_inputs(n: int = 2, H: int = 48, W: int = 64) -> torch.Tensor:
    img = torch.from_numpy(np.asarray(Image.open(PHOTO).convert("RGB").resize((W, H)))) / 255.0
    return torch.stack([img.float()] * n)


def test_guidance_full_and_empty_masks(svd_dir):
    backend = video_mod.VideoSynthesis(model=str(svd_dir), steps=2, chunk_size=2, guidance=1.0)
    filled = _chunk_inputs()
    n, H, W = filled.shape[:3]
    # Everything covered: the final latents are the memory latents, exactly, and the decoded
    # chunk is the VAE's reconstruction of the memory.
    full = backend.run_chunk(filled, torch.ones(n, H, W, dtype=torch.bool), seed=5)
    assert bool(full.cover.all())
    assert torch.equal(full.latents, full.z_mem)
    recon = backend.pipe.decode_latents(full.z_mem, n, n)[0].permute(1, 0, 2, 3) / 2 + 0.5
    assert torch.allclose(full.frames.permute(0, 3, 1, 2), recon.clamp(0, 1), atol=1e-5)
    # Nothing covered: the unguided pipeline's output for the same seed, bit for bit.
    empty = backend.run_chunk(filled, torch.zeros(n, H, W, dtype=torch.bool), seed=5)
    cond = (filled[0] * 255).round().to(torch.uint8).numpy()
    kwargs = backend.pipeline_kwargs(cond, n, seed=5)
    kwargs["output_type"] = "latent"
    assert torch.equal(empty.latents, backend.pipe(**kwargs).frames.float())
    assert not torch.equal(empty.latents, full.latents)
    # Partial cover: covered cells end at z_mem, the others are the model's.
    valid = torch.ones(n, H, W, dtype=torch.bool)
    valid[:, :, W // 2 :] = False
    valid[:, 3, 5] = False  # one uncovered pixel releases its whole latent cell
    part = backend.run_chunk(filled, valid, seed=5)
    cover = part.cover[None, :, None].expand_as(part.latents)
    assert torch.equal(part.latents[cover], part.z_mem[cover])
    assert not bool(part.cover[:, 3 // 2, 5 // 2].any())  # VAE factor 2 in the tiny model
    assert not torch.equal(part.latents[~cover], part.z_mem[~cover])


def test_latent_cover_is_conservative():
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    valid[0, 9, 2] = False
    cover = video_mod.latent_cover(valid, (2, 2))
    assert cover.tolist() == [[[True, True], [False, True]]]
    # Non-integer ratios: every pixel window is rounded outwards.
    odd = torch.ones(1, 10, 10, dtype=torch.bool)
    odd[0, 4, 4] = False
    assert not bool(video_mod.latent_cover(odd, (3, 3))[0, 1, 1])


def test_bad_folders(svd_dir, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    # A working diffusers pipeline that is not image-to-video.
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(ModelError, match="not an image-to-video model"):
        create_synthesis_backend("video", model=str(tmp_path / "ddpm"))
    # Missing folder / hub id not in the cache while offline: the way out is named.
    with pytest.raises(ModelError, match="--synthesis reproject"):
        create_synthesis_backend("video", model=str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="--synthesis reproject"):
        create_synthesis_backend("video", model="loci-test/no-such-video-model")
    # An incomplete download: a component folder is gone.
    broken = tmp_path / "broken"
    shutil.copytree(svd_dir, broken)
    shutil.rmtree(broken / "image_encoder")
    with pytest.raises(ModelError, match="image_encoder"):
        create_synthesis_backend("video", model=str(broken))
    # SVD with an image encoder that cannot take the 224 px the pipeline feeds it.
    cfg_file = broken.parent / "svd64"
    shutil.copytree(svd_dir, cfg_file)
    cfg = json.loads((cfg_file / "image_encoder" / "config.json").read_text())
    cfg["image_size"] = 64
    (cfg_file / "image_encoder" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="224"):
        create_synthesis_backend("video", model=str(cfg_file))
    # Recognised families without an implementation say so, after checking their tokenizer.
    cog = tmp_path / "cog"
    (cog / "tokenizer").mkdir(parents=True)
    (cog / "model_index.json").write_text(
        json.dumps({"_class_name": "CogVideoXImageToVideoPipeline", "tokenizer": ["t", "T"]})
    )
    with pytest.raises(ModelError, match="no tokenizer files"):
        create_synthesis_backend("video", model=str(cog))
    (cog / "tokenizer" / "spiece.model").write_bytes(b"x")
    with pytest.raises(ModelError, match="recognised"):
        create_synthesis_backend("video", model=str(cog))


@pytest.mark.gpu
@pytest.mark.slow
def test_real_svd_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = os.environ.get("LOCI_VIDEO_MODEL", video_mod.DEFAULT_MODEL)
    if not weights_present(model):
        pytest.skip(f"weights for {model} are not in the local cache")
    MANAGER.clear()
    backend = create_synthesis_backend("video", model=model, steps=12, chunk_size=4)
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=512))
    world = pipe.seed(_photo())
    traj = make_preset("orbit", world.cameras[0], 5, up=world.up, scene_depth=world.scene_depth)
    events = list(pipe.explore(world, traj.cameras[1:]))
    assert len(events) == 4
    for ev in events:
        assert ev.rgb.shape == (world.height, world.width, 3)
        assert ev.rgb.std() > 5  # not a flat or black frame


def test_video_backend_through_the_cli(svd_dir, tmp_path):
    from studio.cli import main

    out = tmp_path / "w"
    rc = main(
        [
            "generate",
            str(PHOTO),
            "--out",
            str(out),
            "--synthesis",
            "video",
            "--model",
            str(svd_dir),
            "--steps",
            "2",
            "--path",
            "orbit",
            "--frames",
            "5",
            "--width",
            "64",
            "--quiet",
        ]
    )
    assert rc == 0
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["synthesis"] == "video"
    assert [f["index"] for f in world["frames"]] == [0, 1, 2, 3, 4]
    assert any(f["routed_coverage"] < 1.0 for f in world["frames"])  # something was painted
