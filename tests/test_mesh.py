"""Mesh lift: TSDF fusion (models/tsdf.py), marching cubes (models/tsdf_mesh.py), and the mesh
writers (storage/formats/mesh.py) read back with independent readers (trimesh, pygltflib)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from models.geometry.cameras import look_at, transform_points, unproject_depth, world_to_gltf
from models.lift.tsdf import (
    TSDFError,
    decimate,
    extract_mesh,
    extract_mesh_reference,
    fuse,
    fuse_reference,
)
from models.lift.tsdf_mesh import volume_to_dense
from storage.errors import StorageError
from storage.formats.mesh import write_glb, write_mesh_ply, write_obj
from tests.helpers import PHOTOS, TUM, tum_depth_path, tum_frame_path

CENTER = np.array([0.0, 0.0, 0.0])
RADIUS = 0.5
UP = np.array([0.0, -1.0, 0.0])  # OpenCV-style world: up is -y


def _K(width: int, height: int, f: float) -> np.ndarray:
    # Principal point off the half-pixel grid: exact .5 projections would make nearest-pixel
    # rounding a coin toss between float32 (fast) and float64 (reference) arithmetic.
    return np.array([[f, 0, width / 2 + 0.137], [0, f, height / 2 - 0.071], [0, 0, 1.0]])


def _sphere_depth(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> np.ndarray:
    """Analytic z-depth of the sphere (0 where the ray misses)."""
    rays_cam = unproject_depth(np.ones((height, width), np.float64), K)  # z = 1 rays
    rays = rays_cam @ c2w[:3, :3].T
    o = c2w[:3, 3] - CENTER
    # |o + t r|^2 = R^2 with t the z-depth (the rays have unit z in the camera).
    a = (rays**2).sum(-1)
    b = 2 * rays @ o
    c = o @ o - RADIUS**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, t, 0.0).astype(np.float32)


def _sphere_frames(n: int, width: int, height: int, f: float) -> list:
    frames = []
    for i in range(n):
        ang = 2 * np.pi * i / n
        eye = CENTER + np.array([2.0 * np.sin(ang), -0.4 * (i % 2), -2.0 * np.cos(ang)])
        c2w = look_at(eye, CENTER, UP)
        K = _K(width, height, f)
        rgb = np.full((height, width, 3), (200, 60, 30), np.uint8)
        frames.append((rgb, _sphere_depth(K, c2w, width, height), K, c2w))
    return frames


@pytest.fixture(scope="module")
def sphere_volume():
    return fuse(_sphere_frames(6, 96, 72, 80.0), voxel_size=0.03)


def test_sphere_mesh_lies_on_surface(sphere_volume) -> None:
    v, f, c = extract_mesh(sphere_volume)
    assert len(f) > 500 and v.dtype == np.float32 and f.dtype == np.int32 and c.dtype == np.uint8
    err = np.abs(np.linalg.norm(v - CENTER, axis=1) - RADIUS)
    assert err.mean() < 0.03 / 2, err.mean()
    # Faces wind counter-clockwise seen from the observed (outer) side: normals point out.
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.mean(np.einsum("ij,ij->i", n, tri.mean(1) - CENTER) > 0) > 0.95
    assert np.abs(c.astype(int) - [200, 60, 30]).max() <= 1


def test_plane_mesh_lies_on_plane() -> None:
    width, height, K = 80, 60, _K(80, 60, 70.0)
    c2w = np.eye(4)
    u, vv = np.meshgrid(np.arange(width), np.arange(height))
    # Tilted plane z = 1.5 + 0.3 x  =>  depth from the ray (x = (u - cx)/fx * z).
    depth = (1.5 / (1 - 0.3 * (u - K[0, 2]) / K[0, 0])).astype(np.float32)
    vol = fuse([(None, depth, K, c2w)], voxel_size=0.02)
    v, f, _ = extract_mesh(vol)
    dist = np.abs(v[:, 2] - 1.5 - 0.3 * v[:, 0]) / np.sqrt(1 + 0.09)
    assert len(f) > 200 and dist.mean() < 0.01, dist.mean()


# Fixed band; a band growing with depth (sphere 2 m away: 0.3 x 2 = 0.6 m > 0.2 m); capped.
BANDS = [{}, {"trunc": 0.2, "rel_trunc": 0.3}, {"trunc": 0.2, "rel_trunc": 0.3, "max_band": 0.45}]


@pytest.mark.parametrize("band_args", BANDS)
def test_fast_fusion_matches_reference(band_args: dict) -> None:
    frames = _sphere_frames(2, 32, 24, 26.0)
    vol = fuse(frames, voxel_size=0.1, **band_args)
    keys = vol.active()[0]
    lo = keys.min(0) * vol.block_size
    shape = tuple(int(s) for s in (keys.max(0) + 1) * vol.block_size - lo)
    ref_tsdf, ref_w, ref_c = fuse_reference(frames, 0.1, tuple(lo), shape, **band_args)
    fast = volume_to_dense(vol, lo, shape)
    seen = fast <= 1.0
    # Everything the fast path observed, the reference observed with the same value ...
    assert seen.sum() > 500
    assert np.mean(ref_w[seen] > 0) > 0.995
    assert np.mean(np.abs(fast[seen] - ref_tsdf[seen]) < 1e-4) > 0.99
    # ... and the reference's truncation band (|tsdf| < 1) was allocated by the fast path (the
    # block walk follows each pixel's own band).
    band = (ref_w > 0) & (np.abs(ref_tsdf) < 1)
    assert np.mean(seen[band]) > 0.98
    assert np.allclose(ref_c[seen & (ref_w > 0)], [200, 60, 30], atol=1e-3)


def test_tiled_extraction_matches_dense_reference(sphere_volume) -> None:
    v_ref, f_ref, c_ref = extract_mesh_reference(sphere_volume)
    v, f, c = extract_mesh(sphere_volume, tile_blocks=1)  # a seam at every block
    assert abs(len(f) - len(f_ref)) <= max(2, len(f_ref) // 1000)
    d, idx = cKDTree(v_ref).query(v)
    assert d.max() < 1e-5
    assert np.abs(c.astype(int) - c_ref[idx].astype(int)).max() <= 1

    # Seams closed: welding leaves no more boundary edges than the one-grid reference has.
    def boundary(faces: np.ndarray) -> int:
        e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1)
        _, counts = np.unique(e, axis=0, return_counts=True)
        return int((counts == 1).sum())

    assert boundary(f) <= boundary(f_ref) + 4


def test_decimate_keeps_surface(sphere_volume) -> None:
    v, f, c = extract_mesh(sphere_volume)
    v2, f2, c2 = decimate(v, f, len(f) // 4, c)
    assert 0 < len(f2) <= len(f) // 4 and f2.max() < len(v2) and len(c2) == len(v2)
    err = np.abs(np.linalg.norm(v2 - CENTER, axis=1) - RADIUS)
    assert err.mean() < 0.03


def _tum_frame0() -> tuple:
    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(tum_frame_path(0))), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(tum_depth_path()), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000.0
    f = cams["frames"][0]
    return rgb, depth, np.asarray(f["K"], float), np.asarray(f["c2w"], float)


def test_tum_sensor_depth_mesh() -> None:
    rgb, depth, K, c2w = _tum_frame0()
    vol = fuse([(rgb, depth, K, c2w)], voxel_size=0.02)
    v, f, c = extract_mesh(vol)
    extent = np.ptp(v, axis=0)
    assert len(f) > 20_000
    # An office seen by a Kinect (readings up to ~9 m through the room), not a city or a box.
    assert 1.0 < np.linalg.norm(extent) < 16.0 and extent.max() < 10.0
    pts = transform_points(c2w, unproject_depth(depth, K)[depth > 0])
    d, _ = cKDTree(pts[::4]).query(v)
    assert np.median(d) < 0.02, np.median(d)
    margin = 0.02 * 4 + 0.02  # truncation band + one voxel
    assert np.all(v >= pts.min(0) - margin) and np.all(v <= pts.max(0) + margin)
    assert c.std() > 10  # real colours, not a constant


@pytest.fixture(scope="module")
def photo_world(tmp_path_factory):
    from storage.formats.bundle import read_bundle
    from studio.cli import main as loci

    out = tmp_path_factory.mktemp("mesh") / "world"
    code = loci(["generate", str(PHOTOS / "interior_office_03_dsine.png"), "--out", str(out),
                 "--path", "orbit", "--frames", "4", "--width", "128", "--quiet"])  # fmt: skip
    assert code in (0, None)
    return read_bundle(out)


def test_photo_world_mesh_and_exports(photo_world, tmp_path) -> None:
    info = photo_world
    frames = [
        (info.frame_rgb(i), info.frame_depth(i), info.K(i), info.c2w(i)) for i in info.indices
    ]
    vol = fuse(frames, voxel_size=0.04)
    v, f, c = extract_mesh(vol)
    assert len(f) > 1000
    up = np.asarray(info.world["up"], float)
    M = world_to_gltf(up)
    assert np.allclose(M[:3, :3] @ (up / np.linalg.norm(up)), [0, 1, 0], atol=1e-9)
    v_gltf = transform_points(M, v.astype(np.float64)).astype(np.float32)

    glb = write_glb(tmp_path / "world.glb", v_gltf, f, c)
    scene = trimesh.load(glb)
    geom = next(iter(scene.geometry.values())) if isinstance(scene, trimesh.Scene) else scene
    assert len(geom.vertices) == len(v) and len(geom.faces) == len(f)
    import pygltflib

    gltf = pygltflib.GLTF2().load(str(glb))
    prim = gltf.meshes[0].primitives[0]
    assert gltf.accessors[prim.attributes.POSITION].count == len(v)
    assert prim.attributes.COLOR_0 is not None
    assert np.allclose(gltf.accessors[prim.attributes.POSITION].max, v_gltf.max(0), atol=1e-4)
    # Y-up: the floor lies below the seed camera (1.6 m eye height) along glTF +Y.
    cam_y = transform_points(M, info.c2w(info.indices[0])[:3, 3])[1]
    assert np.percentile(v_gltf[:, 1], 5) < cam_y - 0.5

    obj = trimesh.load(write_obj(tmp_path / "world.obj", v, f, c), process=False)
    assert len(obj.vertices) == len(v) and len(obj.faces) == len(f)
    assert np.abs(obj.visual.vertex_colors[:, :3].astype(int) - c).max() <= 1
    ply = trimesh.load(write_mesh_ply(tmp_path / "world.ply", v, f, c), process=False)
    assert np.allclose(ply.vertices, v, atol=1e-6) and np.array_equal(ply.faces, f)
    assert np.array_equal(ply.visual.vertex_colors[:, :3], c)


def test_bad_input_errors(tmp_path) -> None:
    K, c2w = _K(16, 12, 10.0), np.eye(4)
    with pytest.raises(TSDFError, match="no valid depth"):
        fuse([(None, np.zeros((12, 16), np.float32), K, c2w)], voxel_size=0.05)
    with pytest.raises(TSDFError, match="no valid depth"):
        fuse([(None, np.full((12, 16), np.nan, np.float32), K, c2w)], voxel_size=0.05)
    with pytest.raises(TSDFError):
        fuse([(None, np.ones((12, 16), np.float32), K, c2w)], voxel_size=0.0)
    v = np.zeros((3, 3), np.float32)
    target = tmp_path / "m.glb"
    for writer in (write_glb, write_obj, write_mesh_ply):
        with pytest.raises(StorageError, match="no faces"):
            writer(target, v, np.zeros((0, 3), np.int32))
        with pytest.raises(StorageError, match="NaN"):
            writer(target, np.full((3, 3), np.nan, np.float32), np.array([[0, 1, 2]]))
        with pytest.raises(StorageError):
            writer(target, v, np.array([[0, 1, 5]]))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
