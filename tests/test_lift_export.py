"""`loci lift` and `loci export` end to end on a real-photo world, and their bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studio.cli import main
from tests.helpers import PHOTOS


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("lift") / "world"
    assert (
        main(
            [
                "generate",
                str(PHOTOS / "interior_office_03_dsine.png"),
                "--out",
                str(d),
                "--path",
                "orbit",
                "--frames",
                "6",
                "--width",
                "192",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["lift", str(d), "--quiet"]) == 0
    return d


def test_lift_writes_splats_and_mesh(world):
    from plyfile import PlyData

    info = json.loads((world / "lift.json").read_text())
    assert info["splats"]["count"] > 1000 and info["mesh"]["faces"] > 1000
    splats = PlyData.read(str(world / "splats.ply"))
    names = [p.name for p in splats["vertex"].properties]
    # Gradio Model3D shows a .ply as splats when it has these and no faces.
    for n in (
        "x",
        "y",
        "z",
        "scale_0",
        "scale_1",
        "scale_2",
        "opacity",
        "rot_0",
        "rot_3",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
    ):
        assert n in names
    assert "face" not in [e.name for e in splats.elements]
    mesh = PlyData.read(str(world / "mesh.ply"))
    assert len(mesh["face"]) == info["mesh"]["faces"]


@pytest.mark.parametrize(
    "fmt", ["ply", "splat", "spz", "glb", "obj", "usdz", "mjcf", "nerfstudio", "colmap", "mp4"]
)
def test_export_every_format(world, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}" if fmt not in ("mjcf", "nerfstudio", "colmap") else tmp_path / fmt
    assert main(["export", str(world), "--format", fmt, "--out", str(out)]) == 0
    assert out.exists()
    if fmt == "glb":
        import pygltflib
        import trimesh

        m = trimesh.load(out, force="mesh")
        assert len(m.faces) > 1000
        assert pygltflib.GLTF2().load(str(out)).meshes
    elif fmt == "usdz":
        from pxr import Usd, UsdGeom

        stage = Usd.Stage.Open(str(out))
        assert UsdGeom.GetStageUpAxis(stage) == "Z"
    elif fmt == "mjcf":
        import mujoco

        model = mujoco.MjModel.from_xml_path(str(out / "scene.xml"))
        assert model.nhfield == 1
    elif fmt == "splat":
        assert out.stat().st_size % 32 == 0
    elif fmt == "nerfstudio":
        t = json.loads((out / "transforms.json").read_text())
        assert len(t["frames"]) == 6
    elif fmt == "colmap":
        assert (out / "sparse" / "0" / "images.txt").is_file()


def test_glb_is_y_up(world, tmp_path):
    import trimesh

    out = tmp_path / "w.glb"
    assert main(["export", str(world), "--format", "glb", "--out", str(out)]) == 0
    v = np.asarray(trimesh.load(out, force="mesh").vertices)
    # The camera is 1.6 m above the floor: in Y-up the floor is below the origin along -Y.
    assert np.percentile(v[:, 1], 2) < -1.0


def _bad(args, capsys, expect):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expect.lower() in err.lower(), err


def test_bad_bundles(tmp_path, capsys, world):
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(["lift", str(empty)], capsys, "world.json")
    _bad(["export", str(empty), "--format", "glb"], capsys, "world.json")

    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(world, newer)
    w = json.loads((newer / "world.json").read_text())
    w["version"] = 99
    (newer / "world.json").write_text(json.dumps(w))
    _bad(["lift", str(newer)], capsys, "version")

    nan = tmp_path / "nan"
    shutil.copytree(world, nan)
    d = np.load(nan / "frames" / "000000.depth.npy")
    d[10, 10] = np.nan
    np.save(nan / "frames" / "000000.depth.npy", d)
    (nan / "splats.ply").unlink()
    _bad(
        ["export", str(nan), "--format", "splat", "--out", str(tmp_path / "x.splat")], capsys, "nan"
    )
    assert not (tmp_path / "x.splat").exists()

    missing = tmp_path / "missing"
    shutil.copytree(world, missing)
    (missing / "frames" / "000002.depth.npy").unlink()
    _bad(["lift", str(missing)], capsys, "000002")
