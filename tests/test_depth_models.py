"""Weight-backed depth backends, offline: a tiny random Marigold depth pipeline and tiny Depth
Anything V2 models (relative and metric) built in code, saved to a temp dir and loaded back with
``from_pretrained(dir)`` under HF_HUB_OFFLINE=1, exactly as a user's download would be. Run on a
real photo, through the backend and through the CLI; bad folders give clear errors first.
Real weights: the ``gpu`` tests at the end (skipped without CUDA)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.depth import DepthError, create_depth_backend
from models.depth.layout import LayoutDepth
from models.geometry.cameras import intrinsics_from_fov
from tests import helpers
from tests.helpers import tiny_clip_tokenizer, tiny_dav2

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

PHOTOS = helpers.PHOTOS
PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"


def _real_photo(width: int = 64, height: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A real photo resized to ``width`` x ``height`` (uint8 RGB) and its K (60 deg fov)."""
    if not PHOTO.is_file():
        pytest.skip("shared photos not present")
    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    rgb = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1]
    return np.ascontiguousarray(rgb), intrinsics_from_fov(width, height, 60.0)


@pytest.fixture(scope="module")
def marigold_dir(tmp_path_factory) -> Path:
    """A tiny random MarigoldDepthPipeline folder (DDIM trailing, 2 steps, 64 px default)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        MarigoldDepthPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("marigold")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=8,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
        sample_size=32,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=514, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16, bos_token_id=512,
            eos_token_id=513, pad_token_id=513,
        )
    )  # fmt: skip
    scheduler = DDIMScheduler(
        timestep_spacing="trailing", prediction_type="v_prediction", clip_sample=False,
        beta_schedule="scaled_linear", set_alpha_to_one=False,
    )  # fmt: skip
    pipe = MarigoldDepthPipeline(
        unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
        tokenizer=tiny_clip_tokenizer(root / "tokenizer-src", 16), prediction_type="depth",
        scale_invariant=True, shift_invariant=True, default_denoising_steps=2,
        default_processing_resolution=64,
    )  # fmt: skip
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from models.manager import MANAGER

    yield
    MANAGER.clear()


# ---------------------------------------------------------------------------------------------
# Marigold


def test_marigold_on_real_photo(marigold_dir):
    rgb, K = _real_photo()
    be = create_depth_backend("marigold", model=str(marigold_dir), device="cpu", seed=3)
    assert be.steps == 2 and be.processing_resolution == 64  # the model's own defaults
    r1, r2 = be.estimate(rgb, K), be.estimate(rgb, K)
    assert r1.depth.shape == (48, 64) and r1.depth.dtype == np.float32
    assert np.isfinite(r1.depth).all() and (r1.depth > 0).all()
    assert np.array_equal(r1.depth, r2.depth)  # same seed -> same depth
    prior_policy = LayoutDepth().estimate(rgb, K).scale_policy
    assert r1.scale_policy in (
        f"{prior_policy}-via-layout-affine",
        f"{prior_policy}-via-layout-median",
    )
    assert r1.meta["fit"]["kind"] in r1.scale_policy
    assert np.allclose(r1.confidence[r1.confidence > 0.59], 0.6, atol=0.01)  # no ensemble
    json.dumps(r1.meta)
    other = create_depth_backend("marigold", model=str(marigold_dir), device="cpu", seed=4)
    assert not np.array_equal(other.estimate(rgb, K).depth, r1.depth)


def test_marigold_ensemble_confidence(marigold_dir):
    rgb, K = _real_photo()
    be = create_depth_backend(
        "marigold", model=str(marigold_dir), device="cpu", ensemble_size=3, steps=1
    )
    res = be.estimate(rgb, K)
    assert res.depth.shape == (48, 64) and (res.depth > 0).all()
    assert res.meta["ensemble_size"] == 3 and res.meta["steps"] == 1
    assert res.confidence.std() > 1e-4  # from the members' spread, not a constant


def test_affine_alignment_recovers_floor_geometry():
    """A prediction that is an exact affine map of the prior's floor depth is put back at the
    prior's metric scale (camera 1.6 m above the floor)."""
    from models.depth.marigold import align_to_prior

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:24] = (150, 110, 80)
    rgb[24:] = (120, 120, 120)
    K = intrinsics_from_fov(64, 48, 90.0)
    prior = LayoutDepth().estimate(rgb, K)
    pred = (prior.depth - 0.5) / 7.0  # affine-invariant version of the prior
    depth, fit = align_to_prior(pred, prior, K)  # the prior's own camera height
    assert fit["kind"] == "affine" and fit["region"] == "floor"
    assert fit["a"] == pytest.approx(7.0, rel=0.02) and fit["b"] == pytest.approx(0.5, abs=0.05)
    floor = prior.confidence > 0.2
    assert np.allclose(depth[floor], prior.depth[floor], rtol=0.02)


def test_marigold_through_cli(marigold_dir, tmp_path):
    from studio.cli import main

    if not PHOTO.is_file():
        pytest.skip("shared photos not present")
    out = tmp_path / "world"
    args = ["generate", str(PHOTO), "--out", str(out), "--depth", "marigold",
            "--model", str(marigold_dir), "--frames", "2", "--width", "64", "--quiet"]  # fmt: skip
    assert main(args) == 0
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["depth"] == "marigold"
    assert re.fullmatch(
        r"camera-height-[0-9.]+m-[a-z-]+-via-layout-(affine|median)", world["scale_policy"]
    )
    d0 = np.load(out / world["frames"][0]["depth"])
    assert d0.shape == (world["height"], world["width"]) and (d0 > 0).all()


def test_marigold_missing_tokenizer(marigold_dir, tmp_path):
    bad = tmp_path / "no-tokenizer"
    shutil.copytree(marigold_dir, bad)
    for f in (bad / "tokenizer").iterdir():
        if f.name != "tokenizer_config.json":
            f.unlink()
    with pytest.raises(DepthError, match="tokenizer"):
        create_depth_backend("marigold", model=str(bad))
    shutil.rmtree(bad / "tokenizer")
    with pytest.raises(DepthError, match="tokenizer"):
        create_depth_backend("marigold", model=str(bad))


def test_marigold_wrong_pipeline_class(marigold_dir, tmp_path):
    bad = tmp_path / "normals"
    shutil.copytree(marigold_dir, bad)
    index = json.loads((bad / "model_index.json").read_text())
    index["_class_name"] = "MarigoldNormalsPipeline"
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(DepthError, match="not a Marigold depth pipeline"):
        create_depth_backend("marigold", model=str(bad))
    (bad / "model_index.json").unlink()  # a transformers-style folder: no model_index.json
    with pytest.raises(DepthError, match="not a Marigold depth pipeline"):
        create_depth_backend("marigold", model=str(bad))


def test_marigold_missing_model_names_offline_backend(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(DepthError, match="--depth layout") as info:
        create_depth_backend("marigold", model=str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(DepthError, match="marigold-depth-v1-1.*--depth layout"):
        create_depth_backend("marigold", local_files_only=True)  # default hub id, not cached


@pytest.mark.parametrize("opts", [{"steps": 0}, {"ensemble_size": 0}, {"bogus": 1}])
def test_marigold_bad_options(opts):
    with pytest.raises(DepthError):
        create_depth_backend("marigold", model="/nonexistent", **opts)


# ---------------------------------------------------------------------------------------------
# Depth Anything V2: relative and metric variants


def test_dav2_metric_variant_is_not_rescaled(tmp_path):
    rgb, K = _real_photo()
    folder = tiny_dav2(tmp_path / "metric", "metric")
    be = create_depth_backend(
        "depth-anything-v2", model=str(folder), variant="metric-indoor", device="cpu"
    )
    res = be.estimate(rgb, K)
    assert res.scale_policy == "metric-model" and res.meta["variant"] == "metric-indoor"
    raw = be.predict_raw(rgb)
    assert np.allclose(res.depth, np.maximum(raw, 1e-3))  # the model's metres, as they are
    assert "scale_from_layout" not in res.meta
    # A metric checkpoint is metric whatever the variant: the config decides.
    plain = create_depth_backend("depth-anything-v2", model=str(folder), device="cpu")
    assert plain.estimate(rgb, K).scale_policy == "metric-model"


def test_dav2_relative_uses_camera_height(tmp_path):
    rgb, K = _real_photo()
    folder = tiny_dav2(tmp_path / "relative", "relative")
    be = create_depth_backend("depth-anything-v2", model=str(folder), device="cpu")
    res = be.estimate(rgb, K)
    prior = LayoutDepth().estimate(rgb, K)
    assert res.scale_policy == f"{prior.scale_policy}-via-layout"
    assert res.meta["camera_height_m"] == prior.meta["camera_height_m"]
    assert res.meta["scale_from_layout"] > 0 and (res.depth > 0).all()
    # Loaded once: the manager hands the same model to a second backend.
    again = create_depth_backend("depth-anything-v2", model=str(folder), device="cpu")
    assert again.model is be.model
    with pytest.raises(DepthError, match="relative depth.*metric"):
        create_depth_backend(
            "depth-anything-v2", model=str(folder), variant="metric-outdoor", device="cpu"
        )


def test_dav2_variant_picks_default_id():
    with pytest.raises(DepthError, match="Metric-Outdoor-Small-hf.*--depth layout"):
        create_depth_backend("depth-anything-v2", variant="metric-outdoor", local_files_only=True)
    with pytest.raises(DepthError, match="unknown Depth Anything variant"):
        create_depth_backend("depth-anything-v2", variant="metric-underwater")


# ---------------------------------------------------------------------------------------------
# Real weights (GPU machines with the weights downloaded or internet)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA and the real weights")
@pytest.mark.parametrize(
    "backend, opts",
    [
        ("marigold", {}),
        ("depth-anything-v2", {}),
        ("depth-anything-v2", {"variant": "metric-indoor"}),
    ],
)
def test_real_weights_on_gpu(backend, opts, monkeypatch):
    import time

    from models.depth.depth_anything import VARIANT_MODELS
    from models.depth.marigold import DEFAULT_MODEL
    from models.manager import weights_present

    model = (
        DEFAULT_MODEL if backend == "marigold" else VARIANT_MODELS[opts.get("variant", "relative")]
    )
    if weights_present(model):
        pass  # loads from the hub cache, offline
    elif (os.environ.get("LOCI_GPU_DOWNLOAD") or "") == "1":
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # allowed to download
    else:
        pytest.skip(f"{model} is not in the hub cache (set LOCI_GPU_DOWNLOAD=1 to fetch it)")
    rgb, K = _real_photo(640, 480)
    be = create_depth_backend(backend, device="cuda", **opts)
    be.estimate(rgb, K)  # warm-up
    t = time.perf_counter()
    res = be.estimate(rgb, K)
    seconds = time.perf_counter() - t
    print(f"{backend} {opts}: {seconds:.2f} s at 640x480, policy {res.scale_policy}")
    assert res.depth.shape == (480, 640) and (res.depth > 0).all()
    # A living room: most of it within a few metres.
    assert 0.5 < float(np.median(res.depth)) < 10.0


def test_dav2_through_cli(tmp_path):
    from studio.cli import main
    from tests.helpers import PHOTOS

    model = tiny_dav2(tmp_path / "dav2", "relative")
    out = tmp_path / "w"
    rc = main(
        [
            "generate",
            str(PHOTOS / "interior_office_03_dsine.png"),
            "--out",
            str(out),
            "--depth",
            "depth-anything-v2",
            "--depth-model",
            str(model),
            "--frames",
            "3",
            "--width",
            "64",
            "--quiet",
        ]
    )
    assert rc == 0
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["depth"] == "depth-anything-v2"
    assert re.fullmatch(r"camera-height-[0-9.]+m-[a-z-]+-via-layout", world["scale_policy"])
