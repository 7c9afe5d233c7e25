"""``loci train`` for the ``vace`` painter (Wan VACE, flow matching) on a tiny random pipeline and
samples from the real TUM sequence; and the GPU runs of both painters with real weights.

The same recipe and contract as ``tests/test_train.py``: the loss goes down on held-out samples,
the clips the trainer conditions on are the chunks the backend builds, the adapter loads where
inference runs and changes only painted pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from models.synthesis import SynthesisRequest, create_synthesis_backend  # noqa: E402
from models.train.config import load_config  # noqa: E402
from models.train.trainer import Trainer, build_painter  # noqa: E402
from storage.train.shards import SampleDataset, SampleStore  # noqa: E402
from tests.helpers import PHOTOS, TUM, make_trainer, train_losses  # noqa: E402

PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"


@pytest.fixture(scope="module")
def vace(tmp_path_factory, offline) -> Path:
    from tests.helpers import tiny_wan

    return tiny_wan(tmp_path_factory.mktemp("vace") / "tiny-vace", "vace")


@pytest.fixture(scope="module")
def vace_trained(vace, tum_samples, tmp_path_factory):
    run = tmp_path_factory.mktemp("vruns") / "vace"
    trainer = make_trainer(
        vace, tum_samples, run, painter="vace", resolution=64, steps=6, eval_every=3
    )
    trainer.run()
    return trainer, run


def test_vace_trains_and_its_inputs_are_the_backends(vace_trained, vace, monkeypatch):
    trainer, run = vace_trained
    held = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    held = [r["loss"] for r in held if r["split"] == "heldout"]
    assert held[-1] < held[0]
    meta = json.loads((run / "lora" / "loci_lora.json").read_text())
    assert meta["backend"] == "vace" and meta["network"] == "transformer"
    # The clip the trainer conditions on is the chunk the backend builds for the same view.
    sample = trainer.dataset[4]
    backend = create_synthesis_backend("vace", model=str(vace), steps=1, area=None)
    seen = {}

    def spy(inputs, first, size):
        seen.update(video=inputs.video, mask=inputs.mask, size=size)
        return torch.zeros(len(inputs.video), 3, size[1], size[0])

    monkeypatch.setattr(backend, "_generate", spy)
    req = SynthesisRequest(
        1, None, torch.from_numpy(sample["warped_rgb"]), torch.from_numpy(sample["warped_depth"]),
        torch.from_numpy(sample["valid"]),
        history=torch.from_numpy(sample["context"]).float()[None] / 255.0,
        # The routed pixels' magnification, as explore passes it (magnified ones are repainted).
        stretch=None if sample.get("stretch") is None else torch.from_numpy(sample["stretch"]),
    )  # fmt: skip
    backend.synthesize([req])
    batch = trainer.painter.prepare([sample])
    assert seen["size"] == trainer.painter.size
    assert torch.equal(batch.image[0].permute(1, 0, 2, 3), seen["video"])
    assert torch.equal(batch.hole[0].permute(1, 0, 2, 3), seen["mask"])


@pytest.mark.slow
def test_vace_lora_changes_only_painted_pixels_and_is_recorded(vace_trained, vace, tmp_path):
    from diffusers import WanVACEPipeline
    from PIL import Image

    from models.paths.trajectory import make_preset
    from models.pipeline import PipelineConfig, WorldPipeline
    from studio.cli import main

    trainer, run = vace_trained

    def walk(lora):
        opts = dict(model=str(vace), steps=2, chunk_size=4, area=None, lora=lora)
        backend = create_synthesis_backend("vace", **{k: v for k, v in opts.items() if v})
        pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=64, seed=1))
        photo = np.asarray(Image.open(PHOTO).convert("RGB"))
        world = pipe.seed(photo)
        cams = make_preset("orbit", world.cameras[0], 5, up=world.up, scene_depth=world.scene_depth)
        return list(pipe.explore(world, cams.cameras[1:]))

    base, tuned = walk(None), walk(str(run / "lora"))
    painted = 0
    for a, b in zip(base, tuned, strict=True):
        seen = a.source_mask
        assert np.array_equal(a.rgb[seen], b.rgb[seen])  # photo-routed pixels: bit-identical
        painted += int((np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max(-1) > 0).sum())
    assert painted > 0
    # diffusers' own loader reads the folder into the same network.
    pipe = WanVACEPipeline.from_pretrained(str(vace), local_files_only=True)
    pipe.load_lora_weights(str(run / "lora"))
    from peft.utils import get_peft_model_state_dict

    ours = get_peft_model_state_dict(trainer.painter.network, adapter_name="loci")
    theirs = get_peft_model_state_dict(pipe.transformer, adapter_name="default_0")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # loci generate --lora picks the adapter's painter and records it.
    out = tmp_path / "w"
    rc = main(["generate", str(PHOTO), "--out", str(out), "--lora", str(run / "lora"),
               "--model", str(vace), "--steps", "2", "--chunk", "4", "--run-area", "native",
               "--path", "orbit", "--frames", "3", "--width", "64", "--quiet"])  # fmt: skip
    assert rc == 0
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["synthesis"] == "vace" and world["lora"]["backend"] == "vace"
    assert world["painter"]["lora"]["sha256"] == world["lora"]["sha256"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("painter", ["sd-inpaint", "vace"])
def test_fine_tune_real_painter_on_gpu(painter, tmp_path):
    """Real weights on a GPU: 20 bf16 steps on 512x384 TUM samples with gradient checkpointing;
    prints the peak GPU memory and seconds per step (the README's figures are estimates until
    this runs)."""
    import importlib
    import time

    from models.depth import create_depth_backend
    from models.manager import weights_present
    from models.train.samples import SampleBuilder, SampleConfig
    from storage.train.footage import read_footage
    from studio.cli.train import footage_frames

    default = importlib.import_module(f"models.synthesis.{painter.replace('-', '_')}").DEFAULT_MODEL
    if not weights_present(default):
        pytest.skip(f"{default} is not in the local Hugging Face cache")
    if not TUM.is_dir():
        pytest.skip("shared TUM sequence not present")
    config = SampleConfig(width=512)
    store = SampleStore(tmp_path / "d", {"width": 512, "height": 384, "config": config.to_dict()})
    for step in SampleBuilder(config, create_depth_backend("layout")).build(
        "tum", footage_frames(read_footage(TUM))
    ):
        if step.order == 0:
            store.save_reference("tum", step.rgb)
        if step.sample is not None:
            store.add(step.sample.arrays(), step.sample.info())
    store.finish()
    ds = SampleDataset(tmp_path / "d")
    batch = 2 if painter == "sd-inpaint" else 1
    cfg = load_config(None, {"painter": painter, "steps": 20, "batch_size": batch,
                             "min_routed_psnr": 0, "checkpoint_every": 20, "eval_every": 20})  # fmt: skip
    trainer = Trainer(cfg, build_painter(cfg, (ds.width, ds.height)), ds, tmp_path / "run")
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = trainer.run()
    per_step = (time.perf_counter() - t0) / cfg.steps
    peak = torch.cuda.max_memory_allocated() / 2**30
    losses = [v for _, v in train_losses(tmp_path / "run")]
    assert all(np.isfinite(losses)) and result.lora.is_dir()
    print(f"{painter} LoRA r16, 512x384 samples, batch {batch}, bf16 + checkpointing: "
          f"{per_step:.2f} s/step, peak {peak:.1f} GiB")  # fmt: skip
