"""Dataset exports (nerfstudio transforms.json, COLMAP text) of a real-photo world, read back
with independent parsers (json, plain text, scipy rotations, plyfile) and compared with the
bundle's OpenCV cameras."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from storage.errors import StorageError
from storage.formats.bundle import read_bundle
from storage.formats.datasets import write_colmap_text
from storage.formats.ply import read_pointcloud_ply
from studio.cli import main
from studio.exports.datasets import export_colmap, export_nerfstudio
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # independent of models.geometry.cameras on purpose


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "world"
    args = ["generate", str(PHOTO), "--out", str(out), "--path", "forward", "--frames", "5"]
    assert main([*args, "--width", "256", "--quiet"]) == 0
    return out


def test_nerfstudio_roundtrip(world, tmp_path):
    bundle = read_bundle(world)
    path = export_nerfstudio(world, tmp_path / "ns")
    doc = json.loads(path.read_text())
    assert doc["camera_model"] == "OPENCV" and (doc["w"], doc["h"]) == (bundle.width, bundle.height)
    K = bundle.K(bundle.indices[0])
    # nerfstudio puts pixel centres at +0.5 (its rays go through x + 0.5): the principal point
    # moves by half a pixel from OpenCV's.
    assert [doc["fl_x"], doc["fl_y"], doc["cx"], doc["cy"]] == pytest.approx(
        [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5], abs=1e-9
    )
    assert len(doc["frames"]) == len(bundle)
    for frame, i in zip(doc["frames"], bundle.indices, strict=True):
        c2w_cv = np.asarray(frame["transform_matrix"]) @ GL_TO_CV
        np.testing.assert_allclose(c2w_cv, bundle.c2w(i), atol=1e-5)
        image = path.parent / frame["file_path"]
        assert image.read_bytes() == bundle.path(bundle.frame(i)["rgb"]).read_bytes()
    ply = PlyData.read(str(path.parent / doc["ply_file_path"]))
    xyz, _ = read_pointcloud_ply(world / "pointcloud.ply")
    assert ply["vertex"].count == len(xyz)
    # A moving camera really moved: the check above is not trivially identity matrices.
    assert np.ptp([f["transform_matrix"][2][3] for f in doc["frames"]]) > 0.05


def _parse_colmap(sparse):
    cams = {}
    for line in (sparse / "cameras.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            cid, model, w, h, *params = line.split()
            cams[int(cid)] = (model, int(w), int(h), [float(p) for p in params])
    lines = [ln for ln in (sparse / "images.txt").read_text().split("\n") if not ln.startswith("#")]
    assert lines[-1] == ""  # file ends with a newline
    lines = lines[:-1]
    images = []
    for head, points in zip(lines[0::2], lines[1::2], strict=True):
        iid, qw, qx, qy, qz, tx, ty, tz, cid, name = head.split()
        images.append((int(iid), [float(qw), float(qx), float(qy), float(qz)],
                       [float(tx), float(ty), float(tz)], int(cid), name, points))  # fmt: skip
    points = [ln.split() for ln in (sparse / "points3D.txt").read_text().splitlines()
              if ln and not ln.startswith("#")]  # fmt: skip
    return cams, lines, images, points


def test_colmap_roundtrip(world, tmp_path):
    bundle = read_bundle(world)
    out = export_colmap(world, tmp_path / "colmap")
    cams, lines, images, points = _parse_colmap(out / "sparse" / "0")
    assert len(lines) == 2 * len(bundle)  # two lines per image, the second (points2D) empty
    K = bundle.K(bundle.indices[0])
    assert cams == {1: ("PINHOLE", bundle.width, bundle.height,
                        pytest.approx([K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5],
                                      abs=1e-9))}  # fmt: skip
    for (iid, q, t, cid, name, pts), i in zip(images, bundle.indices, strict=True):
        assert iid == i + 1 and cid == 1 and pts == "" and (out / "images" / name).is_file()
        w2c = np.eye(4)
        w2c[:3, :3] = Rotation.from_quat(q, scalar_first=True).as_matrix()
        w2c[:3, 3] = t
        np.testing.assert_allclose(np.linalg.inv(w2c), bundle.c2w(i), atol=1e-5)
    xyz, rgb = read_pointcloud_ply(world / "pointcloud.ply")
    assert len(points) == len(xyz)
    first = points[0]
    np.testing.assert_allclose([float(x) for x in first[1:4]], xyz[0], atol=1e-6)
    assert [int(x) for x in first[4:7]] == rgb[0].tolist() and first[7] == "0" and len(first) == 8


def test_exports_refuse_occupied_folder_and_broken_bundle(world, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep")
    for export in (export_nerfstudio, export_colmap):
        with pytest.raises(StorageError):
            export(world, occupied)
    assert [p.name for p in occupied.iterdir()] == ["mine.txt"]
    with pytest.raises(StorageError):
        export_colmap(tmp_path / "no_world", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]  # nothing partial left


def test_colmap_per_image_cameras(tmp_path):
    Ks = np.stack([np.diag([100.0, 100.0, 1.0]), np.diag([120.0, 110.0, 1.0])])
    write_colmap_text(tmp_path, Ks, 64, 48, ["a.png", "b.png"], np.tile([1.0, 0, 0, 0], (2, 1)),
                      np.zeros((2, 3)))  # fmt: skip
    cams, lines, images, points = _parse_colmap(tmp_path)
    assert sorted(cams) == [1, 2] and [im[3] for im in images] == [1, 2] and points == []
    with pytest.raises(StorageError):
        write_colmap_text(
            tmp_path, Ks, 64, 48, ["a b.png", "c.png"], np.zeros((2, 4)), np.zeros((2, 3))
        )


def _seen_points(bundle, i: int, n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """World points (n, 3) seen by frame ``i`` and the OpenCV pixels (n, 2) they are seen at
    (pixel centres at integers), by unprojecting its depth with plain numpy."""
    depth = bundle.frame_depth(i)
    K, c2w = bundle.K(i), bundle.c2w(i)
    rng = np.random.default_rng(i)
    v, u = np.nonzero(depth > 0)
    pick = rng.choice(len(u), n, replace=False)
    uv = np.stack([u[pick], v[pick]], 1).astype(np.float64)
    z = depth[v[pick], u[pick]].astype(np.float64)
    xyz_cam = np.stack(
        [(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z], 1
    )
    return xyz_cam @ c2w[:3, :3].T + c2w[:3, 3], uv


def test_colmap_principal_point_read_by_pycolmap(world, tmp_path):
    """pycolmap (COLMAP's own reader and camera model) projects a point seen at OpenCV pixel
    (u, v) to (u + 0.5, v + 0.5): its pixel centres are at +0.5."""
    pycolmap = pytest.importorskip("pycolmap")
    bundle = read_bundle(world)
    out = export_colmap(world, tmp_path / "colmap")
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert len(rec.images) == len(bundle)
    for image in rec.images.values():
        i = image.image_id - 1
        xyz, uv = _seen_points(bundle, i)
        projected = np.array([image.project_point(p) for p in xyz])
        np.testing.assert_allclose(projected, uv + 0.5, atol=1e-4)


def test_nerfstudio_principal_point_follows_its_pixel_centres(world, tmp_path):
    """nerfstudio's camera model (cameras.py: rays through pixel index + 0.5, OpenGL camera
    axes), written out here: the ray of the pixel a point is seen at passes through the point."""
    bundle = read_bundle(world)
    doc = json.loads(export_nerfstudio(world, tmp_path / "ns").read_text())
    fx, fy, cx, cy = doc["fl_x"], doc["fl_y"], doc["cx"], doc["cy"]
    for frame, i in zip(doc["frames"], bundle.indices, strict=True):
        xyz, uv = _seen_points(bundle, i)
        c2w_gl = np.asarray(frame["transform_matrix"])
        # nerfstudio: pixel index (u, v) -> image coords (u + 0.5, v + 0.5) -> camera ray.
        dirs = np.stack([(uv[:, 0] + 0.5 - cx) / fx, -(uv[:, 1] + 0.5 - cy) / fy,
                         -np.ones(len(uv))], 1)  # fmt: skip
        rays = dirs @ c2w_gl[:3, :3].T
        to_points = xyz - c2w_gl[:3, 3]
        cross = np.linalg.norm(np.cross(rays, to_points), axis=1) / np.linalg.norm(rays, axis=1)
        assert cross.max() < 1e-6 * np.linalg.norm(to_points, axis=1).max() + 1e-9
