"""The compiled crack routing (numba) against its torch twin, bit for bit: on synthetic
correspondences that take every branch (sampled in a frame, between a pair's source pixels,
a surface continued, a depth edge left to the painter; frames of other sizes; no stretch
field), and on a real street walk's correspondences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models.memory as memory_module
from models.geometry.cameras import Camera, axis_angle, intrinsics_from_fov
from models.geometry.cracks import crack_pixels, route_cracks
from models.memory import CRACK_PASSES, SpatialMemory
from tests.helpers import DATA_REASON, PHOTOS

FIELDS = ("rgb", "depth", "valid", "source_frame", "source_uv", "confidence", "observed")
STREET = PHOTOS / "street_london_dav2_demo01.jpg"


def _assert_identical(fast, ref) -> None:
    for name in (*FIELDS, "stretch"):
        a, b = getattr(fast, name), getattr(ref, name)
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert torch.equal(a, b), f"{name}: {int((a != b).sum())} values differ"


def _unrouted(mem: SpatialMemory, cam: Camera, ids: list[int], monkeypatch) -> object:
    """The correspondence before crack routing (the composite of the warps)."""
    with monkeypatch.context() as m:
        m.setattr(memory_module, "route_cracks", lambda corr, *a, **k: corr)
        return mem.correspond(cam, ids)


def _synthetic_memory(rng: np.random.Generator) -> tuple[SpatialMemory, list[Camera]]:
    """Three frames of a floor, a far wall and a near box (one frame of another size, one with
    a patch of wrong depth, so that some holes are not seen there) and three targets."""
    mem = SpatialMemory(point_stride=4, cell_size=8)
    cams = []
    for i, (w, h) in enumerate(((64, 48), (80, 60), (64, 48))):
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        depth = np.where(v > h * 0.55, 1.2 * h / np.maximum(v - h * 0.45, 1), 6.0)
        depth[h // 5 : h // 2, w // 4 : w // 2] = 1.5
        if i == 2:
            depth[h // 2 :, w // 2 :] *= 1.4  # disagrees with the others there
        depth[rng.uniform(size=(h, w)) < 0.03] = 0.0
        c2w = np.eye(4)
        c2w[:3, :3] = axis_angle(np.array([0.0, 1.0, 0.0]), 0.04 * i)
        c2w[:3, 3] = [0.05 * i, 0.0, 0.1 * i]
        cam = Camera(intrinsics_from_fov(w, h, 60.0), c2w, w, h)
        rgb = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mem.insert(i, cam, rgb, torch.from_numpy(depth.astype(np.float32)))
        cams.append(cam)
    targets = []
    for k in range(3):
        c2w = np.eye(4)
        c2w[:3, 3] = [0.03 * k, -0.02, 0.08 * k + 0.02]
        targets.append(Camera(intrinsics_from_fov(64, 48, 58.0), c2w, 64, 48))
    return mem, targets


def _punch(corr, rng: np.random.Generator):
    """Cracks punched into the routed pixels: single pixels and 1-3 px lines."""
    valid = corr.valid.clone()
    H, W = valid.shape
    holes = torch.from_numpy(rng.uniform(size=(H, W)) < 0.04)
    for _ in range(6):
        y, x = int(rng.integers(2, H - 2)), int(rng.integers(2, W - 12))
        holes[y : y + int(rng.integers(1, 4)), x : x + 10] = True
    valid &= ~holes
    out = {k: getattr(corr, k).clone() for k in (*FIELDS, "stretch")}
    out["valid"] = valid
    out["depth"] = torch.where(valid, corr.depth, 0.0)
    out["source_frame"] = torch.where(valid, corr.source_frame, -1)
    return type(corr)(**out)


def test_compiled_crack_routing_matches_torch_twin_on_synthetic_scenes(monkeypatch):
    rng = np.random.default_rng(3)
    mem, targets = _synthetic_memory(rng)
    routed = 0
    for cam in targets:
        corr = _punch(_unrouted(mem, cam, [0, 1, 2], monkeypatch), rng)
        for passes in (1, 3, CRACK_PASSES):
            fast = route_cracks(corr, cam, mem.frames, passes=passes)
            ref = route_cracks(corr, cam, mem.frames, passes=passes, reference=True)
            _assert_identical(fast, ref)
        routed += int(fast.valid.sum() - corr.valid.sum())
        assert int(crack_pixels(fast.valid).sum()) < int(crack_pixels(corr.valid).sum())
        # continued (not observed) and sampled pixels both occur
        new = fast.valid & ~corr.valid
        assert bool((~fast.observed[new]).any()) and bool(fast.observed[new].any())
        # without a stretch field, and routed in place
        corr.stretch = None
        ref = route_cracks(corr, cam, mem.frames, passes=2, reference=True)
        fast = route_cracks(corr, cam, mem.frames, passes=2, copy=False)
        assert fast is corr
        _assert_identical(fast, ref)
    assert routed > 100


def test_compiled_crack_routing_unseen_continued_and_depth_edge():
    """The hand-made cases of tests/test_cracks.py through both twins."""
    from types import SimpleNamespace

    from tests.test_cracks import _tiny_corr

    cam = Camera(intrinsics_from_fov(5, 5, 60.0), np.eye(4), 5, 5)
    frame = SimpleNamespace(
        rgb=torch.zeros(5, 5, 3, dtype=torch.uint8), depth=torch.full((5, 5), 100.0), camera=cam
    )
    rgb = torch.full((5, 5, 3), 0.5)
    rgb[1, 1] = 0.0
    corr = _tiny_corr(torch.full((5, 5), 2.0), rgb)
    _assert_identical(
        route_cracks(corr, cam, {0: frame}, passes=2),
        route_cracks(corr, cam, {0: frame}, passes=2, reference=True),
    )
    assert not bool(corr.valid[2, 2])  # the input is not changed


@pytest.mark.skipif(not STREET.is_file(), reason=DATA_REASON)
def test_compiled_crack_routing_matches_torch_twin_on_a_street_walk(monkeypatch):
    """The real street photo, a short forward walk at 192 px: every frame's correspondence
    routed by both twins, bit for bit (thousands of cracks: flying pixels at depth edges)."""
    from models.paths.trajectory import make_preset
    from models.pipeline import PipelineConfig, WorldPipeline
    from storage.formats.images import load_photo

    photo = load_photo(STREET)
    pipe = WorldPipeline(config=PipelineConfig(width=192))
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    cams = make_preset(
        "forward", world.cameras[0], 7, up=world.up, scene_depth=world.scene_depth
    ).cameras[1:]
    mem = world.memory
    routed = 0
    for cam in cams:
        ids = mem.retrieve(cam).frame_ids
        corr = _unrouted(mem, cam, ids, monkeypatch)
        fast = route_cracks(corr, cam, mem.frames, passes=CRACK_PASSES)
        ref = route_cracks(corr, cam, mem.frames, passes=CRACK_PASSES, reference=True)
        _assert_identical(fast, ref)
        routed += int(fast.valid.sum() - corr.valid.sum())
        list(pipe.explore(world, [cam]))  # the frame joins memory, as in a walk
    assert routed > 50
