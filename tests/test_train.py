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
from tests.helpers import PHOTOS, build_tiny_inpaint, make_trainer, train_losses  # noqa: E402

PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def trained(tiny, tum_samples, tmp_path_factory):
    """An uninterrupted 8-step run (its trainer and run folder)."""
    run = tmp_path_factory.mktemp("runs") / "full"
    trainer = make_trainer(tiny, tum_samples, run)
    trainer.run()
    return trainer, run


# ---------------------------------------------------------------------------------------------
def test_loss_decreases_and_a_killed_run_resumes_to_the_same_curve(
    trained, tiny, tum_samples, tmp_path
):
    full_trainer, full = trained
    losses = train_losses(full)
    assert [s for s, _ in losses] == list(range(1, 9))
    held = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in held if r["split"] == "heldout"]
    assert held[0]["step"] == 0 and held[-1]["step"] == 8
    assert held[-1]["loss"] < held[0]["loss"]  # learning, on samples it never trained on
    assert {p.name for p in (full / "checkpoints").iterdir()} == {"step-000003", "step-000006",
                                                                 "step-000008"}  # fmt: skip

    run = tmp_path / "killed"
    trainer = make_trainer(tiny, tum_samples, run)

    def die(rec):
        if rec["split"] == "train" and rec["step"] == 5:
            raise _Killed  # after checkpoint 3, before checkpoint 6: steps 4-5 are lost

    with pytest.raises(_Killed):
        trainer.run(on_record=die)
    # A fresh process (new model, new optimizer), with batches prepared by 2 DataLoader workers.
    resumed = make_trainer(tiny, tum_samples, run, num_workers=2)
    resumed.run(resume=True)
    assert train_losses(run) == losses  # bit for bit, on the CPU
    from peft.utils import get_peft_model_state_dict

    a = get_peft_model_state_dict(full_trainer.painter.network, adapter_name="loci")
    b = get_peft_model_state_dict(resumed.painter.network, adapter_name="loci")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Resuming with settings that change the curve is refused; more steps are fine.
    with pytest.raises(ValueError, match="lr"):
        make_trainer(tiny, tum_samples, run, lr=1e-3).run(resume=True)
    with pytest.raises(ValueError, match="--resume"):
        make_trainer(tiny, tum_samples, run).run()


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


def test_self_augmented_history_is_the_models_own_estimate(tiny, tum_samples, tmp_path):
    trainer = make_trainer(tiny, tum_samples, tmp_path / "r")
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


def test_untrusted_target_pixels_never_reach_the_loss(tiny, tum_samples, tmp_path):
    trainer = make_trainer(tiny, tum_samples, tmp_path / "r")
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


def test_gradient_checkpointing_gives_the_same_step(tiny, tum_samples, tmp_path):
    from peft.utils import get_peft_model_state_dict

    on = make_trainer(tiny, tum_samples, tmp_path / "a", gradient_checkpointing=True)
    off = make_trainer(tiny, tum_samples, tmp_path / "b", gradient_checkpointing=False)
    ra, rb = on.train_step(0), off.train_step(0)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6) and ra["grad_norm"] > 0
    wa = get_peft_model_state_dict(on.painter.network, adapter_name="loci")
    wb = get_peft_model_state_dict(off.painter.network, adapter_name="loci")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


def test_training_inputs_are_the_backends_inputs(tiny, tum_samples, monkeypatch, tmp_path):
    trainer = make_trainer(tiny, tum_samples, tmp_path / "r")
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
def test_cli_run_generate_with_lora_and_errors(tiny, tum_samples, tmp_path, capsys, monkeypatch):
    from studio.cli import main

    monkeypatch.setenv("LOCI_PNG_PLOTS", "0")  # HTML only: PNGs drive a browser (seconds)
    run = tmp_path / "run"
    args = ["train", "run", str(tum_samples), "--out", str(run), "--model", str(tiny), "--quiet"]
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
        with studio.bundle(ws) as bundle:
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
# The acceptance run: 30 steps, a real kill (SIGKILL) mid-run, resume, same curve.
@pytest.mark.slow
def test_thirty_steps_killed_with_sigkill_and_resumed_give_the_same_curve(
    tiny, tum_samples, tmp_path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    def train(out: Path, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "studio.cli", "train", "run", str(tum_samples), "--out", str(out),
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
        steps = [s for s, _ in train_losses(killed)] if (killed / "metrics.jsonl").exists() else []
        if steps and max(steps) >= 14:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name for p in (killed / "checkpoints").iterdir()} >= {"step-000010"}
    assert "lora" not in {p.name for p in killed.iterdir()}  # it never finished
    assert train(killed, "--resume").wait(timeout=600) == 0
    curve = train_losses(full)
    assert [s for s, _ in curve] == list(range(1, 31))
    assert train_losses(killed) == curve
    held = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    held = [r["loss"] for r in held if r["split"] == "heldout"]
    assert held[-1] < held[0]
    first, last = np.mean([v for _, v in curve[:5]]), np.mean([v for _, v in curve[-5:]])
    assert last < first
    print(f"30 steps: train loss {first:.4f} -> {last:.4f} (means of 5), held-out {held[0]:.4f}"
          f" -> {held[-1]:.4f}")  # fmt: skip
