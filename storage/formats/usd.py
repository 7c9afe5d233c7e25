"""USD physics scenes (Isaac Sim and any UsdPhysics reader): .usda, .usdc or .usdz.

Layout of the stage (metres, Z up, as Isaac Sim expects)::

    /World                      Xform (default prim)
    /World/PhysicsScene         UsdPhysics.Scene, gravity (0, 0, -1) * 9.81
    /World/Mesh                 UsdGeom.Mesh, displayColor, CollisionAPI + MeshCollisionAPI
                                (approximation "none": an exact triangle collider, which
                                simulators allow for static geometry; no RigidBodyAPI = static)
    /World/Camera               UsdGeom.Camera, one transform time sample per path frame

The caller converts to the Z-up frame and OpenGL camera axes (USD cameras look along -Z, Y up);
this module only writes.

``up_axis="Y"`` writes the variant AR viewers take (Apple's AR Quick Look and its ``usdchecker
--arkit`` profile require a Y-up stage): the caller passes Y-up coordinates, and the stage has no
physics prims (not among the prim types that profile allows) but a ``UsdPreviewSurface`` material
fed by the vertex colours; a ``.usdz`` is packaged with ``CreateNewARKitUsdzPackage``. Writes are atomic: the stage is exported to a temporary file next to
the target and renamed over it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from storage.errors import StorageError
from storage.formats.mesh import srgb_to_linear

__all__ = ["HORIZONTAL_APERTURE_MM", "write_usd"]

# USD cameras measure the film back and the focal length in the same (millimetre-like) unit;
# only their ratio matters for projection. A 36 mm wide full-frame back is the usual choice.
HORIZONTAL_APERTURE_MM = 36.0
_SUFFIXES = (".usda", ".usdc", ".usdz")


def _matrix(T: np.ndarray):
    from pxr import Gf

    # Gf matrices act on row vectors (p' = p M): the transpose of our column-vector 4x4.
    return Gf.Matrix4d(np.asarray(T, dtype=np.float64).T.tolist())


def _build_stage(
    file: str,
    vertices_zup: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None,
    camera_xforms: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    fps: float,
    up_axis: str = "Z",
):
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics, Vt

    stage = Usd.Stage.CreateNew(file)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    physics = up_axis == "Z"
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z if physics else UsdGeom.Tokens.y)
    world = UsdGeom.Xform.Define(stage, "/World")
    stage.SetDefaultPrim(world.GetPrim())

    if physics:
        scene = UsdPhysics.Scene.Define(stage, "/World/PhysicsScene")
        scene.CreateGravityDirectionAttr(Gf.Vec3f(0.0, 0.0, -1.0))
        scene.CreateGravityMagnitudeAttr(9.81)

    mesh = UsdGeom.Mesh.Define(stage, "/World/Mesh")
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(vertices_zup.astype(np.float32)))
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.astype(np.int32).ravel()))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # a triangle soup, not a cage
    # Depth-map triangulations have no reliable winding: render both sides.
    mesh.CreateDoubleSidedAttr(True)
    lo, hi = vertices_zup.min(axis=0), vertices_zup.max(axis=0)
    mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*lo.tolist()), Gf.Vec3f(*hi.tolist())]))
    if colors is not None:
        primvar = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar(
            "displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.vertex
        )
        # displayColor is linear by USD convention; image colours are sRGB-encoded.
        primvar.Set(Vt.Vec3fArray.FromNumpy(srgb_to_linear(colors)))
    if physics:
        UsdPhysics.CollisionAPI.Apply(mesh.GetPrim())
        UsdPhysics.MeshCollisionAPI.Apply(mesh.GetPrim()).CreateApproximationAttr(
            UsdPhysics.Tokens.none
        )
    else:
        _bind_vertex_colour_material(stage, mesh)

    cam = UsdGeom.Camera.Define(stage, "/World/Camera")
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    h_ap = HORIZONTAL_APERTURE_MM
    focal = fx / width * h_ap
    v_ap = height / fy * focal  # non-square pixels: vertical aperture carries fy
    cam.CreateFocalLengthAttr(focal)
    cam.CreateHorizontalApertureAttr(h_ap)
    cam.CreateVerticalApertureAttr(v_ap)
    # A principal point right of the image centre means the film window sits left of the lens
    # axis, hence the minus; image v grows downwards while USD's y grows up, hence no minus.
    # (Checked by projecting through the USD frustum: tests/test_physics.py.)
    cam.CreateHorizontalApertureOffsetAttr(-(cx - (width - 1) / 2.0) / width * h_ap)
    cam.CreateVerticalApertureOffsetAttr((cy - (height - 1) / 2.0) / height * v_ap)
    cam.CreateClippingRangeAttr(Gf.Vec2f(0.01, 1000.0))
    op = cam.AddTransformOp()
    for t, T in enumerate(camera_xforms):
        op.Set(_matrix(T), Usd.TimeCode(float(t)))
    stage.SetStartTimeCode(0.0)
    stage.SetEndTimeCode(float(max(len(camera_xforms) - 1, 0)))
    stage.SetTimeCodesPerSecond(float(fps))
    stage.SetFramesPerSecond(float(fps))
    return stage


def _bind_vertex_colour_material(stage, mesh) -> None:
    """A UsdPreviewSurface whose diffuse colour reads the mesh's ``displayColor`` primvar."""
    from pxr import Sdf, UsdShade

    material = UsdShade.Material.Define(stage, "/World/Looks/VertexColour")
    surface = UsdShade.Shader.Define(stage, "/World/Looks/VertexColour/Surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    reader = UsdShade.Shader.Define(stage, "/World/Looks/VertexColour/DisplayColor")
    reader.CreateIdAttr("UsdPrimvarReader_float3")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("displayColor")
    colour = reader.CreateOutput("result", Sdf.ValueTypeNames.Float3)
    surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(colour)
    surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(1.0)
    surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
    out = surface.CreateOutput("surface", Sdf.ValueTypeNames.Token)
    material.CreateSurfaceOutput().ConnectToSource(out)
    UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(material)


def write_usd(
    path: str | os.PathLike[str],
    vertices_zup: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None,
    camera_xforms: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    fps: float = 24.0,
    up_axis: str = "Z",
) -> Path:
    """Write a physics-ready USD stage to ``path`` (suffix .usda, .usdc or .usdz), atomically.
    ``up_axis="Y"``: the AR variant (module docstring); coordinates are then Y-up.

    Args:
        vertices_zup: (V, 3) metres in the Z-up frame (Y-up for ``up_axis="Y"``). faces: (F, 3)
            int triangles.
        colors: (V, 3) uint8 sRGB vertex colours, or None.
        camera_xforms: (N, 4, 4) camera-to-world, Z-up frame, OpenGL camera axes; frame i is
            time code i, played at ``fps``.
        K: (3, 3) pixels for ``width`` x ``height``: sets focal length and apertures.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _SUFFIXES:
        raise StorageError(f"USD files end in .usda, .usdc or .usdz, not '{target.suffix}'")
    if up_axis not in ("Y", "Z"):
        raise StorageError(f"the up axis of a USD stage is Y or Z, not {up_axis!r}")
    v = np.asarray(vertices_zup, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    cams = np.asarray(camera_xforms, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3 or not np.isfinite(v).all():
        raise StorageError(f"mesh vertices must be finite (V >= 3, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or f.min() < 0 or f.max() >= len(v):
        raise StorageError("mesh faces must be (F >= 1, 3) indices into the vertices")
    if colors is not None and (np.shape(colors) != v.shape or np.asarray(colors).dtype != np.uint8):
        raise StorageError("mesh colours must be uint8 (V, 3) like the vertices")
    if cams.ndim != 3 or cams.shape[1:] != (4, 4) or len(cams) == 0 or not np.isfinite(cams).all():
        raise StorageError(f"camera transforms must be finite (N >= 1, 4, 4), got {cams.shape}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        # A .usdz is a zip of a layer: author a .usdc, then package it.
        layer = Path(tmp) / (target.stem + (".usdc" if suffix == ".usdz" else suffix))
        stage = _build_stage(str(layer), v, f, colors, cams, np.asarray(K, float), int(width),
                             int(height), fps, up_axis)  # fmt: skip
        stage.GetRootLayer().Save()
        del stage
        if suffix == ".usdz":
            from pxr import UsdUtils

            packaged = Path(tmp) / target.name
            package = (UsdUtils.CreateNewUsdzPackage if up_axis == "Z"
                       else UsdUtils.CreateNewARKitUsdzPackage)  # fmt: skip
            if not package(str(layer), str(packaged)):
                raise StorageError(f"could not package {target.name} as .usdz")
            layer = packaged
        os.replace(layer, target)  # same directory: an atomic rename
    return target
