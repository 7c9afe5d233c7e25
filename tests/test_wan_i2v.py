"""The ``wan-i2v`` painter: tiny random Wan 2.1 I2V and Wan 2.2 TI2V pipelines built in code,
saved, and loaded back through the backend offline; warped-latent guidance over Wan's 4-frame
latent groups; bad folders."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.geometry.fill import fill_depth, inpaint_rgb
from models.manager import ModelError, weights_present
from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from models.synthesis import create_synthesis_backend
from models.synthesis.wan_i2v import latent_cover
from tests.helpers import PHOTOS, tiny_wan

PHOTO = PHOTOS / "interior_office_03_dsine.png"


@pytest.fixture(scope="module", params=["i2v", "ti2v"])
def wan_dir(request, tmp_path_factory) -> Path:
    return tiny_wan(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_wan_i2v_world_is_guided_and_routes_exactly(wan_dir):
    from PIL import Image

    backend = create_synthesis_backend("wan-i2v", model=str(wan_dir), steps=2, chunk_size=4,
                                       area="native")  # fmt: skip
    calls, requests, results = [], [], []
    inner_gen, inner_synth = backend._generate, backend.synthesize

    def gen(inputs, first, size):
        out = inner_gen(inputs, first, size)
        calls.append((inputs, backend.last_cover.clone()))
        return out

    def synth(reqs):
        requests.extend(reqs)
        results.extend(inner_synth(reqs))
        return results[-len(reqs) :]

    backend._generate, backend.synthesize = gen, synth
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=64))
    world = pipe.seed(np.asarray(Image.open(PHOTO).convert("RGB")))
    traj = make_preset("orbit", world.cameras[0], 9, up=world.up, scene_depth=world.scene_depth)
    events = list(pipe.explore(world, traj.cameras[1:]))
    assert len(events) == 8 and len(calls) == 2
    ti2v = json.loads((wan_dir / "model_index.json").read_text()).get("expand_timesteps", False)
    assert backend.flow_shift == (5.0 if ti2v else 3.0)
    changed = []
    for req, res in zip(requests, results, strict=True):
        v = req.valid
        assert torch.equal(res.source_mask, v) and torch.equal(res.rgb[v], req.warped_rgb[v])
        if not bool(v.all()):
            fill = inpaint_rgb(req.warped_rgb, v, fill_depth(req.warped_depth, v))
            changed.append(float((res.rgb[~v] - fill[~v]).abs().mean()))
    assert changed and min(changed) > 0.01
    for inputs, cover in calls:
        # Frame 0 (the last finished frame, the conditioning image) is fully covered; some
        # later cells are covered (memory), some are not (holes).
        assert len(inputs.video) == 5 and cover.shape[0] == 2
        assert bool(cover[0].all()) and 0 < float(cover[1].float().mean()) < 1


def test_latent_cover_follows_wan_frame_groups():
    keep = torch.ones(9, 16, 16, dtype=torch.bool)  # 9 frames -> latent frames {0}, {1-4}, {5-8}
    keep[3, 9, 2] = False  # one pixel lost in frame 3 releases that cell of latent frame 1
    keep[0, 0, 0] = False  # and one in frame 0 releases latent frame 0's cell only
    cover = latent_cover(keep, 8)
    assert cover.shape == (3, 2, 2)
    assert cover[1].tolist() == [[True, True], [False, True]]
    assert cover[0].tolist() == [[False, True], [True, True]]
    assert bool(cover[2].all())


def test_bad_wan_folders(tmp_path):
    # A text-to-video Wan pipeline cannot start from an image.
    t2v = tiny_wan(tmp_path / "t2v", "ti2v")
    index = json.loads((t2v / "model_index.json").read_text())
    index["expand_timesteps"] = False
    (t2v / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="text-to-video"):
        create_synthesis_backend("wan-i2v", model=str(t2v))
    # A VACE folder is pointed to the vace backend; the video backend points Wan I2V here.
    vace = tiny_wan(tmp_path / "vace", "vace")
    with pytest.raises(ModelError, match="--synthesis vace"):
        create_synthesis_backend("wan-i2v", model=str(vace))
    i2v = tiny_wan(tmp_path / "i2v", "i2v")
    with pytest.raises(ModelError, match="--synthesis wan-i2v"):
        create_synthesis_backend("video", model=str(i2v))
    shutil.rmtree(i2v / "image_encoder")
    index = json.loads((i2v / "model_index.json").read_text())
    index.pop("image_encoder")
    (i2v / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="image_encoder"):
        create_synthesis_backend("wan-i2v", model=str(i2v))


def test_loci_generate_with_wan_i2v(tmp_path):
    from studio.cli import main

    model = tiny_wan(tmp_path / "ti2v", "ti2v")
    out = tmp_path / "w"
    rc = main(["generate", str(PHOTO), "--out", str(out), "--synthesis", "wan-i2v", "--model",
               str(model), "--preset", "fast", "--steps", "2", "--chunk", "4", "--run-area",
               "native", "--path", "forward", "--frames", "5", "--width", "64", "--quiet"])  # fmt: skip
    assert rc == 0
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["synthesis"] == "wan-i2v"
    assert world["painter"]["flow_shift"] == 5.0 and world["painter"]["steps"] == 2
    assert len(world["frames"]) == 5


@pytest.mark.gpu
def test_tiny_wan_i2v_on_cuda(wan_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    backend = create_synthesis_backend("wan-i2v", model=str(wan_dir), steps=2, chunk_size=4,
                                       area="native", device="cuda")  # fmt: skip
    from PIL import Image

    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=64))
    world = pipe.seed(np.asarray(Image.open(PHOTO).convert("RGB")))
    traj = make_preset("orbit", world.cameras[0], 5, up=world.up, scene_depth=world.scene_depth)
    events = list(pipe.explore(world, traj.cameras[1:]))
    assert len(events) == 4 and backend.plan.mode in ("gpu", "text-offload")


@pytest.mark.gpu
@pytest.mark.slow
def test_real_wan_i2v_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from PIL import Image

    from models.synthesis.wan_i2v import DEFAULT_MODEL

    model = os.environ.get("LOCI_WAN_I2V_MODEL", DEFAULT_MODEL)
    if not weights_present(model):
        pytest.skip(f"weights for {model} are not in the local cache")
    torch.cuda.reset_peak_memory_stats()
    backend = create_synthesis_backend("wan-i2v", model=model, vram_gb=24.0)
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=512))
    world = pipe.seed(np.asarray(Image.open(PHOTO).convert("RGB")))
    traj = make_preset("forward", world.cameras[0], 17, up=world.up, scene_depth=world.scene_depth)
    events = list(pipe.explore(world, traj.cameras[1:]))
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"{model}: peak {peak:.1f} GiB, plan {backend.plan.summary()}")
    assert peak <= 24.0 and all(e.rgb.std() > 5 for e in events)
