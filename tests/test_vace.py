"""The ``vace`` painter: a tiny random WanVACEPipeline built in code, saved, and loaded back
through the backend offline; a world on a real photo (exact routing, painted holes, chunk
continuity, determinism, speed), the CLI and the studio, bad folders and refusals."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.geometry.cameras import Camera, intrinsics_from_fov
from models.geometry.fill import fill_depth, inpaint_rgb
from models.manager import ModelError, weights_present
from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from models.synthesis import SynthesisRequest, create_synthesis_backend, vram
from models.synthesis import vace as vace_mod
from models.synthesis.wan import TRAINED_AREA, build_inputs, run_size, wan_frames
from tests.helpers import PHOTOS, tiny_wan

PHOTO = PHOTOS / "interior_living_room_geowizard.jpg"
FAST = dict(steps=2, chunk_size=4, area=None)  # 2 chunks of 4 new frames at the world's size


@pytest.fixture(scope="module")
def vace_dir(tmp_path_factory) -> Path:
    return tiny_wan(tmp_path_factory.mktemp("tiny-vace"), "vace")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def _explore(model: Path, seed: int = 0, frames: int = 9, **options):
    """A 64 px world on the living-room photo, orbiting ``frames - 1`` new frames; returns
    (world, events, requests, results, chunk inputs) with the backend's calls recorded."""
    backend = create_synthesis_backend("vace", model=str(model), **{**FAST, **options})
    requests, results, inputs = [], [], []
    inner_synth, inner_gen = backend.synthesize, backend._generate

    def synth(reqs):
        requests.extend(reqs)
        out = inner_synth(reqs)
        results.extend(out)
        return out

    def gen(chunk, first, size):
        inputs.append(chunk)
        return inner_gen(chunk, first, size)

    backend.synthesize, backend._generate = synth, gen  # instance attributes shadow methods
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=64, seed=seed))
    world = pipe.seed(_photo())
    traj = make_preset(
        "orbit", world.cameras[0], frames, up=world.up, scene_depth=world.scene_depth
    )
    events = list(pipe.explore(world, traj.cameras[1:]))
    return world, events, requests, results, inputs


def test_vace_world_routes_exactly_paints_holes_and_continues_chunks(vace_dir):
    t0 = time.perf_counter()
    world, events, requests, results, inputs = _explore(vace_dir)
    seconds = time.perf_counter() - t0
    H, W = world.height, world.width
    assert len(events) == 8 and len(inputs) == 2  # two chunks of four
    painted_change = []
    for ev, req, res in zip(events, requests, results, strict=True):
        assert ev.rgb.shape == (H, W, 3) and np.isfinite(ev.depth).all()
        # No stretch measure yet: every routed pixel is exact, bit for bit.
        assert torch.equal(res.source_mask, req.valid)
        v = req.valid
        assert torch.equal(res.rgb[v], req.warped_rgb[v])
        expect = (req.warped_rgb * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(ev.rgb[v.numpy()], expect[v.numpy()])
        if bool(v.all()):
            continue
        # Painted pixels are the model's, not the pre-fill's.
        fill = inpaint_rgb(req.warped_rgb, v, fill_depth(req.warped_depth, v))
        painted_change.append(float((res.rgb[~v] - fill[~v]).abs().mean()))
        assert res.meta["placement"] == "cpu" and res.meta["chunk_frames"] % 4 == 1
    assert len(painted_change) >= 4 and min(painted_change) > 0.01
    # Chunks continue from the last finished frame, kept (mask 0): the photo for the first,
    # the first chunk's last frame for the second.
    for chunk, before in ((inputs[0], world.seed_event.rgb), (inputs[1], events[3].rgb)):
        assert chunk.context == 1 and chunk.targets == 4 and len(chunk.video) == 5
        h, w = chunk.video.shape[-2:]
        prev = torch.from_numpy(before).float().permute(2, 0, 1)[None] / 255
        prev = F.interpolate(prev, size=(h, w), mode="bilinear", antialias=True)[0]
        assert torch.allclose(chunk.video[0], prev.clamp(0, 1), atol=1e-6)
        assert not bool(chunk.mask[0].any())
        assert bool(chunk.mask[1:].any())  # something is painted in every chunk
    print(f"2 chunks of 4 frames at {W}x{H}, 2 steps, CPU: {seconds:.2f} s")
    assert seconds < 60  # seconds in practice; generous for a loaded 2-core machine


def test_same_seed_same_world_and_another_seed_another(vace_dir):
    _, a, *_ = _explore(vace_dir, frames=5)
    _, b, *_ = _explore(vace_dir, frames=5)
    _, c, reqs, *_ = _explore(vace_dir, frames=5, seed=7)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.rgb, y.rgb)
    holes = [~r.valid.numpy() for r in reqs]
    assert any(not np.array_equal(x.rgb[h], z.rgb[h]) for x, z, h in zip(a, c, holes, strict=True))


def _request(valid: torch.Tensor, stretch: torch.Tensor | None = None, seed: int = 0):
    H, W = valid.shape
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(H, W, 3, generator=g) * valid[..., None]
    K = intrinsics_from_fov(W, H, 60.0)
    return SynthesisRequest(0, Camera(K, np.eye(4), W, H), rgb, valid.float() * 2.0, valid,
                            seed, stretch=stretch)  # fmt: skip


def test_chunk_layout_masks_padding_and_magnified_pixels():
    H, W = 48, 64
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, 40:] = False  # a hole on the right
    valid[30, :24] = False  # a 1 px crack: left to the pre-fill, not to the model
    stretch = torch.ones(H, W)
    stretch[:10, :20] = 3.0  # strongly magnified routed pixels, top left
    reqs = [_request(valid, stretch, seed=i) for i in range(3)]
    reqs[0].history = torch.rand(2, H, W, 3)
    for r in reqs[1:]:
        r.history = reqs[0].history
    inputs = build_inputs(reqs, (W, H), cell=8, context=1, dilate=2, max_stretch=1.5)
    # 1 context + 3 targets = 4 frames -> padded to 5 (4k+1) with a copy of the last target.
    assert wan_frames(4) == 5 and len(inputs.video) == 5 and inputs.context == 1
    assert torch.equal(inputs.video[4], inputs.video[3]) and torch.equal(
        inputs.mask[4], inputs.mask[3]
    )
    assert torch.allclose(inputs.video[0], reqs[0].history[-1].permute(2, 0, 1))  # the newest
    assert not bool(inputs.mask[0].any())
    m = inputs.mask[1, 0]
    # Whole 8x8 cells: each is all generate or all keep.
    cells = m.reshape(H // 8, 8, W // 8, 8)
    assert bool(((cells.amax((1, 3)) - cells.amin((1, 3))) == 0).all())
    assert bool(m[:, 40:].all()) and not bool(m[20:, :24].any())  # holes generate, seen keep
    assert bool(m[:10, :20].all())  # magnified pixels are regenerated...
    exact = inputs.exact[0]
    assert not bool(exact[:10, :20].any()) and bool(exact[20:30, :24].all())
    assert not bool(exact[30, :24].any())  # the crack is not routed, so not pasted back
    # ...with their routed content visible to the model (not a pre-fill).
    assert torch.allclose(
        inputs.video[1, :, :10, :20], reqs[0].warped_rgb[:10, :20].permute(2, 0, 1)
    )
    # No stretch measure (None): every routed pixel is exact.
    plain = build_inputs([_request(valid)], (W, H), context=1, max_stretch=1.5)
    assert torch.equal(plain.exact[0], valid) and plain.context == 0
    # Run sizes: the trained area keeps the aspect with sides multiples of 16.
    assert run_size(512, 384, 16, TRAINED_AREA) == (720, 544)
    assert run_size(832, 480, 16, TRAINED_AREA) == (832, 480)
    assert run_size(64, 40, 16, None) == (64, 48)


def test_magnified_pixels_are_regenerated_and_seen_ones_stay_exact(vace_dir):
    backend = create_synthesis_backend("vace", model=str(vace_dir), **FAST)
    H, W = 48, 64
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, 48:] = False
    stretch = torch.ones(H, W)
    stretch[:16, :16] = 4.0
    req = _request(valid, stretch, seed=3)
    (res,) = backend.synthesize([req])
    keep = valid & (stretch <= 1.5)
    assert torch.equal(res.source_mask, keep)
    assert torch.equal(res.rgb[keep], req.warped_rgb[keep])
    assert not torch.equal(res.rgb[:16, :16], req.warped_rgb[:16, :16])
    assert 0 < res.meta["regenerated"] < 0.2


def test_loci_generate_with_vace(vace_dir, tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "w"
    rc = main(["generate", str(PHOTO), "--out", str(out), "--synthesis", "vace", "--model",
               str(vace_dir), "--steps", "2", "--chunk", "4", "--run-area", "native",
               "--prompt", "a cosy living room", "--path", "orbit", "--frames", "6",
               "--width", "64", "--quiet"])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "VRAM plan" in err and "estimate" in err
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["synthesis"] == "vace"
    painter = world["painter"]
    assert painter["model"] == str(vace_dir) and painter["prompt"] == "a cosy living room"
    assert painter["steps"] == 2 and painter["vram_plan"]["mode"] == "cpu"
    assert painter["vram_plan"]["estimate"] is True
    assert [f["index"] for f in world["frames"]] == list(range(6))
    assert any(f["routed_coverage"] < 1.0 for f in world["frames"])  # something was painted


def test_studio_generates_with_a_vace_painter_choice(vace_dir, tmp_path):
    from studio.context import StudioContext
    from studio.service import Studio

    studio = Studio(StudioContext(data_dir=tmp_path / "data", width=64))
    try:
        offered = {p["backend"]: p for p in studio.painters()}
        assert offered["vace"]["prompt"] and offered["reproject"]["default"]
        assert not offered["vace"]["ready"]  # no local default weights, no CUDA here
        pid, _, key = studio.create_project("Living room")
        studio.set_photo(pid, key, str(PHOTO))
        studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=5))
        choice = {"synthesis": "vace", "model": str(vace_dir), "prompt": "a sunny room",
                  "steps": 2, "chunk_size": 4, "area": None}  # fmt: skip
        ups = list(studio.generate(pid, key, backends=choice))
        assert ups[-1].status == "done" and ups[-1].frames_done == 4
        cell = studio.world(pid, key).cells[-1]
        assert cell.params["backends"] == choice
        assert cell.params["painter_info"]["backend"] == "vace"
        assert cell.params["painter_info"]["prompt"] == "a sunny room"
        assert len(studio.world(pid, key).frames) == 5
        with pytest.raises(ModelError, match="unknown painter option"):
            list(studio.generate(pid, key, backends={"synthesis": "vace", "colour": "blue"}))
    finally:
        studio.close()


def test_bad_folders_and_refusals(vace_dir, tmp_path, monkeypatch):
    # A Wan image-to-video folder: named, and the right backend suggested.
    i2v = tiny_wan(tmp_path / "i2v", "i2v")
    with pytest.raises(ModelError, match="wan-i2v"):
        create_synthesis_backend("vace", model=str(i2v))
    # Not there while offline: the offline backend is named at once.
    with pytest.raises(ModelError, match="--synthesis reproject"):
        create_synthesis_backend("vace", model="loci-test/no-such-vace")
    with pytest.raises(ModelError, match="--synthesis reproject"):
        create_synthesis_backend("vace", model=str(tmp_path / "nope"))

    # An incomplete download, an empty tokenizer, a non-VACE transformer.
    def variant(name: str, edit) -> str:
        folder = tmp_path / name
        shutil.copytree(vace_dir, folder)
        edit(folder)
        return str(folder)

    def no_vocab(folder: Path) -> None:
        for f in (folder / "tokenizer").iterdir():
            if f.name != "tokenizer_config.json":
                f.unlink()

    def few_channels(folder: Path) -> None:
        cfg_file = folder / "transformer" / "config.json"
        cfg_file.write_text(
            json.dumps({**json.loads(cfg_file.read_text()), "vace_in_channels": 48})
        )

    cases = [("no-transformer", lambda f: shutil.rmtree(f / "transformer"), "transformer/"),
             ("no-vocab", no_vocab, "vocabulary"),
             ("few-channels", few_channels, "control channels")]  # fmt: skip
    for name, edit, message in cases:
        with pytest.raises(ModelError, match=message):
            create_synthesis_backend("vace", model=variant(name, edit))
    # Bad settings.
    with pytest.raises(ModelError, match="preset"):
        create_synthesis_backend("vace", model=str(vace_dir), preset="turbo")
    # A real-size model on this CPU: refused with the estimate, unless forced.
    real = vram.published_spec(vace_mod.DEFAULT_MODEL)
    monkeypatch.setattr(vram, "spec_from_folder", lambda folder, name=None: real)
    with pytest.raises(
        ModelError, match=r"h per 16-frame chunk.*--synthesis reproject.*--force-cpu"
    ):
        create_synthesis_backend("vace", model=str(vace_dir))
    forced = create_synthesis_backend("vace", model=str(vace_dir), force_cpu=True)
    assert forced.plan.mode == "cpu" and forced.plan.seconds_per_chunk > 3600


def test_auto_picks_the_painter_a_folder_holds(vace_dir, monkeypatch):
    import studio.backends as backends

    notes: list[str] = []
    backend = backends.build_synthesis("auto", str(vace_dir), notes, steps=2, area=None)
    assert backend.name == "vace" and any("holds a vace model" in n for n in notes)
    # Without a model and without local default weights: the offline painter, with a note.
    notes = []
    assert backends.build_synthesis("auto", None, notes).name == "reproject" and notes
    # The VACE weights are here: vace with CUDA, the next painter without (with the reason).
    local = {vace_mod.DEFAULT_MODEL}
    monkeypatch.setattr(backends, "weights_present", lambda m: m in local)
    made: list[str] = []
    monkeypatch.setattr(backends, "create_synthesis_backend", lambda n, **o: made.append(n) or
                        create_synthesis_backend("reproject"))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backends.build_synthesis("auto", None, [])
    assert made == ["vace"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    notes = []
    backends.build_synthesis("auto", None, notes)
    assert made == ["vace", "reproject"] and any("no CUDA" in n for n in notes)


# ---------------------------------------------------------------------------------------------
# GPU: the tiny model on CUDA in bf16 through every placement, and the real weights.


def _cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["gpu", "text-offload", "model-offload", "group-offload"])
def test_tiny_vace_on_cuda(vace_dir, offload):
    _cuda_or_skip()
    world, events, requests, results, _ = _explore(vace_dir, offload=offload, device="cuda")
    assert results[0].meta["placement"] == offload
    for req, res in zip(requests, results, strict=True):
        v = req.valid.cpu()
        assert torch.equal(res.rgb[v], req.warped_rgb.cpu()[v])
    assert all(np.isfinite(e.rgb).all() for e in events)


@pytest.mark.gpu
@pytest.mark.slow
def test_real_vace_on_gpu_fits_its_plan():
    _cuda_or_skip()
    model = os.environ.get("LOCI_VACE_MODEL", vace_mod.DEFAULT_MODEL)
    if not weights_present(model):
        pytest.skip(f"weights for {model} are not in the local cache")
    torch.cuda.reset_peak_memory_stats()
    backend = create_synthesis_backend("vace", model=model, vram_gb=24.0)
    pipe = WorldPipeline(synthesis=backend, config=PipelineConfig(width=512))
    world = pipe.seed(_photo())
    traj = make_preset("forward", world.cameras[0], 17, up=world.up, scene_depth=world.scene_depth)
    t0 = time.perf_counter()
    events = list(pipe.explore(world, traj.cameras[1:]))
    per_frame = (time.perf_counter() - t0) / len(events)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"{model}: {per_frame:.2f} s/frame, peak {peak:.1f} GiB, plan {backend.plan.summary()}")
    assert peak <= 24.0 and all(e.rgb.std() > 5 for e in events)


def test_sizes_and_frame_counts_the_model_cannot_take_are_adjusted(vace_dir):
    # The tiny transformer's rotary table covers 32 patches (512 px) a side and 32 latent frames.
    backend = create_synthesis_backend("vace", model=str(vace_dir), steps=1, chunk_size=500)
    assert backend.chunk_size == 4 * 30 - 1 and any(
        "chunk size lowered" in n for n in backend.notes
    )
    valid = torch.ones(48, 64, dtype=torch.bool)
    valid[:, 50:] = False
    (res,) = backend.synthesize([_request(valid)])  # the trained area would be 720x544
    assert res.meta["run_size"] == [512, 384] and res.meta["chunk_frames"] == 1
    assert any("at most 512 px a side" in n for n in backend.info["notes"])


def test_loci_bench_reports_a_painter(vace_dir, tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "--synthesis", "vace", "--model", str(vace_dir), "--steps", "1",
               "--chunk", "4", "--run-area", "native", "--frames", "8", "--width", "64",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 8 and report["chunks"] == 2 and report["device"] == "cpu"
    assert report["painter_s_per_frame"] > 0 and report["reproject_s_per_frame"] > 0
    assert report["plan"]["mode"] == "cpu" and report["peak_rss_mb"] > 0
    assert "plumbing figure" in capsys.readouterr().out
