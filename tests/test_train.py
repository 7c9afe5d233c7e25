"""``loci train`` on a tiny random SD inpainting painter and samples from the real TUM sequence.

Random weights learn nothing meaningful: these tests prove the recipe (loss goes down, resume is
exact, self-augmentation feeds the model its own estimate, untrusted pixels never reach the loss,
the LoRA loads where inference runs and changes only painted pixels), not the look.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from models.synthesis import SynthesisRequest, create_synthesis_backend, sd_inpaint  # noqa: E402
from models.train.config import load_config  # noqa: E402
from models.train.recipe import batch_loss, generator, self_augment  # noqa: E402
from models.train.trainer import Trainer, build_painter  # noqa: E402
from storage.train.shards import SampleDataset, SampleStore  # noqa: E402
from tests.helpers import PHOTOS, TUM, build_tiny_inpaint  # noqa: E402

PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"
BASE = dict(steps=8, batch_size=2, lr=1e-2, warmup_steps=0, rank=4, alpha=8, holdout=0.2,
            min_routed_psnr=0, checkpoint_every=3, eval_every=4, eval_samples=4)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Samples from the real TUM sequence at 64 px (depth: frame 0's sensor, the rest layout)."""
    if not TUM.is_dir():
        pytest.skip("shared TUM sequence not present")
    from models.depth import create_depth_backend
    from models.train.samples import SampleBuilder, SampleConfig
    from storage.train.footage import read_footage
    from studio.cli.train import footage_frames

    out = tmp_path_factory.mktemp("train") / "data"
    config = SampleConfig(width=64)
    store = SampleStore(out, {"width": 64, "height": 48, "config": config.to_dict()}, 8)
    builder = SampleBuilder(config, create_depth_backend("layout"))
    for step in builder.build("tum", footage_frames(read_footage(TUM))):
        if step.order == 0:
            store.save_reference("tum", step.rgb)  # the video painter's reference image
        if step.sample is not None:
            store.add(step.sample.arrays(), step.sample.info())
    store.finish()
    return out


def _trainer(tiny, data, run, **settings):
    config = load_config(None, {**BASE, "model": str(tiny), **settings})
    ds = SampleDataset(data)
    return Trainer(config, build_painter(config, (ds.width, ds.height)), ds, run)


def _train_losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if r["split"] == "train"]


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def trained(tiny, data, tmp_path_factory):
    """An uninterrupted 8-step run (its trainer and run folder)."""
    run = tmp_path_factory.mktemp("runs") / "full"
    trainer = _trainer(tiny, data, run)
    trainer.run()
    return trainer, run


# ---------------------------------------------------------------------------------------------
def test_loss_decreases_and_a_killed_run_resumes_to_the_same_curve(trained, tiny, data, tmp_path):
    full_trainer, full = trained
    losses = _train_losses(full)
    assert [s for s, _ in losses] == list(range(1, 9))
    held = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in held if r["split"] == "heldout"]
    assert held[0]["step"] == 0 and held[-1]["step"] == 8
    assert held[-1]["loss"] < held[0]["loss"]  # learning, on samples it never trained on
    assert {p.name for p in (full / "checkpoints").iterdir()} == {"step-000003", "step-000006",
                                                                 "step-000008"}  # fmt: skip

    run = tmp_path / "killed"
    trainer = _trainer(tiny, data, run)

    def die(rec):
        if rec["split"] == "train" and rec["step"] == 5:
            raise _Killed  # after checkpoint 3, before checkpoint 6: steps 4-5 are lost

    with pytest.raises(_Killed):
        trainer.run(on_record=die)
    # A fresh process (new model, new optimizer), with batches prepared by 2 DataLoader workers.
    resumed = _trainer(tiny, data, run, num_workers=2)
    resumed.run(resume=True)
    assert _train_losses(run) == losses  # bit for bit, on the CPU
    from peft.utils import get_peft_model_state_dict

    a = get_peft_model_state_dict(full_trainer.painter.network, adapter_name="loci")
    b = get_peft_model_state_dict(resumed.painter.network, adapter_name="loci")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Resuming with settings that change the curve is refused; more steps are fine.
    with pytest.raises(ValueError, match="lr"):
        _trainer(tiny, data, run, lr=1e-3).run(resume=True)
    with pytest.raises(ValueError, match="--resume"):
        _trainer(tiny, data, run).run()


def _request(seed: int) -> SynthesisRequest:
    from tests.test_sd_inpaint import _request as req

    return req(seed)


def test_lora_loads_in_the_backend_and_changes_only_painted_pixels(trained, tiny):
    _, run = trained
    base = create_synthesis_backend("sd-inpaint", model=str(tiny), steps=2)
    tuned = create_synthesis_backend("sd-inpaint", model=str(tiny), steps=2, lora=str(run / "lora"))
    (a,), (b,) = base.synthesize([_request(3)]), tuned.synthesize([_request(3)])
    req = _request(3)
    v = req.valid
    assert torch.equal(b.rgb[v], req.warped_rgb[v]) and torch.equal(a.rgb[v], b.rgb[v])
    assert float((a.rgb - b.rgb).abs()[~v].mean()) > 1e-3
    rec = tuned.record()["lora"]
    assert rec["rank"] == 4 and rec["alpha"] == 8 and rec["steps"] == 8 and rec["self_aug_p"] == 0.7
    # The base pipeline in the cache is untouched by the adapted one.
    (again,) = base.synthesize([_request(3)])
    assert torch.equal(again.rgb, a.rgb)


def test_lora_folder_is_plain_diffusers_and_equals_the_trained_network(trained, tiny):
    from diffusers import StableDiffusionInpaintPipeline

    trainer, run = trained
    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        str(tiny), safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.load_lora_weights(str(run / "lora"))  # an outside reader: diffusers' own loader
    net = trainer.painter.network
    net.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, 24, 32, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    t = torch.tensor([500])
    with torch.no_grad():
        ours = net(x, t, encoder_hidden_states=text).sample
        theirs = pipe.unet(x, t, encoder_hidden_states=text).sample
        pipe.disable_lora()
        plain = pipe.unet(x, t, encoder_hidden_states=text).sample
    net.train()
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)  # alpha 8 / rank 4 kept
    assert float((plain - ours).abs().max()) > 1e-4


def test_self_augmented_history_is_the_models_own_estimate(tiny, data, tmp_path):
    trainer = _trainer(tiny, data, tmp_path / "r")
    p, ds = trainer.painter, trainer.dataset
    batch = p.prepare([ds[0], ds[1]])
    enc = p.encode(batch, generator(0, 0, 0))
    flags = torch.tensor([True, False])
    t_aug = torch.tensor([300, 300])
    cond = self_augment(p, enc, batch, flags, t_aug, generator(0, 0, 1))
    assert torch.equal(cond["mask"], enc.cond["mask"]) and torch.equal(
        cond["text"], enc.cond["text"]
    )
    assert torch.equal(cond["masked"][1], enc.cond["masked"][1])  # not drawn: unchanged
    assert float((cond["masked"][0] - enc.cond["masked"][0]).abs().max()) > 1e-3
    assert not cond["masked"].requires_grad
    # p = 0 and p = 1 draw the same timesteps and noise for the loss itself (a clean ablation).
    cfg1 = trainer.config
    cfg0 = load_config(None, {**cfg1.to_dict(), "self_aug_p": 0.0})
    l1, s1 = batch_loss(p, cfg1.__class__(**{**cfg1.to_dict(), "self_aug_p": 1.0}), batch, 0, 0)
    l0, s0 = batch_loss(p, cfg0, batch, 0, 0)
    assert s1["t"] == s0["t"] and s1["self_aug"] == 1.0 and s0["self_aug"] == 0.0
    assert float(l1.detach()) != float(l0.detach())


def test_untrusted_target_pixels_never_reach_the_loss(tiny, data, tmp_path):
    trainer = _trainer(tiny, data, tmp_path / "r")
    p, ds = trainer.painter, trainer.dataset
    a, b = dict(ds[2]), dict(ds[3])
    for s in (a, b):
        s["trust"] = s["trust"].copy()
        s["trust"][:, 32:] = False
    batch = p.prepare([a, b])
    enc = p.encode(batch, generator(0, 0, 0))
    assert not enc.weight[..., 16:].any() and enc.weight[..., :15].all()
    changed = [dict(a), dict(b)]
    for s in changed:
        s["target"] = s["target"].copy()
        s["target"][:, 33:] = 255 - s["target"][:, 33:]  # garbage where nothing is trusted
    # (column 32 feeds latent 15 through the antialiased resize; its latent is excluded too)
    loss, _ = batch_loss(p, trainer.config, batch, 0, 0)
    loss2, _ = batch_loss(p, trainer.config, p.prepare(changed), 0, 0)
    assert float(loss.detach()) == float(loss2.detach())


def test_gradient_checkpointing_gives_the_same_step(tiny, data, tmp_path):
    from peft.utils import get_peft_model_state_dict

    on = _trainer(tiny, data, tmp_path / "a", gradient_checkpointing=True)
    off = _trainer(tiny, data, tmp_path / "b", gradient_checkpointing=False)
    ra, rb = on.train_step(0), off.train_step(0)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6) and ra["grad_norm"] > 0
    wa = get_peft_model_state_dict(on.painter.network, adapter_name="loci")
    wb = get_peft_model_state_dict(off.painter.network, adapter_name="loci")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


def test_training_inputs_are_the_backends_inputs(tiny, data, monkeypatch, tmp_path):
    trainer = _trainer(tiny, data, tmp_path / "r")
    sample = trainer.dataset[4]
    seen = {}

    def spy(pipe, **kwargs):
        seen.update(kwargs)
        return np.zeros((1, kwargs["height"], kwargs["width"], 3), np.float32)

    monkeypatch.setattr(sd_inpaint, "_run", spy)
    backend = create_synthesis_backend("sd-inpaint", model=str(tiny), steps=2)
    req = SynthesisRequest(1, None, torch.from_numpy(sample["warped_rgb"]),
                           torch.from_numpy(sample["warped_depth"]), torch.from_numpy(sample["valid"]))  # fmt: skip
    backend.synthesize([req])
    batch = trainer.painter.prepare([sample])
    assert torch.equal(batch.image, seen["image"]) and torch.equal(batch.hole, seen["mask_image"])


# ---------------------------------------------------------------------------------------------
# The command line and the studio
def test_cli_run_generate_with_lora_and_errors(tiny, data, tmp_path, capsys, monkeypatch):
    from studio.cli import main

    monkeypatch.setenv("LOCI_PNG_PLOTS", "0")  # HTML only: PNGs drive a browser (seconds)
    run = tmp_path / "run"
    args = ["train", "run", str(data), "--out", str(run), "--model", str(tiny), "--quiet"]
    opts = ["--steps", "3", "--batch-size", "2", "--set", "min_routed_psnr=0"]
    assert main([*args, *opts]) == 0
    assert {"config.json", "metrics.jsonl", "loss.html", "lora", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    assert main([*args, *opts]) == 2 and "--resume" in capsys.readouterr().err
    assert main([*args, *opts, "--resume", "--lr", "0.5"]) == 2

    world = tmp_path / "world"
    gen = ["generate", str(PHOTO), "--out", str(world), "--lora", str(run / "lora"),
           "--model", str(tiny), "--steps", "2", "--frames", "3", "--width", "64", "--quiet"]  # fmt: skip
    assert main(gen) == 0
    meta = json.loads((world / "world.json").read_text())
    assert meta["backends"]["synthesis"] == "sd-inpaint"
    assert meta["lora"]["steps"] == 3 and len(meta["lora"]["sha256"]) == 64
    capsys.readouterr()
    assert main([*gen, "--overwrite", "--synthesis", "reproject"]) == 2
    assert "adapts the sd-inpaint painter" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(run / "lora", broken)
    (broken / "loci_lora.json").write_text("{")
    assert main([*gen, "--overwrite", "--lora", str(broken)]) == 2
    assert "damaged" in capsys.readouterr().err
    # An adapter refuses a base model it was not trained on.
    other = build_tiny_inpaint(tmp_path / "other", blocks=(16, 32))
    assert main([*gen, "--overwrite", "--model", str(other)]) == 2
    assert "trained on" in capsys.readouterr().err


def test_studio_paints_with_the_lora_and_records_it(trained, tiny, tmp_path, monkeypatch):
    from studio.context import StudioContext
    from studio.service import Studio

    _, run = trained
    monkeypatch.setattr(sd_inpaint, "DEFAULT_MODEL", str(tiny))
    studio = Studio(StudioContext(data_dir=tmp_path / "d", width=64, lora=str(run / "lora")))
    try:
        pid, _, key = studio.create_project("lora")
        studio.set_photo(pid, key, str(PHOTO))
        studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=3))
        updates = list(studio.generate(pid, key))
        assert updates
        ws = studio.world(pid, key)
        cell = ws.cells[-1]
        assert cell.params["lora"]["path"] == str((run / "lora").absolute())
        bundle = studio.bundle(ws)
        world = json.loads((bundle / "world.json").read_text())
        assert world["lora"]["steps"] == 8 and world["lora"]["backend"] == "sd-inpaint"
        # The default painter is the LoRA's; a generation that picks another gets no LoRA.
        assert studio.pipeline().synthesis.lora is not None
        assert studio.pipeline(backends={"synthesis": "reproject"}).synthesis.name == "reproject"
    finally:
        studio.db.dispose()


def test_drift_probe_runs_with_and_without_the_lora(trained, tiny, tmp_path, monkeypatch):
    from studio.cli import main

    monkeypatch.setenv("LOCI_PNG_PLOTS", "0")
    _, run = trained
    out = tmp_path / "drift"
    args = ["train", "drift", str(PHOTO), "--out", str(out), "--lora", str(run / "lora"),
            "--model", str(tiny), "--steps", "2", "--frames", "7", "--width", "64",
            "--path", "orbit", "--quiet"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "drift.json").read_text())
    assert set(report["runs"]) == {"base", "lora"}
    for r in report["runs"].values():
        assert len(r["per_frame"]) == 6 and r["summary"]["painted_mean"] > 0
    assert (out / "drift_sheet.png").is_file() and (out / "drift_color.html").is_file()


# ---------------------------------------------------------------------------------------------
# The vace painter (Wan VACE, flow matching): same recipe, same contract
@pytest.fixture(scope="module")
def vace(tmp_path_factory, offline) -> Path:
    from tests.helpers import tiny_wan

    return tiny_wan(tmp_path_factory.mktemp("vace") / "tiny-vace", "vace")


@pytest.fixture(scope="module")
def vace_trained(vace, data, tmp_path_factory):
    run = tmp_path_factory.mktemp("vruns") / "vace"
    trainer = _trainer(vace, data, run, painter="vace", resolution=64, steps=6, eval_every=3)
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


# ---------------------------------------------------------------------------------------------
# The acceptance run: 30 steps, a real kill (SIGKILL) mid-run, resume, same curve.
@pytest.mark.slow
def test_thirty_steps_killed_with_sigkill_and_resumed_give_the_same_curve(tiny, data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def train(out: Path, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "studio.cli", "train", "run", str(data), "--out", str(out),
               "--model", str(tiny), "--steps", "30", "--batch-size", "2", "--lr", "1e-2",
               "--checkpoint-every", "10", "--quiet", "--set", "min_routed_psnr=0",
               "--set", "eval_every=10", "--set", "warmup_steps=0", *extra]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOCI_PNG_PLOTS": "0", "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1],
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    full = tmp_path / "full"
    assert train(full).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    proc = train(killed)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill it once it is past its first checkpoint
        steps = [s for s, _ in _train_losses(killed)] if (killed / "metrics.jsonl").exists() else []
        if steps and max(steps) >= 14:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name for p in (killed / "checkpoints").iterdir()} >= {"step-000010"}
    assert "lora" not in {p.name for p in killed.iterdir()}  # it never finished
    assert train(killed, "--resume").wait(timeout=600) == 0
    curve = _train_losses(full)
    assert [s for s, _ in curve] == list(range(1, 31))
    assert _train_losses(killed) == curve
    held = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    held = [r["loss"] for r in held if r["split"] == "heldout"]
    assert held[-1] < held[0]
    first, last = np.mean([v for _, v in curve[:5]]), np.mean([v for _, v in curve[-5:]])
    assert last < first
    print(f"30 steps: train loss {first:.4f} -> {last:.4f} (means of 5), held-out {held[0]:.4f}"
          f" -> {held[-1]:.4f}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
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
    losses = [v for _, v in _train_losses(tmp_path / "run")]
    assert all(np.isfinite(losses)) and result.lora.is_dir()
    print(f"{painter} LoRA r16, 512x384 samples, batch {batch}, bf16 + checkpointing: "
          f"{per_step:.2f} s/step, peak {peak:.1f} GiB")  # fmt: skip
