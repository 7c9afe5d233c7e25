"""Regressions of the export defects found by outside readers (issue 11), each read back with an
independent reader: pygltflib (glTF colour space), zipfile (what the studio's zips hold), pxr
(USD up axis), and the CLI's exit status on damaged bundles. The COLMAP / nerfstudio principal
point is checked in tests/test_datasets.py (pycolmap and nerfstudio's camera model).
"""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from storage.formats.bundle import read_bundle
from storage.formats.mesh import write_glb
from studio.cli import main
from studio.context import StudioContext
from studio.service import Studio
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"
pytestmark = pytest.mark.skipif(
    not PHOTO.is_file(), reason=f"needs the shared photos in {PHOTOS} (../shared/data)"
)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1, written out here independently of the code under test."""
    c = c / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "world"
    assert main(["generate", str(PHOTO), "--out", str(out), "--frames", "4", "--width", "96",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["lift", str(out), "--quiet"]) == 0
    return out


def test_glb_vertex_colours_are_linear(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    rng = np.random.default_rng(0)
    v = rng.random((40, 3)).astype(np.float32)
    f = rng.integers(0, 40, (30, 3))
    c = rng.integers(0, 256, (40, 3)).astype(np.uint8)
    gltf = pygltflib.GLTF2().load(str(write_glb(tmp_path / "m.glb", v, f, c)))
    prim = gltf.meshes[0].primitives[0]
    acc = gltf.accessors[prim.attributes.COLOR_0]
    view = gltf.bufferViews[acc.bufferView]
    assert acc.componentType == pygltflib.UNSIGNED_SHORT and acc.normalized and acc.type == "VEC4"
    blob = gltf.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]
    colours = np.frombuffer(blob, "<u2").reshape(-1, 4) / 65535.0
    np.testing.assert_allclose(colours[:, :3], _srgb_to_linear(c.astype(float)), atol=1e-4)
    assert np.allclose(colours[:, 3], 1.0)
    # A photographed colour is shown as is: unlit, double-sided, not metallic.
    mat = gltf.materials[prim.material]
    assert "KHR_materials_unlit" in mat.extensions and mat.doubleSided
    assert mat.pbrMetallicRoughness.metallicFactor == 0
    pos = gltf.accessors[prim.attributes.POSITION]
    assert np.allclose(pos.min, v.min(0)) and np.allclose(pos.max, v.max(0))


def test_glb_export_of_a_world_keeps_the_obj_colours_in_linear_light(world, tmp_path):
    """The GLB and the OBJ of one world hold the same colours, the GLB's in linear light."""
    pygltflib = pytest.importorskip("pygltflib")
    import trimesh

    glb, obj = tmp_path / "w.glb", tmp_path / "w.obj"
    assert main(["export", str(world), "--format", "glb", "--out", str(glb)]) == 0
    assert main(["export", str(world), "--format", "obj", "--out", str(obj)]) == 0
    gltf = pygltflib.GLTF2().load(str(glb))
    acc = gltf.accessors[gltf.meshes[0].primitives[0].attributes.COLOR_0]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]
    linear = np.frombuffer(blob, "<u2").reshape(-1, 4)[:, :3] / 65535.0
    srgb = np.asarray(trimesh.load(obj, process=False).visual.vertex_colors)[:, :3]
    assert len(srgb) == len(linear)
    np.testing.assert_allclose(linear, _srgb_to_linear(srgb.astype(float)), atol=3e-3)


def _one_line_exit_2(args: list[str], capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("loci: error:"), (code, err)
    return err[0]


def test_a_damaged_mesh_or_frame_stops_with_one_line(world, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(world, bad)
    mesh = bad / "mesh.ply"
    mesh.write_bytes(mesh.read_bytes()[: mesh.stat().st_size // 2])
    for fmt in ("glb", "obj", "usd"):
        line = _one_line_exit_2(["export", str(bad), "--format", fmt, "--out",
                                 str(tmp_path / f"m.{fmt}")], capsys)  # fmt: skip
        assert "mesh.ply is damaged" in line
    frame = bad / "frames" / "000002.png"
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    for fmt in ("nerfstudio", "colmap"):
        out = tmp_path / fmt
        line = _one_line_exit_2(["export", str(bad), "--format", fmt, "--out", str(out)], capsys)
        assert "000002.png" in line and "damaged" in line
        assert not out.exists()  # nothing half-written


def test_usdz_ar_is_y_up_and_usd_stays_z_up(world, tmp_path):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom, UsdPhysics

    ar, sim = tmp_path / "ar.usdz", tmp_path / "sim.usdz"
    assert main(["export", str(world), "--format", "usdz-ar", "--out", str(ar)]) == 0
    assert main(["export", str(world), "--format", "usdz", "--out", str(sim)]) == 0
    stage_ar, stage_sim = Usd.Stage.Open(str(ar)), Usd.Stage.Open(str(sim))
    assert UsdGeom.GetStageUpAxis(stage_ar) == UsdGeom.Tokens.y
    assert UsdGeom.GetStageUpAxis(stage_sim) == UsdGeom.Tokens.z
    assert UsdGeom.GetStageMetersPerUnit(stage_ar) == 1.0
    # AR viewers take only plain geometry: no physics prims; a material shows the colours.
    types = {p.GetTypeName() for p in stage_ar.Traverse()}
    assert "PhysicsScene" not in types and {"Mesh", "Material", "Shader"} <= types
    assert any(p.IsA(UsdPhysics.Scene) for p in stage_sim.Traverse())
    # Same surface, other axes: the floor lies below the first camera along each stage's up.
    bundle = read_bundle(world)
    for stage, axis in ((stage_ar, 1), (stage_sim, 2)):
        points = np.asarray(UsdGeom.Mesh(stage.GetPrimAtPath("/World/Mesh")).GetPointsAttr().Get())
        cam = UsdGeom.Camera(stage.GetPrimAtPath("/World/Camera"))
        eye = np.asarray(cam.ComputeLocalToWorldTransform(0).ExtractTranslation())
        assert np.percentile(points[:, axis], 5) < eye[axis] - 0.5, stage
    assert len(bundle) == 4
    # The packages pass USD's own usdz validators.
    from pxr import UsdValidation

    registry = UsdValidation.ValidationRegistry()
    validators = registry.GetOrLoadValidatorsByName(
        ["usdUtilsValidators:UsdzPackageValidator", "usdUtilsValidators:RootPackageValidator",
         "usdUtilsValidators:FileExtensionValidator", "usdGeomValidators:StageMetadataChecker"]
    )  # fmt: skip
    errors = UsdValidation.ValidationContext(validators).Validate(stage_ar)
    assert not [e for e in errors if e.GetType() == UsdValidation.ValidationErrorType.Error]


@pytest.fixture(scope="module")
def studio_world(tmp_path_factory):
    s = Studio(StudioContext(data_dir=tmp_path_factory.mktemp("zips") / "data", width=96))
    pid, _view, key = s.create_project("Zip Test")
    s.set_photo(pid, key, str(PHOTO))
    s.save_path(pid, key, s.plan_path(pid, key, preset="forward", frames=4))
    list(s.generate(pid, key))
    yield s, pid, key
    s.close()


def test_studio_zips_hold_whole_folders_under_distinct_names(studio_world):
    s, pid, key = studio_world
    names = {}
    for fmt in ("nerfstudio", "colmap", "mjcf"):
        if fmt == "mjcf":
            pytest.importorskip("mujoco")
        path = s.export(pid, key, fmt)
        names[fmt] = path.name
        with zipfile.ZipFile(path) as z:
            files = set(z.namelist())
            assert z.testzip() is None
            if fmt == "nerfstudio":
                doc = json.loads(z.read("nerfstudio/transforms.json"))
                for frame in doc["frames"]:
                    assert "nerfstudio/" + frame["file_path"] in files
                assert len(doc["frames"]) == 4
            elif fmt == "colmap":
                assert {"colmap/sparse/0/cameras.txt", "colmap/sparse/0/images.txt"} <= files
                assert len([f for f in files if f.startswith("colmap/images/frame_")]) == 4
            else:  # one self-contained scene (meshes inline), zipped like the other folders
                assert "<mujoco" in z.read("mjcf/scene.xml").decode()
    assert len(set(names.values())) == 3, names
    assert all(n.startswith("zip-test-") and n.endswith(".zip") for n in names.values()), names
    assert names["mjcf"].endswith("-mjcf.zip")  # <project>-<step>-<fmt>.zip (issue 14)
    # The MJCF zip loads in MuJoCo as shipped.
    mujoco = pytest.importorskip("mujoco")
    with zipfile.ZipFile(s.export(pid, key, "mjcf")) as z:
        target = s.ctx.data_dir.parent / "mjcf-check"
        z.extractall(target)
    model = mujoco.MjModel.from_xml_path(str(target / "mjcf" / "scene.xml"))
    assert model.nmesh + model.nhfield > 0
