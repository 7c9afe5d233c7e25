"""Physics exports: USD (pxr reads it back) and MJCF (MuJoCo loads it, spheres drop, a walker
drives the camera path). Real-photo world from `loci generate`, plus a synthetic terrain whose
true surface is known exactly."""

from __future__ import annotations

import zipfile

import mujoco
import numpy as np
import pytest
import trimesh

from models.geometry.cameras import c2w_for_zup_camera
from models.lift import physics
from storage.errors import StorageError
from storage.formats.bundle import read_bundle
from storage.formats.mjcf import write_mjcf
from storage.formats.usd import write_usd
from studio.cli import main
from studio.exports.physics import depth_mesh, export_mjcf, export_usd, floor_hint_z
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"
RADIUS = 0.05


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("phys") / "world"
    args = ["generate", str(PHOTO), "--out", str(out), "--path", "forward"]
    assert main([*args, "--frames", "8", "--width", "256", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def scene(world, tmp_path_factory):
    """The real world's MJCF plus what the test needs to judge it: the Z-up mesh it came from."""
    bundle = read_bundle(world)
    v, f, c = depth_mesh(bundle)
    xml = export_mjcf(world, tmp_path_factory.mktemp("mj") / "mjcf", mesh=(v, f, c))
    up = np.asarray(bundle.world["up"])
    cams = physics.camera_path_zup(np.stack([bundle.c2w(i) for i in bundle.indices]), up)
    vz = physics.to_zup(v, up)
    floor_z = physics.estimate_floor_z(
        vz, f, hint_z=floor_hint_z(bundle, cams[0]), below_z=float(cams[:, 2, 3].min())
    )
    return xml, vz, f, floor_z, cams


def _geom(m: mujoco.MjModel, name: str) -> int:
    return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)


def _with_balls(xml_text: str, xyz: np.ndarray) -> mujoco.MjModel:
    balls = "".join(
        f'<body name="ball{i}" pos="{p[0]} {p[1]} {p[2]}"><freejoint/>'
        f'<geom name="ball{i}" type="sphere" size="{RADIUS}" mass="0.2" condim="6" '
        'friction="1 0.1 0.1"/></body>'
        for i, p in enumerate(xyz)
    )
    return mujoco.MjModel.from_xml_string(xml_text.replace("</worldbody>", balls + "</worldbody>"))


def _drop(m: mujoco.MjModel, n_balls: int, seconds: float = 2.0) -> np.ndarray:
    d = mujoco.MjData(m)
    for _ in range(int(seconds / m.opt.timestep)):
        mujoco.mj_step(m, d)
    start = m.nq - 7 * n_balls  # balls come last in qpos
    return d.qpos[start:].reshape(n_balls, 7)[:, :3].copy()


def _floor_below(vz, f, xy, floor_z, band=0.3):
    """The real floor height at each (x, y), NaN where the site is not open floor.

    Vertical rays need no ray tracer: find the triangles containing (x, y) in the plane and
    interpolate their z barycentrically. A site is open floor when every surface within
    ``band`` of the floor level there is near-horizontal (|normal z| > cos 30 deg); its floor
    height is the highest of them (overlapping frames each bring a sheet)."""
    tri = vz[f]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    normal = np.cross(b - a, c - a)
    nz = np.abs(normal[:, 2]) / np.maximum(np.linalg.norm(normal, axis=1), 1e-12)
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    out = np.full(len(xy), np.nan)
    for k, (x, y) in enumerate(xy):
        l1 = ((x - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (y - a[:, 1])) / det
        l2 = ((b[:, 0] - a[:, 0]) * (y - a[:, 1]) - (x - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
        hit = ok & (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
        z = a[:, 2] + l1 * (b[:, 2] - a[:, 2]) + l2 * (c[:, 2] - a[:, 2])
        near = hit & (np.abs(z - floor_z) < band)
        if near.any() and (nz[near] > np.cos(np.radians(30))).all():
            out[k] = z[near].max()
    return out


def _closest_on_triangle(p, a, b, c):
    """The point of triangle abc nearest to p (Ericson, Real-Time Collision Detection 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = ab @ ap, ac @ ap
    if d1 <= 0 and d2 <= 0:
        return a
    bp = p - b
    d3, d4 = ab @ bp, ac @ bp
    if d3 >= 0 and d4 <= d3:
        return b
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        return a + d1 / (d1 - d3) * ab
    cp = p - c
    d5, d6 = ab @ cp, ac @ cp
    if d6 >= 0 and d5 <= d6:
        return c
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        return a + d2 / (d2 - d6) * ac
    va = d3 * d6 - d5 * d4
    if va <= 0 and d4 - d3 >= 0 and d5 - d6 >= 0:
        return b + (d4 - d3) / ((d4 - d3) + (d5 - d6)) * (c - b)
    denom = 1.0 / (va + vb + vc)
    return a + ab * (vb * denom) + ac * (vc * denom)


def _mesh_distance(vz, f, p, reach=0.5):
    """Distance from p to the nearest point of the mesh (triangles with a vertex within reach)."""
    tri = vz[f]
    near = np.flatnonzero((np.linalg.norm(tri - p, axis=2) < reach).any(axis=1))
    return min(
        (float(np.linalg.norm(p - _closest_on_triangle(p, *tri[i]))) for i in near),
        default=np.inf,
    )


def _drive(m: mujoco.MjModel, speed: float = 1.0) -> tuple[dict[str, int], float]:
    """Drive the walker through every path keyframe at ``speed`` m/s, settling at each;
    returns (contacts by geom name, worst miss of a waypoint in metres)."""
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, 0)
    walker = _geom(m, "walker")
    contacts: dict[str, int] = {}
    worst = 0.0
    for k in range(1, m.nkey):
        leg = float(np.linalg.norm(m.key_ctrl[k] - m.key_ctrl[k - 1]))
        steps = max(50, int(leg / speed / m.opt.timestep))
        for i in range(steps + 250):  # the leg, then 0.5 s to settle on the waypoint
            s = min(1.0, i / steps)
            d.ctrl[:] = (1 - s) * m.key_ctrl[k - 1] + s * m.key_ctrl[k]
            mujoco.mj_step(m, d)
            for c in d.contact[: d.ncon]:
                if walker in (c.geom1, c.geom2):
                    other = c.geom2 if c.geom1 == walker else c.geom1
                    name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, other)
                    contacts[name] = contacts.get(name, 0) + 1
        worst = max(worst, float(np.linalg.norm(d.qpos[:2] - m.key_qpos[k][:2])))
    return contacts, worst


# ---------------------------------------------------------------------------------------------
# USD


def _check_stage(stage, n_frames: int) -> None:
    from pxr import UsdGeom, UsdPhysics

    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
    scenes = [p for p in stage.Traverse() if p.IsA(UsdPhysics.Scene)]
    assert len(scenes) == 1
    gravity = UsdPhysics.Scene(scenes[0])
    assert tuple(gravity.GetGravityDirectionAttr().Get()) == (0.0, 0.0, -1.0)
    assert gravity.GetGravityMagnitudeAttr().Get() == pytest.approx(9.81)
    mesh = stage.GetPrimAtPath("/World/Mesh")
    assert mesh.HasAPI(UsdPhysics.CollisionAPI) and mesh.HasAPI(UsdPhysics.MeshCollisionAPI)
    assert UsdPhysics.MeshCollisionAPI(mesh).GetApproximationAttr().Get() == "none"
    assert not mesh.HasAPI(UsdPhysics.RigidBodyAPI)  # static collider
    cam = stage.GetPrimAtPath("/World/Camera")
    assert cam.IsA(UsdGeom.Camera)
    samples = cam.GetAttribute("xformOp:transform").GetTimeSamples()
    assert samples == [float(i) for i in range(n_frames)]


def test_usd_stage_is_zup_physics_scene(world, tmp_path):
    from pxr import Usd, UsdGeom

    bundle = read_bundle(world)
    v, f, c = depth_mesh(bundle)
    path = export_usd(world, tmp_path / "world.usda", mesh=(v, f, c))
    stage = Usd.Stage.Open(str(path))
    _check_stage(stage, len(bundle))
    up = np.asarray(bundle.world["up"]) / np.linalg.norm(bundle.world["up"])
    points = np.asarray(UsdGeom.Mesh(stage.GetPrimAtPath("/World/Mesh")).GetPointsAttr().Get())
    # World up maps to +Z: every point's USD height is its height along the world's up vector.
    np.testing.assert_allclose(points[:, 2], v @ up, atol=1e-4)
    xf = UsdGeom.Xformable(stage.GetPrimAtPath("/World/Camera"))
    for t, i in enumerate(bundle.indices):
        usd_c2w = np.asarray(xf.ComputeLocalToWorldTransform(Usd.TimeCode(t))).T
        np.testing.assert_allclose(usd_c2w, c2w_for_zup_camera(bundle.c2w(i), up), atol=1e-9)
    # The level seed photo: camera up (+Y in USD/GL axes) points along +Z.
    assert usd_c2w[:3, 1] @ [0, 0, 1] > 0.99


def test_usdz_package_opens(world, tmp_path):
    from pxr import Usd

    path = export_usd(world, tmp_path / "world.usdz")
    assert zipfile.is_zipfile(path)
    assert [n for n in zipfile.ZipFile(path).namelist() if n.endswith(".usdc")]
    _check_stage(Usd.Stage.Open(str(path)), len(read_bundle(world)))
    assert [p.name for p in tmp_path.iterdir()] == ["world.usdz"]  # no temp files left


def test_usd_camera_projects_like_K(tmp_path):
    """Focal length, apertures and principal-point offsets reproduce K's pixel projection."""
    from pxr import Gf, Usd, UsdGeom

    K = np.array([[300.0, 0, 150.0], [0, 320.0, 90.0], [0, 0, 1]])
    width, height = 320, 200
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    path = write_usd(tmp_path / "k.usda", tri, [[0, 1, 2]], None, np.eye(4)[None], K, width, height)
    stage = Usd.Stage.Open(str(path))  # keep a reference: prims die with their stage
    cam = UsdGeom.Camera(stage.GetPrimAtPath("/World/Camera"))
    proj = cam.GetCamera(Usd.TimeCode(0)).frustum.ComputeProjectionMatrix()
    xyz_cv = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]])
    for p in xyz_cv:
        ndc = proj.Transform(Gf.Vec3d(p[0], -p[1], -p[2]))  # OpenCV -> GL camera axes
        u = (ndc[0] + 1) / 2 * width - 0.5
        v = (1 - ndc[1]) / 2 * height - 0.5
        assert u == pytest.approx(K[0, 0] * p[0] / p[2] + K[0, 2], abs=1e-3)
        assert v == pytest.approx(K[1, 1] * p[1] / p[2] + K[1, 2], abs=1e-3)


def test_usd_refuses_bad_input(tmp_path):
    with pytest.raises(StorageError):
        write_usd(
            tmp_path / "x.obj", np.eye(3), [[0, 1, 2]], None, np.eye(4)[None], np.eye(3), 4, 4
        )
    with pytest.raises(StorageError):
        write_usd(
            tmp_path / "x.usda", np.eye(3), [[0, 1, 5]], None, np.eye(4)[None], np.eye(3), 4, 4
        )
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# MJCF on the real-photo world


def test_mjcf_real_world_drop_and_drive(scene):
    xml, vz, f, floor_z, cams = scene
    text = xml.read_text()
    m = mujoco.MjModel.from_xml_path(str(xml))
    assert m.nhfield == 1 and m.nmesh >= 1 and m.ncam == len(cams) and m.nkey == len(cams)

    # Drop sites: open floor seen in the views (see _floor_below) where a ray from 1 m above
    # meets the hfield first (no obstacle piece overhead).
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    tri_z = vz[f][:, :, 2]
    low = np.flatnonzero(np.abs(tri_z - floor_z).max(axis=1) < 0.1)
    xy = vz[f[low]].mean(axis=1)[:, :2][:: max(1, len(low) // 60)]
    surface = _floor_below(vz, f, xy, floor_z)
    clear = []
    for x, y in xy:
        geomid = np.array([-1], dtype=np.int32)
        top = np.array([x, y, floor_z + 1.0])
        mujoco.mj_ray(m, d, top, np.array([0, 0, -1.0]), None, 1, -1, geomid)
        clear.append(geomid[0] == _geom(m, "floor"))
    keep = np.isfinite(surface) & np.array(clear)
    xy, surface = xy[keep], surface[keep]
    assert len(xy) >= 3, "the office world should show some open floor"
    pick = np.linspace(0, len(xy) - 1, min(8, len(xy))).astype(int)
    xy, surface = xy[pick], surface[pick]
    # Released 2 cm above the floor: the floor seen here is a sloped 30 cm strip, and a ball
    # dropped from high bounces off it onto the hole-filled floor beyond.
    start = np.column_stack([xy, surface + RADIUS + 0.02])
    rest = _drop(_with_balls(text, start), len(xy), seconds=1.0)
    # Rolling friction keeps balls in place on a gently sloped floor; judge each where it rests.
    # A ball resting on the surface touches it: the nearest point of the floor mesh is one radius
    # from its centre (the height straight below the centre overstates the gap where the ball
    # touches a slope or a bump off-centre, so it is printed, not judged).
    surface = _floor_below(vz, f, rest[:, :2], floor_z)
    below = rest[:, 2] - RADIUS - surface
    gap = np.array([_mesh_distance(vz, f, p) for p in rest])
    err = np.where(np.isfinite(surface), gap - RADIUS, np.nan)
    rolled = np.linalg.norm(rest[:, :2] - xy, axis=1)
    print(f"\nreal world: floor z {floor_z:.3f}; contact gap (mm): {err * 1000}")
    print(f"real world: rest - radius - surface below (mm): {below * 1000}")
    print(f"real world: rolled (mm): {rolled * 1000}")
    assert np.isfinite(err).sum() >= 3
    assert np.nanmax(np.abs(err)) < 0.005
    contacts, worst = _drive(m)
    print(f"real world drive: contacts {contacts}, worst waypoint miss {worst * 1000:.1f} mm")
    assert set(contacts) == {"floor"}, f"the path collides with {contacts}"
    assert worst < 0.01


def test_mjcf_refuses_bad_input(tmp_path):
    with pytest.raises(StorageError):
        write_mjcf(tmp_path / "a.xml", np.full((3, 3), np.nan), (0, 0, 1, 1), [], np.eye(4)[None])
    with pytest.raises(StorageError):
        write_mjcf(
            tmp_path / "a.xml", np.zeros((3, 3)), (0, 0, 1, 1), [np.zeros((2, 3))], np.eye(4)[None]
        )
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Synthetic terrain with a known surface


def _terrain():
    """A 6 x 6 m wavy floor (4 cm bumps: non-convex, walkable), a box and a wall on it."""
    n = 121
    x, y = np.meshgrid(np.linspace(-3, 3, n), np.linspace(-3, 3, n))
    z = 0.04 * np.sin(2.0 * x) * np.cos(1.5 * y)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = (
        idx[:-1, :-1].ravel(),
        idx[:-1, 1:].ravel(),
        idx[1:, :-1].ravel(),
        idx[1:, 1:].ravel(),
    )
    floor = trimesh.Trimesh(
        np.column_stack([x.ravel(), y.ravel(), z.ravel()]),
        np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]),
        process=False,
    )
    box = trimesh.creation.box(
        [0.6, 0.6, 0.5], trimesh.transformations.translation_matrix([1.5, 1.5, 0.25])
    )
    wall = trimesh.creation.box(
        [3.0, 0.1, 1.2], trimesh.transformations.translation_matrix([0, -2, 0.6])
    )
    mesh = trimesh.util.concatenate([floor, box, wall])
    return (
        np.asarray(mesh.vertices),
        np.asarray(mesh.faces),
        lambda p: 0.04 * np.sin(2 * p[:, 0]) * np.cos(1.5 * p[:, 1]),
    )


@pytest.mark.parametrize("method", ["auto", "chunks"])
def test_mjcf_synthetic_terrain(tmp_path, method):
    v, f, surface_fn = _terrain()
    floor_z = physics.estimate_floor_z(v, f)
    assert abs(floor_z) < 0.05
    hf = physics.heightfield_from_mesh(v, f, cell=0.05, floor_z=floor_z)
    pieces = physics.obstacle_pieces(v, f, floor_z, method=method, time_budget_s=10)
    assert 2 <= len(pieces) <= 64
    top = max(p[:, 2].max() for p in pieces)
    assert top == pytest.approx(1.2, abs=0.03)
    path = np.array(
        [[-2.0, -0.5], [0.0, 0.0], [1.0, 0.5], [1.5, 0.8]]
    )  # ends 0.1 m short of the box
    cams = np.repeat(np.eye(4)[None], len(path), 0)
    cams[:, :2, 3], cams[:, 2, 3] = path, 1.6
    xml = write_mjcf(tmp_path / "t.xml", hf.heights, hf.extent(), pieces, cams, walker_radius=0.1)
    text = xml.read_text()
    # Troughs and crests of the non-convex floor, plus the box top.
    # Troughs of the wavy floor (stable rest points 4 cm below the crests), then the box top.
    xy = np.array([[-0.785, 0.0], [0.785, 2.094], [2.356, 0.0], [-2.356, 2.094], [1.5, 1.5]])
    true_z = surface_fn(xy)
    true_z[-1] = 0.5
    m = _with_balls(text, np.column_stack([xy, true_z + 0.4]))
    rest = _drop(m, len(xy))
    err = rest[:, 2] - RADIUS - true_z
    print(f"\nsynthetic ({method}): rest - radius - surface (mm): {np.round(err * 1000, 2)}")
    assert np.abs(err[:-1]).max() < 0.004  # on the real wavy surface, not its hull (+4 cm)
    assert abs(err[-1]) < 0.02  # the box is solid
    contacts, worst = _drive(mujoco.MjModel.from_xml_path(str(xml)))
    print(f"synthetic drive ({method}): contacts {contacts}, worst miss {worst * 1000:.1f} mm")
    assert set(contacts) == {"floor"} and worst < 0.01
    # Driving into the box is reported as obstacle contacts.
    cams[-1, :2, 3] = [1.5, 1.5]
    xml = write_mjcf(tmp_path / "t2.xml", hf.heights, hf.extent(), pieces, cams, walker_radius=0.1)
    contacts, _ = _drive(mujoco.MjModel.from_xml_path(str(xml)))
    assert any(name.startswith("obstacle_") for name in contacts)


def test_heightfield_matches_surface():
    v, f, surface_fn = _terrain()
    hf = physics.heightfield_from_mesh(v, f, cell=0.05, floor_z=0.0)
    xy = np.random.default_rng(0).uniform(-2.5, 2.5, (400, 2))
    # Not under the box or wall: their bottom faces lie flat on the floor (ambiguous there).
    under_box = (np.abs(xy[:, 0] - 1.5) < 0.4) & (np.abs(xy[:, 1] - 1.5) < 0.4)
    under_wall = (np.abs(xy[:, 0]) < 1.6) & (np.abs(xy[:, 1] + 2) < 0.15)
    xy = xy[~under_box & ~under_wall]
    err = hf.height_at(xy) - surface_fn(xy)
    assert np.abs(err).max() < 0.004
    inner = hf.observed[10:-10, 10:-10]  # the 0.5 m margin around the floor is never observed
    assert inner.mean() > 0.95  # (only under the box and the wall is the floor filled)


def test_physics_bad_mesh():
    with pytest.raises(ValueError, match="empty"):
        physics.heightfield_from_mesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    with pytest.raises(ValueError, match="NaN"):
        physics.obstacle_pieces(np.full((3, 3), np.nan), np.array([[0, 1, 2]]), 0.0)


def test_export_mjcf_refuses_existing_folder(world, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(StorageError):
        export_mjcf(world, tmp_path, method="chunks")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
