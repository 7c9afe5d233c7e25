"""models.geometry.cameras: projection against OpenCV, intrinsics, poses, quaternions and every conversion
out of the OpenCV convention (OpenGL, Z-up, glTF Y-up)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from models.geometry.cameras import (
    Camera,
    CameraError,
    axis_angle,
    c2w_for_gltf_camera,
    c2w_for_zup_camera,
    fov_degrees,
    intrinsics_from_exif,
    intrinsics_from_fov,
    invert_pose,
    look_at,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
    pixel_grid,
    project_points,
    quat_wxyz_to_rotmat,
    rotation_between,
    rotmat_to_quat_wxyz,
    scale_intrinsics,
    transform_points,
    unproject_depth,
    world_to_gltf,
    world_to_zup,
)


def _random_K(rng: np.random.Generator, width: int = 640, height: int = 480) -> np.ndarray:
    fx = rng.uniform(200, 900)
    fy = fx * rng.uniform(0.9, 1.1)
    cx = width / 2 + rng.uniform(-30, 30)
    cy = height / 2 + rng.uniform(-30, 30)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _random_c2w(rng: np.random.Generator) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    c2w[:3, 3] = rng.uniform(-3, 3, 3)
    return c2w


def _points_in_front(rng: np.random.Generator, cam: Camera, n: int) -> np.ndarray:
    """World points (n, 3) in front of ``cam``, inside its image."""
    u = rng.uniform(0, cam.width - 1, n)
    v = rng.uniform(0, cam.height - 1, n)
    z = rng.uniform(0.5, 20.0, n)
    K = cam.K
    xyz_cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    return transform_points(cam.c2w, xyz_cam)


# ---------------------------------------------------------------------------------------------
# Projection


def test_project_points_matches_cv2_in_camera_frame():
    rng = np.random.default_rng(0)
    for _ in range(5):
        K = _random_K(rng)
        xyz_cam = np.stack(
            [rng.uniform(-5, 5, 200), rng.uniform(-5, 5, 200), rng.uniform(0.2, 30, 200)], -1
        )
        uv, z = project_points(xyz_cam, K)
        ref, _ = cv2.projectPoints(xyz_cam, np.zeros(3), np.zeros(3), K, None)
        np.testing.assert_allclose(uv, ref[:, 0], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(z, xyz_cam[:, 2])


def test_project_world_points_matches_cv2_with_rvec_tvec():
    rng = np.random.default_rng(1)
    for _ in range(5):
        cam = Camera(_random_K(rng), _random_c2w(rng), 640, 480)
        X = _points_in_front(rng, cam, 300)
        uv, z = project_points(transform_points(cam.w2c, X), cam.K)
        rvec, _ = cv2.Rodrigues(cam.w2c[:3, :3])
        ref, _ = cv2.projectPoints(X, rvec, cam.w2c[:3, 3], cam.K, None)
        np.testing.assert_allclose(uv, ref[:, 0], atol=1e-6, rtol=0)
        assert (z > 0).all()


def test_project_points_torch_matches_numpy():
    rng = np.random.default_rng(2)
    K = _random_K(rng)
    xyz = np.stack([rng.uniform(-2, 2, 50), rng.uniform(-2, 2, 50), rng.uniform(1, 5, 50)], -1)
    uv_np, z_np = project_points(xyz, K)
    uv_t, z_t = project_points(torch.from_numpy(xyz), K)
    assert isinstance(uv_t, torch.Tensor)
    np.testing.assert_allclose(uv_t.numpy(), uv_np, atol=1e-9)
    np.testing.assert_allclose(z_t.numpy(), z_np, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_unproject_then_project_gives_pixel_grid(backend):
    rng = np.random.default_rng(3)
    W, H = 37, 23
    K = np.array([[41.7, 0.0, 17.3], [0.0, 39.2, 11.9], [0.0, 0.0, 1.0]])
    depth = rng.uniform(0.5, 8.0, (H, W)).astype(np.float32)
    if backend == "torch":
        depth_in = torch.from_numpy(depth)
        xyz = unproject_depth(depth_in, K)
        assert isinstance(xyz, torch.Tensor) and xyz.shape == (H, W, 3)
        uv, z = project_points(xyz, K)
        uv, z = uv.numpy(), z.numpy()
        u, v = (a.numpy() for a in pixel_grid(W, H, torch))
    else:
        xyz = unproject_depth(depth, K)
        assert isinstance(xyz, np.ndarray) and xyz.shape == (H, W, 3)
        uv, z = project_points(xyz, K)
        u, v = pixel_grid(W, H)
    # pixel (x, y) has its centre at (x, y)
    assert u[5, 7] == 7 and v[5, 7] == 5
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-3)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-3)
    np.testing.assert_array_equal(z, depth)


# ---------------------------------------------------------------------------------------------
# Camera validation, poses


def test_camera_validation_errors():
    K = intrinsics_from_fov(64, 48, 60)
    Camera(K, np.eye(4), 64, 48)  # fine
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(CameraError, match="NaN"):
        Camera(K, bad, 64, 48)
    K_nan = K.copy()
    K_nan[0, 2] = np.inf
    with pytest.raises(CameraError):
        Camera(K_nan, np.eye(4), 64, 48)
    scaled = np.eye(4)
    scaled[:3, :3] *= 2.0
    with pytest.raises(CameraError, match="rotation"):
        Camera(K, scaled, 64, 48)
    reflect = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(CameraError, match="rotation"):
        Camera(K, reflect, 64, 48)
    K_neg = K.copy()
    K_neg[0, 0] = -K_neg[0, 0]
    with pytest.raises(CameraError, match="focal"):
        Camera(K_neg, np.eye(4), 64, 48)
    with pytest.raises(CameraError):
        Camera(np.eye(4), np.eye(4), 64, 48)
    with pytest.raises(CameraError):
        Camera(K, np.eye(3), 64, 48)
    with pytest.raises(CameraError):
        Camera(K, np.eye(4), 0, 48)
    assert issubclass(CameraError, ValueError)


def test_invert_pose_round_trip_and_camera_w2c():
    rng = np.random.default_rng(4)
    for _ in range(10):
        c2w = _random_c2w(rng)
        w2c = invert_pose(c2w)
        np.testing.assert_allclose(w2c @ c2w, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(invert_pose(w2c), c2w, atol=1e-12)
        np.testing.assert_allclose(w2c, np.linalg.inv(c2w), atol=1e-12)
        cam = Camera(intrinsics_from_fov(64, 48), c2w, 64, 48)
        np.testing.assert_allclose(cam.w2c, w2c, atol=1e-12)
        np.testing.assert_allclose(cam.center, c2w[:3, 3])
        np.testing.assert_allclose(cam.forward, c2w[:3, 2])
        # the camera centre maps to the origin of its own frame
        np.testing.assert_allclose(transform_points(cam.w2c, cam.center), 0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Intrinsics


def test_scale_intrinsics_round_trip_and_pixel_centres():
    rng = np.random.default_rng(5)
    K = _random_K(rng, 640, 480)
    K[0, 1] = 0.7  # a little skew must scale too
    K2 = scale_intrinsics(K, (640, 480), (320, 200))
    np.testing.assert_allclose(scale_intrinsics(K2, (320, 200), (640, 480)), K, atol=1e-10)
    sx, sy = 320 / 640, 200 / 480
    xyz_cam = np.stack(
        [rng.uniform(-1, 1, 100), rng.uniform(-1, 1, 100), rng.uniform(1, 9, 100)], -1
    )

    # project with the skew written out: u = fx x/z + s y/z + cx
    def proj(KK):
        p = xyz_cam @ KK.T
        return p[:, :2] / p[:, 2:]

    uv1, uv2 = proj(K), proj(K2)
    np.testing.assert_allclose(uv2[:, 0], (uv1[:, 0] + 0.5) * sx - 0.5, atol=1e-9)
    np.testing.assert_allclose(uv2[:, 1], (uv1[:, 1] + 0.5) * sy - 0.5, atol=1e-9)
    # Camera.resized goes through the same path
    cam = Camera(K, np.eye(4), 640, 480).resized(320, 200)
    assert (cam.width, cam.height) == (320, 200)
    np.testing.assert_allclose(cam.K, K2)


@pytest.mark.parametrize("hfov", [20.0, 45.0, 60.0, 90.0, 120.0])
def test_intrinsics_from_fov_gives_requested_fov(hfov):
    W, H = 640, 360
    K = intrinsics_from_fov(W, H, hfov)
    h, v = fov_degrees(K, W, H)
    assert h == pytest.approx(hfov, abs=1e-9)
    # square pixels: the vertical fov follows from the aspect ratio
    expected_v = 2 * math.degrees(math.atan(math.tan(math.radians(hfov) / 2) * H / W))
    assert v == pytest.approx(expected_v, abs=1e-9)
    assert K[0, 2] == pytest.approx((W - 1) / 2) and K[1, 2] == pytest.approx((H - 1) / 2)
    assert K[0, 0] == K[1, 1]


@pytest.mark.parametrize("bad", [0.5, 1.0, 179.0, 200.0, -10.0])
def test_intrinsics_from_fov_rejects_nonsense(bad):
    with pytest.raises(CameraError):
        intrinsics_from_fov(64, 48, bad)


def test_intrinsics_from_exif():
    K = intrinsics_from_exif(4000, 3000, focal_35mm=26)
    assert K is not None
    assert K[0, 0] == pytest.approx(26 / 36 * 4000) and K[1, 1] == pytest.approx(26 / 36 * 4000)
    assert K[0, 2] == pytest.approx(1999.5) and K[1, 2] == pytest.approx(1499.5)
    # portrait: the 36 mm refer to the long side
    Kp = intrinsics_from_exif(3000, 4000, focal_35mm=26)
    assert Kp is not None and Kp[0, 0] == pytest.approx(26 / 36 * 4000)
    # real focal length needs the sensor width
    K2 = intrinsics_from_exif(4000, 3000, focal_mm=4.2, sensor_width_mm=6.17)
    assert K2 is not None and K2[0, 0] == pytest.approx(4.2 / 6.17 * 4000)
    assert intrinsics_from_exif(4000, 3000, focal_mm=4.2) is None
    assert intrinsics_from_exif(4000, 3000) is None
    # nonsense: 1 mm on the 35 mm scale (fov ~ 172 deg), 2000 mm (fov ~ 1 deg), negative, NaN
    assert intrinsics_from_exif(4000, 3000, focal_35mm=1) is None
    assert intrinsics_from_exif(4000, 3000, focal_35mm=2000) is None
    assert intrinsics_from_exif(4000, 3000, focal_35mm=-26) is None
    assert intrinsics_from_exif(4000, 3000, focal_35mm=float("nan")) is None
    assert intrinsics_from_exif(4000, 3000, focal_mm=4.2, sensor_width_mm=0) is None


# ---------------------------------------------------------------------------------------------
# Rotations


def _is_rotation(R: np.ndarray) -> bool:
    return np.allclose(R @ R.T, np.eye(3), atol=1e-9) and abs(np.linalg.det(R) - 1) < 1e-9


def test_look_at():
    rng = np.random.default_rng(6)
    for _ in range(20):
        eye = rng.uniform(-5, 5, 3)
        target = eye + rng.normal(size=3) * 3
        up = rng.normal(size=3)
        up /= np.linalg.norm(up)
        c2w = look_at(eye, target, up)
        R = c2w[:3, :3]
        assert _is_rotation(R)
        np.testing.assert_allclose(c2w[:3, 3], eye)
        d = (target - eye) / np.linalg.norm(target - eye)
        np.testing.assert_allclose(R[:, 2], d, atol=1e-12)
        if abs(np.dot(d, up)) < 0.99:
            assert np.dot(-R[:, 1], up) > 0
            # camera x is horizontal (perpendicular to up)
            assert abs(np.dot(R[:, 0], up)) < 1e-9
        # the target projects to the principal point
        cam = Camera(intrinsics_from_fov(64, 48), c2w, 64, 48)
        uv, z = project_points(transform_points(cam.w2c, target), cam.K)
        np.testing.assert_allclose(uv, cam.K[:2, 2], atol=1e-9)
        assert z > 0
    # level camera: world up [0, -1, 0] looking down +z gives the identity
    np.testing.assert_allclose(look_at([0, 0, 0], [0, 0, 1], [0, -1, 0]), np.eye(4), atol=1e-12)
    with pytest.raises(CameraError):
        look_at([0, 0, 0], [0, 0, 0], [0, -1, 0])
    with pytest.raises(CameraError):
        look_at([0, 0, 0], [0, -2, 0], [0, -1, 0])


def test_rotation_between_and_axis_angle():
    rng = np.random.default_rng(7)
    for _ in range(20):
        a, b = rng.normal(size=3), rng.normal(size=3)
        R = rotation_between(a, b)
        assert _is_rotation(R)
        np.testing.assert_allclose(R @ (a / np.linalg.norm(a)), b / np.linalg.norm(b), atol=1e-9)
        # smallest rotation: the angle equals the angle between a and b, axis along a x b
        ang = math.acos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))
        rv = Rotation.from_matrix(R).as_rotvec()
        assert np.linalg.norm(rv) == pytest.approx(ang, abs=1e-7)
        axis = np.cross(a, b)
        np.testing.assert_allclose(rv / np.linalg.norm(rv), axis / np.linalg.norm(axis), atol=1e-7)
    # opposite and identical directions
    for a in ([1.0, 0, 0], [0, 0, 2.0], [0.3, -0.4, 0.5]):
        a = np.asarray(a)
        R = rotation_between(a, -a)
        assert _is_rotation(R)
        np.testing.assert_allclose(R @ a, -a, atol=1e-9)
        np.testing.assert_allclose(rotation_between(a, a), np.eye(3), atol=1e-12)
    # axis_angle against scipy (right hand: z by 90 degrees takes x to y)
    np.testing.assert_allclose(
        axis_angle([0, 0, 1], math.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12
    )
    for _ in range(10):
        axis = rng.normal(size=3)
        ang = rng.uniform(-math.pi, math.pi)
        ref = Rotation.from_rotvec(axis / np.linalg.norm(axis) * ang).as_matrix()
        np.testing.assert_allclose(axis_angle(axis * 3.0, ang), ref, atol=1e-12)


def _quat_test_rotations() -> list[np.ndarray]:
    rots = list(Rotation.random(200, random_state=8).as_matrix())
    rng = np.random.default_rng(8)
    # 180-degree rotations (trace -1) about coordinate and random axes, and near-180 ones
    axes = [np.eye(3)[i] for i in range(3)] + [rng.normal(size=3) for _ in range(10)]
    for axis in axes:
        axis = axis / np.linalg.norm(axis)
        rots.append(axis_angle(axis, math.pi))
        rots.append(axis_angle(axis, math.pi - 1e-7))
    rots += [np.eye(3), axis_angle([1.0, 2.0, 3.0], 1e-9)]
    return rots


def test_quaternion_round_trip_and_scipy():
    for R in _quat_test_rotations():
        q = rotmat_to_quat_wxyz(R)
        assert q.shape == (4,)
        assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-12)
        assert q[0] >= 0
        np.testing.assert_allclose(quat_wxyz_to_rotmat(q), R, atol=1e-9)
        x, y, z, w = Rotation.from_matrix(R).as_quat()  # scipy: scalar last
        ref = np.array([w, x, y, z])
        # q and -q are the same rotation; with w >= 0 they agree unless w == 0
        assert min(np.abs(q - ref).max(), np.abs(q + ref).max()) < 1e-7
        np.testing.assert_allclose(
            quat_wxyz_to_rotmat(ref), Rotation.from_quat([x, y, z, w]).as_matrix(), atol=1e-12
        )
    # an unnormalised quaternion is normalised
    np.testing.assert_allclose(quat_wxyz_to_rotmat([2.0, 0, 0, 0]), np.eye(3), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Conversions


def test_opencv_opengl_round_trip_and_gl_looks_down_minus_z():
    rng = np.random.default_rng(9)
    for _ in range(10):
        cam = Camera(_random_K(rng), _random_c2w(rng), 640, 480)
        gl = opencv_to_opengl_c2w(cam.c2w)
        assert _is_rotation(gl[:3, :3])
        np.testing.assert_allclose(opengl_to_opencv_c2w(gl), cam.c2w, atol=1e-12)
        np.testing.assert_allclose(gl[:3, 3], cam.c2w[:3, 3])
        X = _points_in_front(rng, cam, 50)
        xyz_gl = transform_points(invert_pose(gl), X)
        assert (xyz_gl[:, 2] < 0).all()
        xyz_cv = transform_points(cam.w2c, X)
        np.testing.assert_allclose(xyz_gl, xyz_cv * [1, -1, -1], atol=1e-9)


def test_world_to_zup():
    rng = np.random.default_rng(10)
    cases = [([0.0, -1.0, 0.0], None, [0.0, 0.0, 1.0])]
    for _ in range(10):
        up = rng.normal(size=3)
        fwd = rng.normal(size=3)
        cases.append((list(up), list(fwd), list(fwd)))
    for up, fwd, seed_dir in cases:
        M = world_to_zup(np.array(up), None if fwd is None else np.array(fwd))
        assert M.shape == (4, 4)
        assert _is_rotation(M[:3, :3])
        np.testing.assert_allclose(M[:3, 3], 0)
        u = np.asarray(up) / np.linalg.norm(up)
        np.testing.assert_allclose(M[:3, :3] @ u, [0, 0, 1], atol=1e-9)
        s = np.asarray(seed_dir, float)
        h = s - np.dot(s, u) * u
        h /= np.linalg.norm(h)
        np.testing.assert_allclose(M[:3, :3] @ h, [0, 1, 0], atol=1e-9)
    # looking straight along up still gives a proper rotation with up -> +Z
    M = world_to_zup(np.array([0.0, -1.0, 0.0]), np.array([0.0, -1.0, 0.0]))
    assert _is_rotation(M[:3, :3])
    np.testing.assert_allclose(M[:3, :3] @ [0, -1, 0], [0, 0, 1], atol=1e-9)
    # level seed camera: its right (+x) stays right (+X)
    M = world_to_zup(np.array([0.0, -1.0, 0.0]))
    np.testing.assert_allclose(M[:3, :3] @ [1, 0, 0], [1, 0, 0], atol=1e-12)


def test_c2w_for_zup_camera_identity_camera():
    T = c2w_for_zup_camera(np.eye(4), np.array([0.0, -1.0, 0.0]))
    assert _is_rotation(T[:3, :3])
    # GL camera looks along its -Z: the seed camera looks down +Y in the Z-up world
    np.testing.assert_allclose(T[:3, :3] @ [0, 0, -1], [0, 1, 0], atol=1e-12)
    # GL camera +Y is its up: +Z in the Z-up world
    np.testing.assert_allclose(T[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [1, 0, 0], atol=1e-12)
    # a moved camera: its centre is mapped by world_to_zup
    rng = np.random.default_rng(11)
    up = np.array([0.1, -1.0, 0.2])
    c2w = _random_c2w(rng)
    T = c2w_for_zup_camera(c2w, up)
    M = world_to_zup(up)
    np.testing.assert_allclose(T[:3, 3], M[:3, :3] @ c2w[:3, 3], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ [0, 0, -1], M[:3, :3] @ c2w[:3, 2], atol=1e-12)


def test_world_to_gltf():
    rng = np.random.default_rng(12)
    for _ in range(10):
        up, fwd = rng.normal(size=3), rng.normal(size=3)
        M = world_to_gltf(up, fwd)
        assert _is_rotation(M[:3, :3])
        u = up / np.linalg.norm(up)
        np.testing.assert_allclose(M[:3, :3] @ u, [0, 1, 0], atol=1e-9)
        h = fwd - np.dot(fwd, u) * u
        h /= np.linalg.norm(h)
        np.testing.assert_allclose(M[:3, :3] @ h, [0, 0, -1], atol=1e-9)
    # the seed camera node in glTF: identity rotation (looks along -Z, +Y up)
    T = c2w_for_gltf_camera(np.eye(4), np.array([0.0, -1.0, 0.0]))
    np.testing.assert_allclose(T, np.eye(4), atol=1e-12)
