"""Mesh lift outdoors: the depth-proportional truncation band (models/lift/tsdf.py) against its
slow twin and on a far, noisy facade; the backdrop shell (models/lift/backdrop.py) against its
twin, its seams and dedup across frames; and the backdrop through lift, export and eval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.geometry.cameras import look_at
from models.lift.backdrop import (
    backdrop_consensus,
    backdrop_consensus_reference,
    backdrop_mesh,
    backdrop_mesh_reference,
)
from models.lift.mesh_render import render_mesh
from models.lift.tsdf import TSDFError, extract_mesh, fuse, fuse_reference
from tests.helpers import PHOTOS
from tests.test_mesh import _K, _sphere_frames

UP = np.array([0.0, -1.0, 0.0])


def test_band_grows_with_depth_up_to_its_cap() -> None:
    # Sphere 2 m away, voxel 0.1 m (fast path against the twin: tests/test_mesh.py BANDS).
    frames = _sphere_frames(2, 32, 24, 26.0)
    lo, shape = (-10, -10, -10), (20, 20, 20)
    fixed, w_fixed, _ = fuse_reference(frames, 0.1, lo, shape, trunc=0.2)
    wide, w_wide, _ = fuse_reference(frames, 0.1, lo, shape, trunc=0.2, rel_trunc=0.3)
    # Behind the surface the relative band observes voxels the fixed one never reaches.
    behind_fixed = ((w_fixed > 0) & (fixed < 0)).sum()
    behind_wide = ((w_wide > 0) & (wide < 0)).sum()
    assert behind_wide > 1.5 * behind_fixed > 0, (behind_fixed, behind_wide)
    for cap in (float("inf"), 0.45):
        vol = fuse(frames, voxel_size=0.1, trunc=0.2, rel_trunc=0.3, max_band=cap)
        assert vol.band(np.float32(2.0)) == pytest.approx(min(0.6, cap))
    with pytest.raises(TSDFError):
        fuse(frames, voxel_size=0.1, rel_trunc=1.5)
    with pytest.raises(TSDFError):
        fuse(frames, voxel_size=0.1, max_band=0.1)


def _facade_frames(n: int, z: float, bias: np.ndarray) -> list:
    """A wall at depth ``z`` seen by ``n`` cameras walking towards it; frame i's depth map is
    scaled by ``1 + bias[i]`` (an estimate's per-frame scale error)."""
    width, height, f = 64, 48, 60.0
    K = _K(width, height, f)
    frames = []
    for i in range(n):
        eye = np.array([0.0, 0.0, 0.5 * i])
        c2w = look_at(eye, eye + [0, 0, 1.0], UP)
        depth = np.full((height, width), (z - eye[2]) * (1 + bias[i]), np.float32)
        frames.append((np.full((height, width, 3), 128, np.uint8), depth, K, c2w))
    return frames


@pytest.mark.parametrize("seed", [1, 3])
def test_relative_band_fuses_disagreeing_far_frames(seed: int) -> None:
    # A facade 30 m away, six frames whose scales disagree by 1.5 % (about 0.45 m): with a fixed
    # 0.4 m band each frame keeps its own layer (a stack of surfaces, the nearest in front, up
    # to 0.7 m off); a band of 5 % of the depth fuses them into one surface at their mean.
    bias = np.random.default_rng(seed).normal(0, 0.015, 6)
    frames = _facade_frames(6, 30.0, bias)
    _, _, K, c2w = frames[0]
    mean = float(np.mean([30.0 * (1 + b) for b in bias]))
    clean = len(extract_mesh(fuse(_facade_frames(6, 30.0, np.zeros(6)), voxel_size=0.1))[1])

    def fused(rel: float) -> tuple[float, int]:
        v, f, c = extract_mesh(fuse(frames, voxel_size=0.1, rel_trunc=rel))
        r = render_mesh(v, f, c, c2w, K, 64, 48)
        assert r["mask"][:, 1:-1].mean() > 0.99
        return abs(float(np.median(r["depth"][r["mask"]])) - mean), len(f)

    (err_fixed, faces_fixed), (err_rel, faces_rel) = fused(0.0), fused(0.05)
    assert err_rel < 0.05, err_rel
    assert faces_rel < 1.4 * clean, (faces_rel, clean)
    assert err_fixed > 0.15 or faces_fixed > 2 * clean, (err_fixed, faces_fixed, clean)


def _sky_frame(width: int = 24, height: int = 18, f: float = 20.0, yaw: float = 0.0) -> tuple:
    """A street-like frame: the upper third is sky at 150 m, the rest a wall at 10 m."""
    K = _K(width, height, f)
    c2w = look_at(np.zeros(3), [np.sin(yaw), 0, np.cos(yaw)], UP)
    depth = np.full((height, width), 10.0, np.float32)
    depth[: height // 3] = 150.0
    rng = np.random.default_rng(int(yaw * 100))
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return rgb, depth, K, c2w


def _triangles(mesh: tuple) -> np.ndarray:
    v, f, _ = mesh
    tri = np.round(v[f].reshape(len(f), -1), 3)
    return tri[np.lexsort(tri.T[::-1])]


def test_backdrop_matches_reference() -> None:
    frame = _sky_frame()
    for stride in (1, 2, 3):
        fast = backdrop_mesh([frame], far=100.0, stride=stride, grow=0)
        ref = backdrop_mesh_reference([frame], far=100.0, stride=stride)
        assert fast is not None and ref is not None
        assert len(fast[1]) == len(ref[1]) > 0
        assert np.allclose(_triangles(fast), _triangles(ref), atol=2e-3)
        # Colours: the same multiset of vertex colours.
        assert sorted(map(tuple, fast[2])) == sorted(map(tuple, ref[2]))
    # Nothing far: no backdrop; bad input: a clear error.
    near = (frame[0], np.full_like(frame[1], 5.0), frame[2], frame[3])
    assert backdrop_mesh([near], far=100.0) is None
    with pytest.raises(ValueError):
        backdrop_mesh([frame], far=float("nan"))


def test_backdrop_covers_sky_without_duplicates() -> None:
    a = _sky_frame(48, 36, 40.0)
    v, f, c = backdrop_mesh([a], far=100.0)
    r = render_mesh(v, f, c, a[3], a[2], 48, 36)
    sky = a[1] >= 100
    # The sky is covered everywhere (the shell reaches the image border), and reaches a little
    # under the wall (grow): no crack where the surface mesh stops short of its edge.
    assert r["mask"][sky].all()
    assert r["mask"][12:15].mean() > 0.9
    # Faces towards the camera (counter-clockwise seen from it).
    tri = v[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.einsum("ij,ij->i", normal, tri[:, 0] - a[3][:3, 3]) < 0).all()
    # The same view again adds nothing; a turned view adds only what was not seen.
    assert len(backdrop_mesh([a, a], far=100.0)[1]) == len(f)
    b = _sky_frame(48, 36, 40.0, yaw=0.4)
    both = backdrop_mesh([a, b], far=100.0)
    only_b = backdrop_mesh([b], far=100.0)
    assert len(f) < len(both[1]) < len(f) + len(only_b[1])
    r = render_mesh(*both, b[3], b[2], 48, 36)
    assert r["mask"][b[1] >= 100].all()
    # In the first view, the second frame's shell shows at most along the seam (one cell).
    ra = render_mesh(*both, a[3], a[2], 48, 36)["rgb"][sky]
    same = (ra == render_mesh(v, f, c, a[3], a[2], 48, 36)["rgb"][sky]).all(1)
    assert same.mean() > 0.9, same.mean()


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    from studio.cli import main

    d = tmp_path_factory.mktemp("street") / "world"
    args = ["generate", str(PHOTOS / "street_london_dav2_demo01.jpg"), "--out", str(d),
            "--path", "forward", "--frames", "4", "--width", "160", "--depth", "layout",
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert main(["lift", str(d), "--quiet"]) == 0
    return d


def test_street_backdrop_through_lift_export_and_eval(street, tmp_path) -> None:
    import pygltflib
    import trimesh

    from storage.formats.bundle import read_bundle
    from studio.cli import main
    from studio.evaluation.lift_protocol import evaluate_lift
    from studio.exports.lift import _load_mesh

    info = json.loads((street / "lift.json").read_text())
    assert info["backdrop"]["faces"] > 100
    back = trimesh.load(street / "backdrop.ply", process=False, force="mesh")
    surface = trimesh.load(street / "mesh.ply", process=False, force="mesh")
    # The sky is far away, the surface near: separate parts, physics gets the surface only.
    assert np.median(np.linalg.norm(back.vertices, axis=1)) > 50
    assert np.percentile(np.linalg.norm(surface.vertices, axis=1), 99) < 60
    assert len(_load_mesh(read_bundle(street))[1]) == len(surface.faces)
    out = tmp_path / "w.glb"
    assert main(["export", str(street), "--format", "glb", "--out", str(out)]) == 0
    gltf = pygltflib.GLTF2().load(str(out))
    assert [m.name for m in gltf.meshes] == ["surface", "backdrop"]
    scene = trimesh.load(out)
    assert sum(len(g.faces) for g in scene.geometry.values()) == len(surface.faces) + len(
        back.faces
    )
    obj = tmp_path / "w.obj"
    assert main(["export", str(street), "--format", "obj", "--out", str(obj)]) == 0
    assert obj.read_text().count("\no ") == 2
    # The renders have no black sky: the whole frame is covered at every camera.
    report = evaluate_lift(street, tmp_path / "eval")
    assert report["median_mesh_full_psnr"] is not None
    for row in report["per_frame"]:
        assert row["mesh_full_coverage"] > 0.95, row


def test_backdrop_consensus_matches_reference() -> None:
    a, b = _sky_frame(24, 18, 20.0), _sky_frame(24, 18, 20.0, yaw=0.2)
    v, f, c = backdrop_mesh([a, b], far=100.0)
    fast = backdrop_consensus(v, c, [a, b], 100.0)
    ref = backdrop_consensus_reference(v, c, [a, b], 100.0)
    assert np.abs(fast.astype(int) - ref.astype(int)).max() <= 1
    # Where both frames see the sky the colour is their mean, not the first frame's own.
    assert (fast != c).any(1).mean() > 0.2
    # One frame: its own colours back (each vertex sees its own pixel or keeps its colour).
    v1, _, c1 = backdrop_mesh([a], far=100.0, grow=0)
    assert np.abs(backdrop_consensus(v1, c1, [a], 100.0).astype(int) - c1).max() <= 1


def _pole_frames(n: int) -> list:
    """A wall 12 m away and a pole 4 m away in front of it, cameras walking towards them."""
    width, height, f = 64, 48, 50.0
    K = _K(width, height, f)
    frames = []
    for i in range(n):
        eye = np.array([0.05 * i, 0.0, 0.3 * i])
        c2w = look_at(eye, eye + [0, 0, 1.0], UP)
        u = np.arange(width)
        x_at_pole = (u - K[0, 2]) / f * (4.0 - eye[2]) + eye[0]  # world x of the ray at z = 4
        depth = np.tile(np.where(np.abs(x_at_pole) < 0.25, 4.0 - eye[2], 12.0 - eye[2]),
                        (height, 1)).astype(np.float32)  # fmt: skip
        rgb = np.where((depth < 8)[..., None], 200, 60).astype(np.uint8).repeat(3, 2)
        frames.append((rgb, depth, K, c2w))
    return frames


def test_fill_matches_reference_and_keeps_colours() -> None:
    from models.lift.tsdf_mesh import extract_mesh_reference

    vol = fuse(_pole_frames(4), voxel_size=0.05)
    for fill in (0, 1, 2):
        v, f, c = extract_mesh(vol, tile_blocks=2, fill=fill)
        # Tiles (a seam every 2 blocks) agree with one dense grid.
        v_ref, f_ref, _ = extract_mesh_reference(vol, fill=fill)
        assert abs(len(f) - len(f_ref)) <= max(4, len(f_ref) // 200), (fill, len(f), len(f_ref))
        # Filled voxels carry no colour of their own: no black vertices appear.
        assert c.min() >= 60 and c.max() <= 200, fill


def test_fill_closes_cracks_on_the_street(street) -> None:
    # Real data: the street walk's surfaces at the photo's camera, without and with filling.
    from storage.formats.bundle import read_bundle
    from studio.exports import lift

    bundle = read_bundle(street)
    far = lift.FAR_FACTOR * lift.scene_depth(bundle)
    surf = bundle.frame_depth(0) < far
    cover = {}
    for fill in (0, 1):
        old, lift.MESH_FILL = lift.MESH_FILL, fill
        try:
            v, f, c = lift.make_mesh(bundle)
        finally:
            lift.MESH_FILL = old
        r = render_mesh(v, f, c, bundle.c2w(0), bundle.K(0), bundle.width, bundle.height)
        cover[fill] = float(r["mask"][surf].mean())
    assert cover[1] > cover[0] + 0.01 and cover[1] > 0.95, cover
