"""models.memory: retrieval on a synthetic room with known answers, the fast retrieval against
its slow twin, frustum culling, confidence-weighted gains, and per-pixel compositing in
correspond()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.geometry.cameras import Camera, intrinsics_from_fov, look_at
from models.memory import SpatialMemory, retrieve_reference

W, H = 64, 48
K = intrinsics_from_fov(W, H, 80.0)
UP = np.array([0.0, -1.0, 0.0])
HALF = 3.0  # the room is a 6 x 6 m box of four walls: x = +-3 (east/west), z = +-3 (north/south)
# wall id -> (axis, sign); north = +z, east = +x, south = -z, west = -x
WALLS = {"north": (2, 1.0), "east": (0, 1.0), "south": (2, -1.0), "west": (0, -1.0)}
WALL_COLOUR = {
    "north": (200, 40, 40),
    "east": (40, 200, 40),
    "south": (40, 40, 200),
    "west": (200, 200, 40),
}


def _camera(eye, yaw_deg: float, pitch_deg: float = 0.0) -> Camera:
    """Camera at ``eye`` looking at compass heading ``yaw_deg`` (0 = north/+z, 90 = east/+x)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    d = np.array(
        [math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
    )
    eye = np.asarray(eye, float)
    return Camera(K, look_at(eye, eye + d, UP), W, H)


def _render_room(cam: Camera) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Analytic ray/plane rendering: rgb (H, W, 3) uint8, z-depth (H, W), wall name per pixel."""
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
    rays = np.stack(
        [(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1
    )
    d = rays @ cam.c2w[:3, :3].T  # world direction with z_cam = 1: ray parameter = z-depth
    o = cam.center
    best = np.full(u.shape, np.inf)
    which = np.full(u.shape, "", dtype=object)
    for name, (axis, sign) in WALLS.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (sign * HALF - o[axis]) / d[..., axis]
        t = np.where(t > 1e-6, t, np.inf)
        closer = t < best
        best = np.where(closer, t, best)
        which[closer] = name
    hit = o + d * best[..., None]
    rgb = np.zeros(u.shape + (3,))
    for name, col in WALL_COLOUR.items():
        m = which == name
        rgb[m] = col
    # texture: a checker of 0.5 m so frames are not uniform
    checker = (
        (np.floor(hit[..., 0] * 2) + np.floor(hit[..., 1] * 2) + np.floor(hit[..., 2] * 2)) % 2
    ) * 40
    rgb = np.clip(rgb + checker[..., None], 0, 255).astype(np.uint8)
    return torch.from_numpy(rgb), torch.from_numpy(best.astype(np.float32)), which


def _insert(mem: SpatialMemory, fid: int, cam: Camera, conf: float | torch.Tensor = 1.0):
    rgb, depth, _ = _render_room(cam)
    c = torch.full_like(depth, conf) if isinstance(conf, float) else conf
    return mem.insert(fid, cam, rgb, depth, confidence=c)


def _room_memory(**kw) -> SpatialMemory:
    mem = SpatialMemory(point_stride=4, cell_size=8, **kw)
    _insert(mem, 0, _camera([0, 0, 0], 0))  # north
    _insert(mem, 1, _camera([0, 0, 0], 90))  # east
    _insert(mem, 2, _camera([0, 0, 0], 180))  # south
    _insert(mem, 3, _camera([0, 0, 0], 270))  # west
    _insert(mem, 4, _camera([1.0, -0.3, -1.0], 200, pitch_deg=15))  # extra: south-ish, lower
    _insert(mem, 5, _camera([-1.0, 0.2, 1.0], 250))  # extra, latest: west-ish
    return mem


def test_render_room_sanity():
    rgb, depth, which = _render_room(_camera([0, 0, 0], 0))
    assert (which == "north").all()
    assert float(depth[H // 2, W // 2]) == pytest.approx(3.0, abs=0.05)
    _, _, which = _render_room(_camera([0, 0, 0], 45))
    assert (which == "north").any() and (which == "east").any()


# ---------------------------------------------------------------------------------------------
# Retrieval: known answers


def test_retrieve_north_wall():
    mem = _room_memory()
    res = mem.retrieve(_camera([0.2, 0.1, -0.5], 5))
    assert res.frame_ids[0] == 5  # the latest frame always takes part, first
    assert 0 in res.frame_ids
    assert 2 not in res.frame_ids and 4 not in res.frame_ids
    assert res.coverage > 0.95
    assert len(res.gains) == len(res.frame_ids)


def test_retrieve_corner_needs_both_walls():
    mem = _room_memory()
    res = mem.retrieve(_camera([0.0, 0.0, 0.0], 45))
    assert {0, 1} <= set(res.frame_ids)
    assert 2 not in res.frame_ids and 3 not in res.frame_ids
    assert res.coverage > 0.95
    # each of the two walls brings a large share of the view
    gains = dict(zip(res.frame_ids, res.gains, strict=True))
    ncell = math.ceil(W / 8) * math.ceil(H / 8)
    assert gains[0] > 0.2 * ncell and gains[1] > 0.2 * ncell


def test_latest_frame_always_in_even_when_it_sees_nothing():
    mem = _room_memory()
    _insert(mem, 9, _camera([0, 0, 0], 180))  # latest looks south
    res = mem.retrieve(_camera([0, 0, 0], 0))  # target looks north
    assert res.frame_ids[0] == 9
    assert res.gains[0] == 0
    assert 0 in res.frame_ids
    assert mem.retrieve(_camera([0, 0, 0], 0), max_frames=1).frame_ids == [9]


def test_frustum_culling_removes_frames_behind():
    mem = _room_memory()
    target = _camera([0, 0, 0], 0)
    cand, cover = mem.coverage_matrix(target)
    order = mem.frame_ids
    cand_ids = {order[i] for i in cand.tolist()}
    assert 2 not in cand_ids  # the south wall is behind a north-looking camera
    assert 0 in cand_ids
    assert mem.retrieve(target).candidates == len(cand_ids) < len(mem)
    assert cover.shape == (len(cand_ids), math.ceil(W / 8) * math.ceil(H / 8))
    # the north frame covers every cell with confidence 1
    row = cand.tolist().index(order.index(0))
    assert bool((cover[row] == 1).all())


def test_retrieve_matches_reference_on_random_targets():
    mem = _room_memory(max_frames=3)
    frames = [
        (mem.frames[i].points_world.numpy(), mem.frames[i].points_conf.numpy())
        for i in mem.frame_ids
    ]
    ncell = math.ceil(W / 8) * math.ceil(H / 8)
    rng = np.random.default_rng(0)
    multi = 0
    for _ in range(12):
        target = _camera(
            rng.uniform(-1.5, 1.5, 3) * [1, 0.3, 1], rng.uniform(0, 360), rng.uniform(-20, 20)
        )
        fast = mem.retrieve(target)
        ref = retrieve_reference(
            frames,
            target,
            8,
            3,
            occlusion_tol=mem.occlusion_tol,
            min_gain=max(1e-6, mem.min_gain * ncell),
        )
        assert fast.frame_ids == [mem.frame_ids[i] for i in ref]
        multi += len(ref) > 2
    assert multi >= 3  # the targets exercise the greedy loop beyond the latest frame


def test_confidence_weighted_gain():
    mem = SpatialMemory(point_stride=4, cell_size=8)
    north = _camera([0, 0, 0], 0)
    _insert(mem, 0, north, 0.5)  # resampled copy (lower index: a plain count would pick it)
    _insert(mem, 1, north, 1.0)  # photographed
    _insert(mem, 2, _camera([0, 0, 0], 180))  # latest, looking away
    res = mem.retrieve(_camera([0.1, 0, 0], 3))
    assert res.frame_ids == [2, 1]

    # a revisit: the latest frame is a resampled copy; the original pixels still gain (0.5/cell)
    mem = SpatialMemory(point_stride=4, cell_size=8)
    _insert(mem, 0, north, 1.0)
    _insert(mem, 1, _camera([0, 0, 0], 90))
    _insert(mem, 2, north, 0.5)
    res = mem.retrieve(north)
    assert res.frame_ids[:2] == [2, 0]
    ncell = math.ceil(W / 8) * math.ceil(H / 8)
    assert res.gains[1] == pytest.approx(0.5 * ncell, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# correspond()


def test_correspond_identity_reproduces_frame():
    mem = _room_memory()
    for fid in (0, 4):
        f = mem.frames[fid]
        corr = mem.correspond(f.camera, [fid])
        has = f.depth > 0
        assert torch.equal(corr.valid, has)
        assert torch.equal(corr.depth[has], f.depth[has])
        assert torch.equal((corr.rgb * 255).round().to(torch.uint8)[has], f.rgb[has])
        assert bool((corr.source_frame[has] == fid).all())
        v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
        assert torch.allclose(corr.source_uv[..., 0][has], u[has], atol=1e-3)
        assert torch.allclose(corr.source_uv[..., 1][has], v[has], atol=1e-3)
        assert torch.allclose(corr.confidence[has], f.confidence[has].float())
        assert corr.coverage == pytest.approx(float(has.float().mean()))


@pytest.mark.parametrize("order", [[10, 11], [11, 10]])
def test_correspond_higher_confidence_wins_per_pixel(order):
    mem = SpatialMemory(point_stride=4, cell_size=8)
    cam = _camera([0, 0, 0], 0)
    rgb, depth, _ = _render_room(cam)
    left = torch.zeros(H, W, dtype=torch.bool)
    left[:, : W // 2] = True
    conf_a = torch.where(left, 1.0, 0.6)
    conf_b = torch.where(left, 0.6, 1.0)
    rgb_b = 255 - rgb  # same geometry, different colours: which frame won is visible
    mem.insert(10, cam, rgb, depth, confidence=conf_a)
    mem.insert(11, cam, rgb_b, depth, confidence=conf_b)
    corr = mem.correspond(_camera([0, 0, 0], 0), order)
    assert bool((corr.source_frame[left] == 10).all())
    assert bool((corr.source_frame[~left] == 11).all())
    out = (corr.rgb * 255).round().to(torch.uint8)
    assert torch.equal(out[left], rgb[left]) and torch.equal(out[~left], rgb_b[~left])
    assert bool((corr.confidence == 1.0).all())


@pytest.mark.parametrize(
    "near_conf,near_wins", [(0.2, False), (0.45, False), (0.55, True), (1.0, True)]
)
@pytest.mark.parametrize("real_first", [True, False])
@pytest.mark.parametrize("same_centre", [False, True])
def test_correspond_weak_nearer_surface_does_not_hide_real_observation(
    near_conf, near_wins, real_first, same_centre
):
    """The rule in correspond(): a nearer surface occludes unless it is a far weaker guess:
    the nearer one wins iff 2 * q_near >= q_far (q = confidence at unit magnification). Seen
    from the target's own centre (no parallax) the better frame's visibility holds: nothing
    nearer was along its rays, so a weaker nearer claim loses (how a pure rotation returns)."""
    mem = SpatialMemory(point_stride=4, cell_size=8)
    cam = _camera([0, 0, 0], 0)
    rgb, depth, _ = _render_room(cam)
    blob = torch.zeros(H, W, dtype=torch.bool)
    blob[16:32, 20:44] = True
    painted_depth = torch.where(blob, torch.tensor(1.5), depth)
    painted_rgb = torch.where(blob[..., None], torch.tensor([255, 0, 255], dtype=torch.uint8), rgb)
    conf_p = torch.where(blob, near_conf, 1.0)
    inserts = [(20, rgb, depth, torch.ones_like(depth)), (21, painted_rgb, painted_depth, conf_p)]
    if not real_first:
        inserts.reverse()
    for fid, r, d, c in inserts:
        mem.insert(fid, cam, r, d, confidence=c)
    # a small step sideways: the pixels keep about unit magnification, but parallax is real
    target = cam if same_centre else _camera([0.02, 0, 0], 0)
    corr = mem.correspond(target, [fid for fid, *_ in inserts])
    alone = mem.correspond(target, [21])  # where the blob lands in the target
    inner = (alone.depth > 1.4) & (alone.depth < 1.6)
    inner = torch.nn.functional.max_pool2d((~inner)[None, None].float(), 3, 1, 1)[0, 0] == 0
    assert int(inner.sum()) > 150
    wins = near_wins and (not same_centre or near_conf >= 1.0)
    expect_src, expect_depth = (21, 1.5) if wins else (20, 3.0)
    assert bool((corr.source_frame[inner] == expect_src).all())
    assert torch.allclose(
        corr.depth[inner], torch.full_like(corr.depth[inner], expect_depth), atol=0.1
    )
    # outside the blob both frames see the same wall
    if same_centre:
        assert bool(corr.valid[~blob].all())
        assert torch.allclose(corr.depth[~blob], depth[~blob])


def test_correspond_fills_stretch_and_routes_one_pixel_cracks():
    mem = _room_memory()
    f = mem.frames[0]
    # Knock single pixels out of the frame's depth: unknown, so never splatted. In the
    # correspondence they are holes inside a routed wall, and get routed from around them.
    depth = f.depth.clone()
    depth[10, 10] = 0.0
    depth[20, 33] = 0.0
    mem2 = SpatialMemory(point_stride=4, cell_size=8)
    mem2.insert(0, f.camera, f.rgb, depth)
    corr = mem2.correspond(f.camera, [0])
    assert corr.stretch is not None and corr.stretch.shape == (H, W)
    np.testing.assert_allclose(corr.stretch[corr.valid].numpy(), 1.0, atol=1e-4)
    for y, x in ((10, 10), (20, 33)):
        assert bool(corr.valid[y, x]) and int(corr.source_frame[y, x]) == 0
        assert float(corr.depth[y, x]) == pytest.approx(float(f.depth[y, x]), rel=0.02)
        np.testing.assert_allclose(corr.source_uv[y, x].numpy(), [x, y], atol=0.05)
        assert (corr.rgb[y, x] * 255 - f.rgb[y, x].float()).abs().max() <= 1.0
