"""Training data for ``loci train``: footage readers, the sample builder, the sample store.

The builder's acceptance check runs on the real TUM sequence: the conditions it records equal,
to the bit, what ``WorldPipeline.explore`` routes at the same cameras from the same memory.
Readers are checked against independent derivations (TUM ground truth against the shared
``cameras_opencv.json``; COLMAP binary written by pycolmap against the text model).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from models.depth import create_depth_backend
from models.geometry.cameras import opencv_to_opengl_c2w
from models.pipeline import FrameRecord, PipelineConfig, WorldPipeline
from models.synthesis import create_synthesis_backend
from models.train.footage import footage_camera
from models.train.samples import SampleBuilder, SampleConfig
from storage.errors import StorageError
from storage.train.footage import read_footage
from storage.train.shards import SampleDataset, SampleStore
from studio.cli.train import footage_frames
from tests.helpers import TUM

needs_tum = pytest.mark.skipif(not TUM.is_dir(), reason="shared TUM sequence not present")


@pytest.fixture(scope="module")
def tum():
    if not TUM.is_dir():
        pytest.skip("shared TUM sequence not present")
    return read_footage(TUM)


# ---------------------------------------------------------------------------------------------
# Readers
@needs_tum
def test_tum_groundtruth_reader_matches_the_derived_cameras(tum):
    raw = read_footage(TUM, kind="tum")  # groundtruth.txt + rgb/ + depth/, poses interpolated here
    assert tum.kind == "posed" and raw.kind == "tum" and len(raw) == len(tum) == 17
    for a, b in zip(tum.items, raw.items, strict=True):
        assert a.image == b.image
        ca = footage_camera(a.K, a.width, a.height, a.pose, a.pose_value)
        cb = footage_camera(b.K, b.width, b.height, b.pose, b.pose_value, 0.0, b.pose_weight)
        np.testing.assert_allclose(cb.c2w, ca.c2w, atol=1e-6)
        np.testing.assert_allclose(cb.K, ca.K)
        assert (a.depth is None) == (b.depth is None)  # only frame 0 has depth within 20 ms
    np.testing.assert_array_equal(raw.depth(0), tum.depth(0))
    assert raw.depth(1) is None


def test_colmap_binary_written_by_pycolmap_reads_like_the_text_model(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    txt, binary = tmp_path / "txt" / "sparse" / "0", tmp_path / "bin" / "sparse"
    txt.mkdir(parents=True)
    binary.mkdir(parents=True)
    (txt / "cameras.txt").write_text("# c\n1 PINHOLE 64 48 53.5 53.9 32.5 24.5\n")
    q = np.array([0.9, 0.1, 0.2, 0.3]) / np.linalg.norm([0.9, 0.1, 0.2, 0.3])
    (txt / "images.txt").write_text(
        f"# i\n1 {' '.join(map(str, q))} 0.5 -0.2 1.0 1 a.png\n10 20 1 30 5 -1\n"
        "2 1 0 0 0 0.1 0 0 1 b.png\n\n"
    )
    (txt / "points3D.txt").write_text("1 0.1 0.2 3.0 255 0 0 0.5 1 0\n")
    pycolmap.Reconstruction(str(txt)).write_binary(str(binary))
    for root in (tmp_path / "txt", tmp_path / "bin"):
        images = root / "images"
        images.mkdir()
        for name in ("a.png", "b.png"):
            cv2.imwrite(str(images / name), np.zeros((48, 64, 3), np.uint8))
    a, b = read_footage(tmp_path / "txt"), read_footage(tmp_path / "bin")
    assert a.kind == b.kind == "colmap" and not a.metric
    ref = pycolmap.Reconstruction(str(binary))
    for x, y in zip(a.items, b.items, strict=True):
        cx = footage_camera(x.K, x.width, x.height, x.pose, x.pose_value, x.pixel_centre)
        cy = footage_camera(y.K, y.width, y.height, y.pose, y.pose_value, y.pixel_centre)
        np.testing.assert_allclose(cx.c2w, cy.c2w, atol=1e-12)
        np.testing.assert_allclose(cx.K, cy.K)
        # pycolmap's own world-to-camera pose agrees with ours (inverse of c2w).
        img = next(i for i in ref.images.values() if i.name == f"{x.name}.png")
        np.testing.assert_allclose(img.cam_from_world().matrix(), cx.w2c[:3], atol=1e-9)
    # COLMAP puts the first pixel's centre at 0.5: OpenCV's principal point is 0.5 less.
    assert a.items[0].K[0, 2] == 32.5 and cx.K[0, 2] == pytest.approx(32.0)
    np.testing.assert_allclose(a.items[0].sparse_xyz, [[0.1, 0.2, 3.0]])
    assert b.items[1].sparse_xyz.shape == (0, 3)


def test_colmap_distorted_camera_is_refused(tmp_path):
    sparse = tmp_path / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text("1 SIMPLE_RADIAL 64 48 50 32 24 0.08\n")
    (sparse / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 1 0 0 1 b.png\n\n")
    (tmp_path / "images").mkdir()
    with pytest.raises(StorageError, match="undistort"):
        read_footage(tmp_path)


@needs_tum
def test_nerfstudio_reader_converts_opengl_poses_depth_and_masks(tmp_path, tum):
    frames, docs = footage_frames(tum)[:3], []
    for i, f in enumerate(frames):
        rgb = f.load_rgb()
        cv2.imwrite(str(tmp_path / f"{i}.png"), rgb[..., ::-1])
        depth_mm = np.full(rgb.shape[:2], 1500 + i, np.uint16)
        cv2.imwrite(str(tmp_path / f"{i}.depth.png"), depth_mm)
        mask = np.full(rgb.shape[:2], 255, np.uint8)
        mask[:, :10] = 0
        cv2.imwrite(str(tmp_path / f"{i}.mask.png"), mask)
        K = f.camera.K
        docs.append({"file_path": f"{i}.png", "depth_file_path": f"{i}.depth.png",
                     "mask_path": f"{i}.mask.png", "fl_x": K[0, 0], "fl_y": K[1, 1],
                     "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5,
                     "transform_matrix": opencv_to_opengl_c2w(f.camera.c2w).tolist()})  # fmt: skip
    w, h = frames[0].camera.width, frames[0].camera.height
    (tmp_path / "transforms.json").write_text(json.dumps({"w": w, "h": h, "frames": docs}))
    ns = read_footage(tmp_path)
    assert ns.kind == "nerfstudio" and len(ns) == 3
    for i, (f, g) in enumerate(zip(frames, footage_frames(ns), strict=True)):
        np.testing.assert_allclose(g.camera.c2w, f.camera.c2w, atol=1e-12)
        np.testing.assert_allclose(g.camera.K, f.camera.K, atol=1e-12)
        np.testing.assert_allclose(g.load_depth(), (1500 + i) / 1000.0)  # millimetres -> metres
        trust = g.load_trust()
        assert not trust[:, :10].any() and trust[:, 10:].all()


def test_unknown_folder_says_what_is_accepted(tmp_path):
    with pytest.raises(StorageError, match="COLMAP model"):
        read_footage(tmp_path)


# ---------------------------------------------------------------------------------------------
# The builder: conditions equal what explore routes
class _Spy:
    """The offline painter, keeping the requests the pipeline sent it."""

    def __init__(self):
        self.inner = create_synthesis_backend("reproject")
        self.name, self.chunk_size, self.requests = "reproject", 1, []

    def synthesize(self, requests):
        self.requests.extend(requests)
        return self.inner.synthesize(requests)


@needs_tum
def test_recorded_conditions_equal_what_explore_routes(tum, tmp_path):
    width = 128
    frames = footage_frames(tum)[:7]
    config = SampleConfig(width=width, min_coverage=0.0, max_coverage=1.0)
    builder = SampleBuilder(config, depth=create_depth_backend("layout"))
    steps = list(builder.build("tum", frames))
    samples = {s.order: s.sample for s in steps if s.sample is not None}
    assert sorted(samples) == list(range(1, 7))
    config = PipelineConfig(width=width)

    # Target 1: explore seeded from the photo and its sensor depth, as `loci generate` does.
    cam0 = frames[0].camera
    pipe = WorldPipeline(
        depth=create_depth_backend("file", path=str(tum.items[0].depth), scale=5000.0),
        synthesis=(spy := _Spy()), config=config,
    )  # fmt: skip
    world = pipe.seed(frames[0].load_rgb(), cam0.K, c2w=cam0.c2w)
    (event,) = pipe.explore(world, [frames[1].camera])
    _same(spy.requests[0], samples[1])
    assert samples[1].retrieved == [frames[0].name] and event.retrieved == [0]

    # Targets 2..6: a world holding what the builder held in memory, restored, then explored.
    for k in range(2, 7):
        records = [FrameRecord(st.order, st.camera, st.rgb, st.depth,
                               (st.depth > 0).astype(np.float32)) for st in steps[:k]]  # fmt: skip
        pipe = WorldPipeline(synthesis=(spy := _Spy()), config=config)
        cam = steps[0].camera
        world = pipe.restore({"width": cam.width, "height": cam.height, "up": [0, -1, 0]}, records)
        (event,) = pipe.explore(world, [frames[k].camera])
        _same(spy.requests[0], samples[k])
        assert [frames[i].name for i in event.retrieved] == samples[k].retrieved

    # Stored and read back, the conditions keep float16 precision (1/8 of a uint8 level).
    store = SampleStore(tmp_path / "ds", {"width": width, "height": 96, "config": {}}, 4)
    for s in samples.values():
        store.add(s.arrays(), s.info())
    store.finish()
    ds = SampleDataset(tmp_path / "ds")
    for i, info in enumerate(ds.infos):
        s, back = samples[info["order"]], ds[i]
        np.testing.assert_array_equal(back["target"], s.target)
        np.testing.assert_array_equal(back["valid"], s.valid)
        assert np.abs(back["warped_rgb"] - s.warped_rgb).max() <= 1 / 2048
        assert np.abs(back["warped_depth"] - s.warped_depth).max() <= 1e-3 * s.warped_depth.max()


def _same(request, sample):
    assert torch.equal(request.valid, torch.from_numpy(sample.valid))
    assert torch.equal(request.warped_rgb, torch.from_numpy(sample.warped_rgb))
    assert torch.equal(request.warped_depth, torch.from_numpy(sample.warped_depth))
    np.testing.assert_allclose(request.camera.K, sample.camera.K)
    np.testing.assert_array_equal(request.camera.c2w, sample.camera.c2w)


# ---------------------------------------------------------------------------------------------
# loci train prepare: shards, resume, refusals
def _prepare(out, *extra):
    from studio.cli import main

    args = ["train", "prepare", str(TUM), "--out", str(out), "--width", "64", "--quiet"]
    # Every frame pair becomes a sample (the coverage filter is tested on its own): the
    # interruption below then falls at a known place in the shard sequence.
    return main([*args, "--shard-size", "4", "--max-coverage", "1.0", *extra])


@needs_tum
def test_prepare_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    from models.depth.layout import LayoutDepth

    assert _prepare(tmp_path / "full") == 0
    full = SampleDataset(tmp_path / "full")
    assert full.complete and len(full) == 16 and (tmp_path / "full" / "preview.png").is_file()

    calls = {"depth": 0}
    estimate = LayoutDepth.estimate

    def counted(self, rgb, K):
        calls["depth"] += 1
        if calls["depth"] == 9:  # the process dies while estimating frame 9's depth
            raise KeyboardInterrupt
        return estimate(self, rgb, K)

    monkeypatch.setattr(LayoutDepth, "estimate", counted)
    assert _prepare(tmp_path / "part") == 130
    part = SampleDataset(tmp_path / "part")
    assert not part.complete and len(part) == 8  # two full shards; the third was in memory
    assert _prepare(tmp_path / "part") == 2  # an existing dataset is not silently rebuilt
    calls["depth"] = -1000
    assert _prepare(tmp_path / "part", "--resume") == 0
    # Frames 1..8 had cached depth: the backend ran only for frames 9..16.
    assert calls["depth"] == -1000 + 8
    resumed = SampleDataset(tmp_path / "part")
    assert resumed.complete and [i["key"] for i in resumed.infos] == [i["key"] for i in full.infos]
    for i in range(len(full)):
        a, b = full[i], resumed[i]
        for k in ("target", "valid", "warped_rgb", "warped_depth", "trust"):
            np.testing.assert_array_equal(a[k], b[k])
    # Resuming with other settings would mix two datasets: refused.
    assert _prepare(tmp_path / "part", "--resume", "--max-retrieved", "2") == 2


# ---------------------------------------------------------------------------------------------
# Settings
def test_config_from_toml_json_and_overrides(tmp_path):
    from models.train.config import TrainError, load_config, parse_override

    toml = tmp_path / "train.toml"
    toml.write_text("[train]\nsteps = 40\nlr = 2e-4\nself_aug_t = [0.2, 0.4]\n")
    cfg = load_config(toml, {"steps": 50, "rank": None})
    assert (cfg.steps, cfg.lr, cfg.self_aug_t, cfg.rank) == (50, 2e-4, [0.2, 0.4], 16)
    js = tmp_path / "train.json"
    js.write_text(json.dumps({"batch_size": 2, "self_aug_p": 0}))
    cfg = load_config(js, dict([parse_override("target_modules=['to_q']"),
                                parse_override("prompt=a quiet office")]))  # fmt: skip
    assert cfg.batch_size == 2 and cfg.self_aug_p == 0.0 and cfg.target_modules == ["to_q"]
    assert cfg.prompt == "a quiet office"
    for bad, match in (({"stepz": 3}, "unknown setting"), ({"steps": 2.5}, "steps must be int"),
                       ({"self_aug_p": 1.5}, "self_aug_p"), ({"self_aug_t": [0.6, 0.2]}, "lo < hi"),
                       ({"mixed_precision": "fp8"}, "mixed_precision")):  # fmt: skip
        with pytest.raises(TrainError, match=match):
            load_config(None, bad)
    toml.write_text("steps = ")
    with pytest.raises(TrainError, match="cannot be read"):
        load_config(toml)


# ---------------------------------------------------------------------------------------------
# Drift measures
def test_patch_swd_matches_its_reference_and_colour_shift_is_delta_e():
    from models.train.drift import _pool, _sliced_w1, drift_report, patch_swd, patch_swd_reference

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (30, 34, 3), dtype=np.uint8)
    b = (rng.random((28, 32, 3)) * 120).astype(np.uint8)
    ma = np.ones(a.shape[:2], bool)
    ma[:5, :6] = False
    mb = np.ones(b.shape[:2], bool)
    mb[16:, 16:] = False
    for s in (1, 2):
        fast = _sliced_w1(_pool([(a, ma)], s, 0), _pool([(b, mb)], s, 1), 7 * s)
        assert fast == pytest.approx(patch_swd_reference(a, ma, b, mb, s, 0), rel=1e-5)
    assert patch_swd([(a, ma)], [(a, ma)]) == 0.0
    assert math.isnan(patch_swd([(a, ma)], [(b, np.zeros_like(mb))]))  # no whole patch inside
    # A walk whose paint turns steadily redder: colour shift grows, and matches CIELAB.
    grey = np.full((24, 32, 3), 128, np.uint8)
    walk = []
    for i in range(10):
        img = grey.copy()
        img[:, 16:] = (128 + 10 * i, 128, 128)
        painted = np.zeros(img.shape[:2], bool)
        painted[:, 16:] = True
        walk.append((img, painted))
    rep = drift_report(walk, photo=grey, early=0.1, late=0.1)
    shifts = [r["delta_e"] for r in rep.per_frame]
    assert shifts[0] == 0 and all(x < y for x, y in zip(shifts, shifts[1:], strict=False))
    lab = cv2.cvtColor(
        np.array([[[128, 128, 128], [218, 128, 128]]], np.uint8).astype(np.float32) / 255,
        cv2.COLOR_RGB2LAB,
    )
    assert rep.summary["delta_e_early_late"] == pytest.approx(
        float(np.linalg.norm(lab[0, 1] - lab[0, 0])), abs=1e-3
    )
    assert math.isfinite(rep.summary["swd_early_late"]) and rep.summary["swd_early_late"] > 0
