"""3D Gaussian splats from the world's memory frames: pixel-aligned initialisation.

Every kept pixel of every frame becomes one Gaussian:

- **position**: the pixel unprojected with its z-depth and moved to world coordinates;
- **scale**: the pixel footprint at that depth (``z / f`` metres per pixel, times the stride), as a
  disc facing the camera: the two in-plane axes get the footprint, the axis along the viewing ray
  is much thinner (a surface seen from one view has no known thickness);
- **rotation**: the camera's rotation composed with the rotation taking the optical axis onto the
  pixel's ray, so the thin axis points along the ray;
- **opacity**: from a per-pixel confidence in [0, 1] (1 when none is given), stored as a logit;
- **colour**: spherical harmonics degree 0, ``sh0 = (rgb - 0.5) / C0``.

Frames overlap (a later frame re-sees what memory already holds), so they are fused
(``models.lift.splat_fusion``): per voxel the best frame's Gaussians are kept unaveraged (the
photo's pixels first: every later copy is resampled), a Gaussian whose surface point another
frame saw better is dropped, and sky / far backdrop pixels form a shell (one Gaussian per
direction) instead of a black hole. All steps are deterministic. The lift then solves the
colours by least squares against the frames (``models.lift.splat_colors``): the fused colours
here are its starting point and its prior.

Arrays are float32 numpy; the renderer and refinement live in ``models.lift.splat_render``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.geometry.cameras import rotmat_to_quat_wxyz, transform_points, unproject_depth

__all__ = [
    "SH_C0",
    "Frame",
    "Gaussians",
    "depth_edge_confidence",
    "init_from_frames",
    "quat_multiply",
    "rgb_to_sh0",
    "sh0_to_rgb",
    "sh_basis",
]

SH_C0 = 0.28209479177387814  # Y_0^0: colour = sh0 * C0 + 0.5 (3DGS convention)
THIN_RATIO = 0.1  # ray-axis scale relative to the in-plane footprint

# (rgb uint8 (H, W, 3), depth float (H, W) z metres, K (3, 3), c2w (4, 4), confidence (H, W) | None)
Frame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"]


@dataclass
class Gaussians:
    """A set of N 3D Gaussians in the world frame (OpenCV axes, metres).

    means (N, 3); quats (N, 4) unit w,x,y,z; log_scales (N, 3) natural-log std-devs along the
    rotated axes; opacity_logits (N,) (opacity = sigmoid); sh0 (N, 3) degree-0 SH coefficients;
    sh_rest (N, K, 3) higher-order coefficients (K = 3, 8 or 15) or None.
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh0: np.ndarray
    sh_rest: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def opacities(self) -> np.ndarray:
        """(N,) opacity in (0, 1)."""
        return 1.0 / (1.0 + np.exp(-self.opacity_logits))

    @property
    def rgb(self) -> np.ndarray:
        """(N, 3) base colour in [0, 1] (degree-0 part only)."""
        return sh0_to_rgb(self.sh0)

    def subset(self, index: np.ndarray) -> Gaussians:
        """The Gaussians selected by a boolean mask or an index array."""
        rest = None if self.sh_rest is None else self.sh_rest[index]
        return Gaussians(
            self.means[index], self.quats[index], self.log_scales[index],
            self.opacity_logits[index], self.sh0[index], rest,
        )  # fmt: skip


def rgb_to_sh0(rgb01: np.ndarray) -> np.ndarray:
    """DC coefficients from colours in [0, 1] (..., 3)."""
    return ((np.asarray(rgb01, np.float32) - 0.5) / SH_C0).astype(np.float32)


def sh0_to_rgb(sh0: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] (..., 3) from DC coefficients (clipped, as viewers display them)."""
    return np.clip(np.asarray(sh0, np.float32) * SH_C0 + 0.5, 0.0, 1.0)


_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
          0.5462742152960396)  # fmt: skip
_SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
          -0.4570457994644658, 1.445305721320277, -0.5900435899266435)  # fmt: skip


def sh_basis(dirs, n_rest: int) -> list:
    """The ``n_rest`` (3, 8 or 15) real SH basis values beyond the DC term, 3DGS's order and
    signs, for unit directions ``dirs`` (..., 3) from the camera to the Gaussian (numpy or torch):
    colour = sh0·C0 + Σ_k basis[k]·sh_rest[:, k] + 0.5. Returned as a list of (...,) arrays."""
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if n_rest > 3:
        xx, yy, zz = x * x, y * y, z * z
        c = _SH_C2
        out += [c[0] * x * y, c[1] * y * z, c[2] * (2 * zz - xx - yy), c[3] * x * z,
                c[4] * (xx - yy)]  # fmt: skip
    if n_rest > 8:
        c = _SH_C3
        out += [c[0] * y * (3 * xx - yy), c[1] * x * y * z, c[2] * y * (4 * zz - xx - yy),
                c[3] * z * (2 * zz - 3 * xx - 3 * yy), c[4] * x * (4 * zz - xx - yy),
                c[5] * z * (xx - yy), c[6] * x * (xx - 3 * yy)]  # fmt: skip
    return out[:n_rest]


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of w,x,y,z quaternions (..., 4): the rotation ``a`` after ``b``."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def depth_edge_confidence(depth: np.ndarray, rel_step: float = 0.05) -> np.ndarray:
    """Confidence (H, W) in [0, 1] that drops at depth discontinuities.

    A pixel on an occlusion edge unprojects to a "flying" point between foreground and background;
    its splat would smear across the gap, so it gets low opacity. Measured by the largest relative
    depth step to a 4-neighbour: ``exp(-(step / z) / rel_step)``. Invalid depth gives 0.
    """
    z = np.asarray(depth, np.float64)
    ok = np.isfinite(z) & (z > 0)
    zf = np.where(ok, z, np.nan)
    pad = np.pad(zf, 1, mode="edge")
    steps = [np.abs(pad[1:-1, 1:-1] - pad[1 + dy : pad.shape[0] - 1 + dy, 1 + dx : pad.shape[1] - 1 + dx])
             for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]  # fmt: skip
    step = np.nan_to_num(np.nanmax(np.stack(steps), 0), nan=0.0) / np.where(ok, z, 1.0)
    return np.where(ok, np.exp(-step / rel_step), 0.0).astype(np.float32)


def _rims_to_back(depth: np.ndarray, step: float = 0.1) -> np.ndarray:
    """Depth (H, W) with the near-side pixels of each depth step moved back to the far side.

    The pixel on an outline mixes foreground and background colour. Left at the foreground's
    depth, its Gaussian hangs beside the object when seen from elsewhere (a fringe in the
    disocclusion); at the background's depth it still fills its own pixel in its own view (the
    same ray) and hides behind the object elsewhere. A pixel is on the near side when a
    4-neighbour is more than ``step`` (relative) farther.
    """
    z = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    pad = np.pad(z, 1, mode="edge")
    far = np.max(np.stack([pad[1:-1, :-2], pad[1:-1, 2:], pad[:-2, 1:-1], pad[2:, 1:-1]]), axis=0)
    rim = (z > 0) & (far > z * (1 + step))
    return np.where(rim, far, depth)


def _frame_gaussians(
    rgb: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    confidence: np.ndarray | None,
    stride: int,
    footprint_scale: float,
    base_opacity: float,
) -> tuple[np.ndarray, ...]:
    """Per-pixel Gaussians of one frame: means, quats, log_scales, opacities, sh0, footprint
    (metres per strided pixel), and the distance from the camera (ray length)."""
    depth = _rims_to_back(np.asarray(depth, np.float64))
    H, W = depth.shape
    if rgb.shape[:2] != (H, W):
        raise ValueError(f"frame colour is {rgb.shape[1]}x{rgb.shape[0]} but depth is {W}x{H}")
    xyz_cam = unproject_depth(depth, np.asarray(K, np.float64))[::stride, ::stride]
    z = depth[::stride, ::stride]
    conf = (
        np.ones_like(z)
        if confidence is None
        else np.asarray(confidence, np.float64)[::stride, ::stride]
    )
    keep = np.isfinite(z) & (z > 0) & np.isfinite(xyz_cam).all(-1) & (conf > 0)
    xyz_cam, z, conf = xyz_cam[keep], z[keep], np.clip(conf[keep], 0.0, 1.0)
    colors = rgb[::stride, ::stride][keep].astype(np.float32) / 255.0

    c2w = np.asarray(c2w, np.float64)
    means = transform_points(c2w, xyz_cam)
    # Rotation: camera axes, then turn the optical axis (0,0,1) onto the pixel's ray d. The
    # shortest-arc quaternion is normalize(1 + d_z, e_z x d) = normalize(1 + d_z, -d_y, d_x, 0).
    d = xyz_cam / np.linalg.norm(xyz_cam, axis=1, keepdims=True)
    q_ray = np.stack([1 + d[:, 2], -d[:, 1], d[:, 0], np.zeros(len(d))], -1)
    q_ray /= np.linalg.norm(q_ray, axis=1, keepdims=True)
    q_cam = rotmat_to_quat_wxyz(c2w[:3, :3])
    quats = quat_multiply(np.broadcast_to(q_cam, q_ray.shape), q_ray)
    quats *= np.where(quats[:, :1] < 0, -1.0, 1.0)  # w >= 0, one canonical sign
    # Footprint of one (strided) pixel at that depth, measured along the ray (ray length / f).
    f = np.sqrt(float(K[0, 0]) * float(K[1, 1]))
    dist = np.linalg.norm(xyz_cam, axis=1)
    footprint = dist / f * stride
    s = footprint * footprint_scale
    log_scales = np.log(np.stack([s, s, s * THIN_RATIO], -1))
    opac = np.clip(base_opacity * conf, 0.005, 0.995)
    return means, quats, log_scales, opac, rgb_to_sh0(colors), footprint, dist


def _pixel_values(
    mask: np.ndarray | None, depth: np.ndarray, conf: np.ndarray | None, stride: int, n: int
) -> np.ndarray:
    """(n,) bool values of ``mask`` at the pixels :func:`_frame_gaussians` kept (all True when
    ``mask`` is None)."""
    if mask is None:
        return np.ones(n, bool)
    z = np.asarray(depth, np.float64)[::stride, ::stride]
    c = np.ones_like(z) if conf is None else np.asarray(conf, np.float64)[::stride, ::stride]
    keep = np.isfinite(z) & (z > 0) & (c > 0)
    return np.asarray(mask, bool)[::stride, ::stride][keep]


def init_from_frames(
    frames: list[Frame],
    stride: int = 1,
    voxel: float | None = None,
    footprint_scale: float = 0.75,
    base_opacity: float = 0.95,
    far: float | None = None,
    dedupe: bool = True,
    observed: list[np.ndarray | None] | None = None,
    vote: bool = True,
    consensus: bool = True,
) -> Gaussians:
    """Pixel-aligned Gaussians from frames ``(rgb uint8 (H,W,3), depth (H,W), K, c2w, conf|None)``.

    ``stride`` keeps every stride-th pixel in x and y (footprints grow to match). Overlapping
    frames are fused (``models.lift.splat_fusion``): per voxel of ``voxel`` metres (None = the
    median footprint, 0 = no fusion) the best frame's Gaussians are kept as they are, and with
    ``dedupe`` a Gaussian whose surface point another frame saw better is dropped. Pixels at
    depth ``far`` or beyond (sky, far backdrop) form a backdrop shell, one Gaussian per viewing
    direction, nearly opaque. ``observed`` (one (H, W) bool mask or None per frame) ranks a
    frame's pixels traced to the photo above its painted ones when fusing (a later frame's paint
    never replaces the photo). With ``vote`` (3 frames or more) a surface Gaussian that more
    frames see through than see is dropped (``splat_fusion.see_through``); with ``consensus``
    every kept Gaussian takes the mean colour of the frames that see it
    (``splat_fusion.consensus_colors``): the world's frames disagree where they were painted,
    and one view-independent splat can only meet them halfway. ``footprint_scale`` is the
    in-plane std-dev in pixels of footprint (0.75 px plus the renderer's 0.3 px² dilation lets
    neighbouring splats blend without holes). Deterministic.
    """
    from models.lift.splat_fusion import (
        View,
        backdrop_keep,
        consensus_colors,
        duplicates,
        keep_sharpest,
        see_through,
    )

    if not frames:
        raise ValueError("no frames to build splats from")
    if stride < 1:
        raise ValueError(f"stride must be >= 1 (got {stride})")
    parts = [
        _frame_gaussians(rgb, depth, K, c2w, conf, stride, footprint_scale, base_opacity)
        for rgb, depth, K, c2w, conf in frames
    ]
    frame = np.concatenate([np.full(len(p[0]), i, np.int64) for i, p in enumerate(parts)])
    means, quats, log_scales, opac, sh0, footprint, dist = (
        np.concatenate(x) for x in zip(*parts, strict=True)
    )
    if len(means) == 0:
        raise ValueError("the frames have no valid depth: nothing to build splats from")
    back = dist >= far if far is not None else np.zeros(len(means), bool)
    keep = ~back
    if voxel is None:
        voxel = float(np.median(footprint[keep])) if keep.any() else 0.0
    obs = None
    if observed is not None:
        obs = np.concatenate(
            [
                _pixel_values(o, d, conf, stride, p[0].shape[0])
                for o, (_, d, _, _, conf), p in zip(observed, frames, parts, strict=True)
            ]
        )
    if voxel > 0 and keep.any():
        idx = np.flatnonzero(keep)
        keep[idx] = keep_sharpest(
            means[idx], footprint[idx], frame[idx], voxel, None if obs is None else obs[idx]
        )
    views = [
        View(
            np.where(np.isfinite(d), d, 0.0), K, c2w, None if o is None else ~np.asarray(o, bool),
            rgb,
        )
        for (rgb, d, K, c2w, _), o in zip(frames, observed or [None] * len(frames), strict=True)
    ]  # fmt: skip
    if dedupe and len(frames) > 1 and keep.any():
        idx = np.flatnonzero(keep)
        painted = np.zeros(len(idx), bool) if obs is None else ~obs[idx]
        # Footprints compared per pixel of the full-resolution view: undo the stride.
        keep[idx] = duplicates(means[idx], footprint[idx] / stride, frame[idx], painted, views) == 0
    if vote and len(frames) > 2 and keep.any():
        idx = np.flatnonzero(keep)
        confirm, through = see_through(means[idx], frame[idx], views)
        # Seen through by more frames than see it: a ghost in most of the world's views.
        # (Thresholds 0.25-1x and opacity scaled by confirm / (confirm + through) were measured
        # on the street walk: within 0.1 dB of each other; the plain majority is kept.)
        keep[idx] = through <= confirm
    if back.any():
        idx = np.flatnonzero(back)
        origin = np.asarray(frames[0][3], np.float64)[:3, 3]
        rays = means[idx] - origin
        rng = np.linalg.norm(rays, axis=1, keepdims=True)
        keep[idx] = backdrop_keep(
            rays / np.maximum(rng, 1e-9), footprint[idx] / dist[idx], frame[idx]
        )
        opac[idx] = np.maximum(opac[idx], 0.995)  # a backdrop is never see-through
    if consensus and len(frames) > 1 and keep.any():
        idx = np.flatnonzero(keep)
        # The mean over the frames that see each point (own weight 1; 0.3 and 3 were within
        # 0.05 dB median on the street walk, 3 kept the photo's view 0.2 dB sharper but lost
        # 0.4 dB on the worst frame).
        # Its own colour passed in, not looked up: an outline pixel moved to the far side
        # (``_rims_to_back``) disagrees with its own frame's depth but is that frame's pixel.
        own = sh0_to_rgb(sh0[idx])
        sh0[idx] = rgb_to_sh0(consensus_colors(means[idx], frame[idx], own, views, far))
    opac = np.clip(opac[keep], 1e-4, 1 - 1e-4)
    return Gaussians(
        means=means[keep].astype(np.float32),
        quats=quats[keep].astype(np.float32),
        log_scales=log_scales[keep].astype(np.float32),
        opacity_logits=np.log(opac / (1 - opac)).astype(np.float32),
        sh0=sh0[keep].astype(np.float32),
    )
