"""The engine end to end on real data: TUM consistency protocol and revisits on real photos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from storage.formats.images import load_photo
from studio.cli import main
from tests.helpers import PHOTOS, masked_psnr, tum_depth_path, tum_frame_path, tum_trajectory


@pytest.fixture(scope="module")
def tum_world(tmp_path_factory):
    """`loci generate` on TUM frame 0 + sensor depth, at the real poses of frames 1..4."""
    d = tmp_path_factory.mktemp("tum")
    traj = d / "traj.json"
    traj.write_text(json.dumps(tum_trajectory([0, 1, 2, 3, 4])))
    rc = main(
        [
            "generate",
            str(tum_frame_path(0)),
            "--out",
            str(d / "world"),
            "--path",
            str(traj),
            "--depth",
            "file",
            "--depth-file",
            str(tum_depth_path()),
            "--depth-scale",
            "5000",
            "--width",
            "512",
            "--quiet",
        ]
    )
    assert rc == 0
    return d / "world"


def test_tum_consistency_protocol(tum_world):
    world = json.loads((tum_world / "world.json").read_text())
    assert [f["index"] for f in world["frames"]] == [0, 1, 2, 3, 4]
    assert (world["width"], world["height"]) == (512, 384)
    psnrs, covs = [], []
    for f in world["frames"][1:]:
        gen = cv2.imread(str(tum_world / f["rgb"]))[..., ::-1]
        mask = cv2.imread(str(tum_world / f["source_mask"]), cv2.IMREAD_GRAYSCALE) > 0
        real = cv2.imread(str(tum_frame_path(f["index"])))[..., ::-1]
        real = cv2.resize(real, (512, 384), interpolation=cv2.INTER_AREA)
        psnrs.append(masked_psnr(gen, real, mask))
        covs.append(mask.mean())
        assert abs(f["memory_coverage"] - mask.mean()) < 1e-3
    print("TUM masked PSNR per frame", np.round(psnrs, 2), "coverage", np.round(covs, 3))
    # Issue 2: median >= 24.5 dB (a naive 1-pixel splat gets 23.6), coverage >= 60 %.
    assert np.median(psnrs) >= 24.5
    assert np.median(covs) >= 0.60 and min(covs) >= 0.55


def test_tum_poses_are_used_as_given(tum_world):
    world = json.loads((tum_world / "world.json").read_text())
    given = tum_trajectory([0, 1, 2, 3, 4])["frames"]
    for f, g in zip(world["frames"], given, strict=True):
        np.testing.assert_allclose(np.array(f["c2w"]), np.array(g["c2w"]), atol=1e-9)
    traj = json.loads((tum_world / "trajectory.json").read_text())
    assert traj["convention"] == "opencv_c2w" and len(traj["frames"]) == 5
    # K of the photo (640x480) scaled to the working size 512x384.
    assert traj["frames"][0]["K"][0][0] == pytest.approx(535.4 * 0.8)


def _loop_run(photo_name: str, use_memory: bool, frames: int = 20):
    photo = load_photo(PHOTOS / photo_name)
    pipe = WorldPipeline(config=PipelineConfig(use_memory=use_memory))
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm)
    traj = make_preset("loop", world.cameras[0], frames, up=world.up, scene_depth=world.scene_depth)
    events = list(pipe.explore(world, traj.cameras[1:]))
    assert np.array_equal(events[-1].camera.c2w, world.cameras[0].c2w)
    return world.seed_event, events


@pytest.mark.parametrize(
    "photo", ["interior_living_room_geowizard.jpg", "interior_office_03_dsine.png"]
)
def test_revisit_returns_to_the_same_frame(photo):
    first, events = _loop_run(photo, use_memory=True)
    last = events[-1]
    mem_psnr = masked_psnr(last.rgb, first.rgb, last.source_mask)
    mem_full = masked_psnr(last.rgb, first.rgb)
    _, events_nm = _loop_run(photo, use_memory=False)
    nm = events_nm[-1]
    nm_full = masked_psnr(nm.rgb, first.rgb)
    print(
        f"{photo}: memory masked {mem_psnr:.2f} dB cov {last.memory_coverage:.3f} full "
        f"{mem_full:.2f} dB | no-memory masked "
        f"{masked_psnr(nm.rgb, first.rgb, nm.source_mask):.2f} dB cov {nm.memory_coverage:.3f} "
        f"full {nm_full:.2f} dB"
    )
    assert mem_psnr >= 35.0
    assert last.memory_coverage >= 0.95
    # The ablation forgets: what left the view is painted again, and differently.
    assert nm.memory_coverage < last.memory_coverage - 0.1
    assert nm_full < mem_full - 5.0


def test_frames_stream_one_by_one():
    photo = load_photo(PHOTOS / "interior_office_03_dsine.png")
    pipe = WorldPipeline()
    world = pipe.seed(photo.rgb)
    traj = make_preset("orbit", world.cameras[0], 6, up=world.up, scene_depth=world.scene_depth)
    gen = pipe.explore(world, traj.cameras[1:])
    first = next(gen)  # a generator: the first frame arrives before the others are made
    assert first.index == 1 and world.n_frames == 2
    rest = list(gen)
    assert [e.index for e in rest] == [2, 3, 4, 5]
    for e in [first, *rest]:
        assert e.rgb.shape == (world.height, world.width, 3) and e.rgb.dtype == np.uint8
        assert e.depth.shape == (world.height, world.width) and (e.depth > 0).all()
        assert e.retrieved and e.retrieved[0] == e.index - 1
        assert {"retrieve", "correspond", "synthesize", "lift", "total"} <= e.timings.keys()


def test_same_seed_same_world():
    photo = load_photo(PHOTOS / "street_london_dav2_demo01.jpg")
    outs = []
    for _ in range(2):
        pipe = WorldPipeline(config=PipelineConfig(width=256))
        world = pipe.seed(photo.rgb)
        traj = make_preset("dolly", world.cameras[0], 5, up=world.up, scene_depth=world.scene_depth)
        outs.append([e.rgb for e in pipe.explore(world, traj.cameras[1:])])
    for a, b in zip(*outs, strict=True):
        assert np.array_equal(a, b)
