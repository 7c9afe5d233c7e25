"""The ``sd-inpaint`` synthesis backend, run offline on a tiny random SD inpainting pipeline.

The pipeline is built in code (UNet with 9 input channels, tiny VAE, tiny CLIP text encoder, a
byte-level CLIP tokenizer from a local vocab), saved with ``save_pretrained`` and loaded back by
the backend from that folder under ``HF_HUB_OFFLINE=1``: the same loading code as with real
weights. Random weights paint noise, so the tests check the contract (shapes, covered pixels
routed bit for bit, masked pixels generated, determinism) and the errors, not the look.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.manager import ModelError, weights_present
from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from models.synthesis import (
    SynthesisRequest,
    create_synthesis_backend,
    sd_inpaint,  # registers "sd-inpaint"
)
from tests.helpers import PHOTOS, build_tiny_inpaint

PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"


def _photo(width: int = 64) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    h = round(img.shape[0] * width / img.shape[1] / 8) * 8
    return cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)


def _request(seed: int = 0) -> SynthesisRequest:
    """A real photo with a never-seen band on the right and a hole in the middle."""
    rgb = torch.from_numpy(_photo()).float() / 255.0
    H, W = rgb.shape[:2]
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, W - 16 :] = False
    valid[12:28, 20:36] = False
    warped = torch.where(valid[..., None], rgb, torch.zeros_like(rgb))
    depth = torch.where(valid, torch.full((H, W), 2.0), torch.zeros(H, W))
    return SynthesisRequest(1, None, warped, depth, valid, seed)  # camera unused by the backend


# ---------------------------------------------------------------------------------------------
def test_backend_routes_covered_pixels_and_paints_the_rest(tiny):
    backend = create_synthesis_backend("sd-inpaint", model=str(tiny), steps=2)
    assert backend.name == "sd-inpaint" and backend.chunk_size == 1
    req = _request(seed=7)
    t0 = time.perf_counter()
    (res,) = backend.synthesize([req])
    seconds = time.perf_counter() - t0
    H, W = req.valid.shape
    assert res.rgb.shape == (H, W, 3) and res.rgb.dtype == torch.float32
    assert res.depth_hint is None and torch.equal(res.source_mask, req.valid)
    # Covered pixels: bit for bit the warped memory (tolerance 0).
    assert torch.equal(res.rgb[req.valid], req.warped_rgb[req.valid])
    # Masked pixels: generated, not the pre-filled init image.
    init = sd_inpaint.inpaint_rgb(
        req.warped_rgb, req.valid, sd_inpaint.fill_depth(req.warped_depth, req.valid)
    )
    diff = (res.rgb - init).abs().amax(-1)[~req.valid]
    assert float(diff.max()) > 0.05
    assert float(res.rgb.min()) >= 0 and float(res.rgb.max()) <= 1
    assert res.meta["work_size"] == [W, H] and res.meta["painted"] > 0.2
    assert seconds < 30, seconds  # about 0.1-0.3 s when the machine is idle

    # Determinism: same seed -> identical; another seed -> other painted pixels.
    (again,) = backend.synthesize([_request(seed=7)])
    assert torch.equal(again.rgb, res.rgb)
    (other,) = backend.synthesize([_request(seed=8)])
    assert torch.equal(other.rgb[req.valid], res.rgb[req.valid])
    assert float((other.rgb - res.rgb).abs()[~req.valid].max()) > 0.01

    # Nothing covered and everything covered are both handled.
    full = _request()
    full.valid[:] = True
    (r_full,) = backend.synthesize([full])
    assert torch.equal(r_full.rgb, full.warped_rgb)
    empty = _request()
    empty.valid[:] = False
    (r_empty,) = backend.synthesize([empty])
    assert r_empty.rgb.shape == (H, W, 3) and not bool(r_empty.source_mask.any())


def test_feather_only_touches_the_painted_side(tiny):
    backend = create_synthesis_backend("sd-inpaint", model=str(tiny), steps=2, feather=3)
    req = _request()
    gen = torch.ones_like(req.warped_rgb)
    init = torch.zeros_like(req.warped_rgb)
    out = backend._feather(gen, init, req.valid)
    # Right band (never seen from column W-16 on): ramps 1/4, 2/4, 3/4, then fully generated.
    row = out[-3, :, 0]
    W = row.shape[0]
    assert row[W - 16 : W - 12].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])


class _Spy:
    """Wraps a backend and keeps the requests and results the pipeline exchanged with it."""

    def __init__(self, inner):
        self.inner, self.name, self.chunk_size = inner, inner.name, inner.chunk_size
        self.calls: list = []

    def synthesize(self, requests):
        results = self.inner.synthesize(requests)
        self.calls.extend(zip(requests, results, strict=True))
        return results


def _explore(tiny: Path, seed: int) -> tuple[list, _Spy]:
    spy = _Spy(create_synthesis_backend("sd-inpaint", model=str(tiny), steps=2))
    pipe = WorldPipeline(synthesis=spy, config=PipelineConfig(width=64, seed=seed))
    world = pipe.seed(_photo(256))
    # 4 cameras: the photo, +22, -22 degrees, and back to the photo's pose (fully covered).
    traj = make_preset("orbit", world.cameras[0], 4, up=world.up, scene_depth=world.scene_depth)
    return list(pipe.explore(world, traj.cameras[1:])), spy


def test_pipeline_orbit_with_sd_inpaint(tiny):
    events, spy = _explore(tiny, seed=3)
    assert len(events) == 3 and len(spy.calls) == 3
    for ev, (req, res) in zip(events, spy.calls, strict=True):
        H, W = req.valid.shape
        assert ev.rgb.shape == (H, W, 3) and ev.rgb.dtype == np.uint8 and W == 64
        assert ev.depth.shape == (H, W) and np.isfinite(ev.depth).all()
        covered = req.valid.numpy()
        assert covered.mean() > 0.3
        memory8 = (req.warped_rgb * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(ev.rgb[covered], memory8[covered])
        assert torch.equal(res.source_mask, req.valid)
    # The swings open never-seen regions that get painted.
    assert all(0 < req.valid.float().mean() < 1 for req, _ in spy.calls[:2])
    again, _ = _explore(tiny, seed=3)
    for a, b in zip(events, again, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    other, spy2 = _explore(tiny, seed=4)
    painted = ~spy2.calls[0][0].valid.numpy()
    assert np.abs(other[0].rgb.astype(int) - events[0].rgb.astype(int))[painted].max() > 0


def test_cli_generate_with_sd_inpaint(tiny, tmp_path):
    from studio.cli import main

    out = tmp_path / "world"
    args = ["generate", str(PHOTO), "--out", str(out), "--synthesis", "sd-inpaint"]
    opts = ["--model", str(tiny), "--steps", "2", "--frames", "4", "--width", "64", "--quiet"]
    opts += ["--path", "orbit", "--seed", "5"]
    rc = main([*args, *opts])
    assert rc in (0, None)
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["synthesis"] == "sd-inpaint" and len(world["frames"]) == 4
    painted = 0.0
    for f in world["frames"]:
        img = cv2.imread(str(out / f["rgb"]))
        assert img.shape == (world["height"], world["width"], 3)
        painted += float((cv2.imread(str(out / f["source_mask"]), 0) == 0).mean())
    assert painted > 0  # the orbit swing opened regions the model painted


# ---------------------------------------------------------------------------------------------
# Bad input: each fails at construction, before any generation.
@pytest.fixture
def no_generation(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("generation ran before the model was validated")

    monkeypatch.setattr(sd_inpaint, "_run", boom)


def _copy(tiny: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny, dst)
    return dst


def test_missing_tokenizer_is_reported(tiny, tmp_path, no_generation):
    bad = _copy(tiny, tmp_path)
    shutil.rmtree(bad / "tokenizer")
    with pytest.raises(ModelError, match="tokenizer"):
        create_synthesis_backend("sd-inpaint", model=str(bad), steps=2)


def test_empty_tokenizer_is_reported(tiny, tmp_path, no_generation):
    # tokenizer/ exists but holds no vocabulary: transformers would build an empty tokenizer.
    bad = _copy(tiny, tmp_path)
    for f in (bad / "tokenizer").iterdir():
        if f.name != "tokenizer_config.json":
            f.unlink()
    with pytest.raises(ModelError, match="tokenizer/ has no vocabulary"):
        create_synthesis_backend("sd-inpaint", model=str(bad), steps=2)


def test_tokenizer_probe_catches_a_specials_only_tokenizer(tiny, tmp_path):
    # The post-load check, for folders whose vocabulary file exists but is useless.
    from transformers import CLIPTokenizer

    empty = tmp_path / "tok"
    empty.mkdir()
    tok = CLIPTokenizer.from_pretrained(empty)  # no files: silently only the special tokens
    assert not sd_inpaint._tokenizer_works(tok)
    assert sd_inpaint._tokenizer_works(CLIPTokenizer.from_pretrained(tiny / "tokenizer"))


def test_text_to_image_model_is_rejected(tmp_path, offline, no_generation):
    t2i = build_tiny_inpaint(tmp_path / "t2i", in_channels=4)
    with pytest.raises(ModelError, match="not an inpainting model"):
        create_synthesis_backend("sd-inpaint", model=str(t2i))


def test_wrong_pipeline_class_is_rejected(tiny, tmp_path, no_generation):
    bad = _copy(tiny, tmp_path)
    index = json.loads((bad / "model_index.json").read_text())
    index["_class_name"] = "MarigoldDepthPipeline"
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="not a Stable Diffusion inpainting"):
        create_synthesis_backend("sd-inpaint", model=str(bad))


def test_missing_model_names_the_offline_backend(tmp_path, offline, no_generation):
    with pytest.raises(ModelError, match="--synthesis reproject"):
        create_synthesis_backend("sd-inpaint", model=str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="--synthesis reproject"):
        create_synthesis_backend("sd-inpaint", model="nobody/not-a-real-inpainting-model")


def test_vram_budget(tiny):
    params = sum(sd_inpaint.weight_bytes(tiny, torch.float32, ("unet", "vae", "text_encoder")))
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
    unet_bytes = sum(p.numel() for p in unet.parameters()) * 4
    assert sd_inpaint.weight_bytes(tiny, torch.float32, ("unet",)) == [unet_bytes]
    half = sum(sd_inpaint.weight_bytes(tiny, torch.bfloat16, ("unet", "vae", "text_encoder")))
    assert half * 2 == params
    gib = 2**30
    assert sd_inpaint.plan_placement(5 * gib, 4 * gib, None, False) == "gpu"  # CPU
    assert sd_inpaint.plan_placement(5 * gib, 4 * gib, 8 * gib, False) == "gpu"
    assert sd_inpaint.plan_placement(5 * gib, 4 * gib, 4 * gib, True) == "offload"
    with pytest.raises(ModelError, match="accelerate"):
        sd_inpaint.plan_placement(5 * gib, 4 * gib, 4 * gib, False)
    with pytest.raises(ModelError, match="GiB"):
        sd_inpaint.plan_placement(5 * gib, 4 * gib, 2 * gib, True)


# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_sd_inpainting_on_gpu(tmp_path):
    if not weights_present(sd_inpaint.DEFAULT_MODEL):
        pytest.skip(f"{sd_inpaint.DEFAULT_MODEL} is not in the local Hugging Face cache")
    backend = create_synthesis_backend("sd-inpaint", steps=20)
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=512, seed=0))
    world = pipe.seed(_photo(512))
    traj = make_preset("orbit", world.cameras[0], 3, up=world.up, scene_depth=world.scene_depth)
    t0 = time.perf_counter()
    events = list(pipe.explore(world, traj.cameras[1:]))
    per_frame = (time.perf_counter() - t0) / len(events)
    assert all(e.rgb.shape == (world.height, world.width, 3) for e in events)
    painted = [~e.source_mask for e in events]
    # Real weights paint textured content, not a flat fill.
    assert all(float(e.rgb[p].std()) > 5 for e, p in zip(events, painted, strict=True) if p.any())
    print(f"sd-inpaint 512 px, 20 steps: {per_frame:.2f} s/frame")
