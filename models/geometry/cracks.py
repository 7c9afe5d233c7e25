"""Routing the small holes inside a routed region (the correspondence's last step), and
counting the ones left.

After the retrieved frames are warped and composited, holes one or two pixels wide remain
inside routed regions: a pixel every warp dropped (a flying pixel at a depth edge, a depth
outlier, a failed depth check) between pixels that were routed. Left to the painter they became
the dotted contours of the street walks: the painter fills them from the background, the lift
gives them the background's depth, and the next frames carry them along as far-away specks.
:func:`route_cracks` routes them instead, with the same backward sampling as the warp, on the
right layer: a hole between two pixels of one surface takes that surface, a hole at a depth edge
takes the farther side (the layer a disocclusion uncovers).

:func:`crack_pixels` is the measure of what is left (the evaluation reports it per frame);
:func:`crack_pixels_reference` is its slow, obvious twin.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from numba.core.errors import NumbaPendingDeprecationWarning

from models.geometry import crack_kernels as ck
from models.geometry.cameras import Camera

__all__ = [
    "NEIGHBOUR_PAIRS",
    "crack_pixels",
    "crack_pixels_reference",
    "route_crack_pass",
    "route_cracks",
    "warm_up_cracks",
]


def _neighbour_pairs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index pairs (a, b) into the 8 neighbour offsets of :func:`route_cracks` whose offsets point
    to opposite sides of the centre (cosine < -0.1), and that cosine."""
    offs = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    a, b, c = [], [], []
    for i in range(8):
        for j in range(i + 1, 8):
            (y0, x0), (y1, x1) = offs[i], offs[j]
            cos = (y0 * y1 + x0 * x1) / math.hypot(y0, x0) / math.hypot(y1, x1)
            if cos < -0.1:
                a.append(i), b.append(j), c.append(cos)
    return torch.tensor(a), torch.tensor(b), torch.tensor(c)


NEIGHBOUR_PAIRS = _neighbour_pairs()
# exp(cosine) of each pair: a pair's score exp(cos) * (depth ratios to the median) ranks pairs
# as cos + |log ratio| would, with no logarithm (whose float32 rounding differs between torch and
# the compiled twin).
PAIR_EXP = torch.exp(NEIGHBOUR_PAIRS[2])


EXTRAPOLATED_STRETCH = 2.0  # stretch given to a continued neighbour: seen, but low detail
UV_GAP = 3.0  # px: two neighbours' source pixels this close are adjacent there too
DIRECTIONS = ((0, 1), (1, 0))  # a crack is measured along its row and its column
# The 8 neighbour offsets (y, x): offsets k and 7 - k are opposite.
OFFSETS = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


def crack_pixels(valid: torch.Tensor, max_width: int = 1) -> torch.Tensor:
    """(H, W) bool: the crack pixels of a routed mask ``valid`` (H, W) bool.

    A crack pixel is an unrouted (painted) pixel on a run of at most ``max_width`` unrouted
    pixels, along its row or its column, with routed pixels at both ends. With ``max_width`` 1:
    an unrouted pixel routed on both sides (left and right, or above and below); a one-pixel
    line in any direction, a diagonal one included, is all cracks. Outside the frame counts as
    unrouted. A painted region wider than ``max_width`` in both directions has none, its rim
    and corners included (a 2x2 hole: none at 1, four at 2).
    """
    valid = valid.bool()
    H, W = valid.shape
    r = max(int(max_width), 1)
    p = torch.nn.functional.pad(valid, (r, r, r, r))
    out = torch.zeros(H, W, dtype=torch.bool)
    for dy, dx in DIRECTIONS:
        # Distance to the nearest routed pixel ahead and behind (r + 1: none within r).
        ahead = torch.full((H, W), r + 1)
        behind = torch.full((H, W), r + 1)
        for k in range(r, 0, -1):
            ahead[p[r + k * dy : r + k * dy + H, r + k * dx : r + k * dx + W]] = k
            behind[p[r - k * dy : r - k * dy + H, r - k * dx : r - k * dx + W]] = k
        out |= ahead + behind - 1 <= r
    return out & ~valid


def crack_pixels_reference(valid: np.ndarray, max_width: int = 1) -> np.ndarray:
    """Slow twin of :func:`crack_pixels` (plain loops over pixels and directions)."""
    H, W = valid.shape
    out = np.zeros((H, W), bool)
    for y in range(H):
        for x in range(W):
            if valid[y, x]:
                continue
            for dy, dx in DIRECTIONS:
                run, ends = 1, 0
                for sign in (1, -1):
                    k = 1
                    while True:
                        yy, xx = y + sign * k * dy, x + sign * k * dx
                        if not (0 <= yy < H and 0 <= xx < W):
                            break
                        if valid[yy, xx]:
                            ends += 1
                            break
                        run, k = run + 1, k + 1
                if ends == 2 and run <= max_width:
                    out[y, x] = True
    return out


def _rigid(T: np.ndarray, xyz: torch.Tensor) -> torch.Tensor:
    """(N, 3) points ``xyz`` moved by the 4x4 float32 ``T``, summed element by element in a
    fixed order (a matrix product's order is the BLAS's; the compiled twin repeats this one)."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rows = [
        float(T[k, 0]) * x + float(T[k, 1]) * y + float(T[k, 2]) * z + float(T[k, 3])
        for k in range(3)
    ]
    return torch.stack(rows, -1)


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """max / min of positive depths: exp(|log(a / b)|) without the logarithm."""
    return torch.maximum(a, b) / torch.minimum(a, b)


def _bilinear(frame: Any, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N, 3) float [0, 1] colours of ``frame.rgb`` at source pixels (u, v), bilinear (border
    pixels replicated). Gathers the 4 pixels of each point: no full-image conversion."""
    Hs, Ws = frame.depth.shape
    u, v = u.clamp(0, Ws - 1), v.clamp(0, Hs - 1)
    u0, v0 = u.floor().long().clamp(max=Ws - 2).clamp(min=0), v.floor().long()
    v0 = v0.clamp(max=Hs - 2).clamp(min=0)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    img = frame.rgb.reshape(-1, 3)
    u1, v1 = (u0 + 1).clamp(max=Ws - 1), (v0 + 1).clamp(max=Hs - 1)

    def at(vi: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
        return img[vi * Ws + ui].float()

    top = at(v0, u0) * (1 - fu) + at(v0, u1) * fu
    bottom = at(v1, u0) * (1 - fu) + at(v1, u1) * fu
    return (top * (1 - fv) + bottom * fv) / 255.0


def _sample(
    xyz_world: torch.Tensor, fid: torch.Tensor, frames: Mapping[int, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward-sample world points (N, 3) in their frames ``fid`` (N,), like a warped pixel:
    projected into the frame and accepted when its depth at one of the 2x2 pixels there agrees
    (within 10 %). Returns accepted (N,) bool, rgb (N, 3) and source uv (N, 2)."""
    ok = torch.zeros(len(fid), dtype=torch.bool)
    rgb, uv = torch.zeros(len(fid), 3), torch.zeros(len(fid), 2)
    for frame_id in torch.unique(fid).tolist():
        m = torch.nonzero(fid == frame_id).squeeze(1)
        fr = frames[int(frame_id)]
        Hs, Ws = fr.depth.shape
        p = _rigid(fr.camera.w2c.astype(np.float32), xyz_world[m])
        zs = p[:, 2].clamp(min=1e-6)
        u = p[:, 0] / zs * float(fr.camera.K[0, 0]) + float(fr.camera.K[0, 2])
        v = p[:, 1] / zs * float(fr.camera.K[1, 1]) + float(fr.camera.K[1, 2])
        inb = (u >= -0.5) & (u <= Ws - 0.5) & (v >= -0.5) & (v <= Hs - 0.5) & (p[:, 2] > 1e-3)
        # Agreement with any of the 2x2 source pixels around (one may be unknown).
        agree = torch.zeros_like(inb)
        for oy in (0, 1):
            for ox in (0, 1):
                ui = (u.floor().long() + ox).clamp(0, Ws - 1)
                vi = (v.floor().long() + oy).clamp(0, Hs - 1)
                d_src = fr.depth[vi, ui]
                agree |= (d_src > 0) & ((d_src - p[:, 2]).abs() <= 0.1 * p[:, 2])
        agree &= inb
        m, u, v = m[agree], u[agree], v[agree]
        if m.numel():
            rgb[m] = _bilinear(fr, u, v)
            uv[m] = torch.stack([u, v], -1)
            ok[m] = True
    return ok, rgb, uv


def route_cracks(
    corr: Any,
    target: Camera,
    frames: Mapping[int, Any],
    pair_tol: float = 0.3,
    passes: int = 1,
    reference: bool = False,
    copy: bool = True,
) -> Any:
    """A :class:`models.memory.Correspondence` with its cracks routed (see
    :func:`route_crack_pass`), in up to ``passes`` passes: routing a crack can leave the pixel
    next to it one pixel wide, so a hole 2-3 px wide closes from its sides pass by pass. Each
    pass routes the holes with routed 8-neighbours on opposite sides (a superset of the 1-px
    :func:`crack_pixels`): the first looks at the whole frame, each later one only at the
    unrouted pixels next to the last one's fills (a few hundred: cheap).

    Compiled (:func:`models.geometry.crack_kernels.route_passes`); ``reference=True`` runs the
    torch passes (:func:`route_crack_pass`), which it matches bit for bit. ``copy=False``
    routes ``corr``'s own tensors in place (they must be contiguous) and returns it: for a
    caller that drops the unrouted correspondence (a copy of a 512x768 one costs 5 ms).
    """
    valid = corr.valid
    v = valid.numpy()  # numpy's all/any stop at the first miss/hit (torch's wake its threads)
    if v.all() or not v.any():
        return corr
    H, W = valid.shape
    tensors = {k: v for k, v in vars(corr).items() if isinstance(v, torch.Tensor)}
    out = {k: v.clone() for k, v in tensors.items()} if copy else tensors
    if not reference:
        _route_compiled(out, target, frames, pair_tol, passes)
        return type(corr)(**out) if copy else corr
    # Pass 1 visits, densely, every hole with routed neighbours on opposite sides (diagonal
    # pairs too); the inside of a large painted region has none and is never visited.
    vp = torch.nn.functional.pad(valid, (1, 1, 1, 1))
    opposite = (vp[1:-1, :-2] & vp[1:-1, 2:]) | (vp[:-2, 1:-1] & vp[2:, 1:-1])
    opposite |= (vp[:-2, :-2] & vp[2:, 2:]) | (vp[:-2, 2:] & vp[2:, :-2])
    holes = torch.nonzero(opposite & ~valid)
    continued = torch.zeros(H, W, dtype=torch.bool)  # pixels continued, never continued from
    for _ in range(passes):
        if holes.numel() == 0:
            break
        filled = route_crack_pass(out, holes, target, frames, pair_tol, continued)
        if filled.numel() == 0:
            break
        # Next: the unrouted 8-neighbours of this pass's fills (the pass tests for cracks).
        near = (filled[:, None, :] + OFFSETS[None]).reshape(-1, 2)
        near = near[(near[:, 0] >= 0) & (near[:, 0] < H) & (near[:, 1] >= 0) & (near[:, 1] < W)]
        flat = torch.unique(near[:, 0] * W + near[:, 1])
        flat = flat[~out["valid"].reshape(-1)[flat]]
        holes = torch.stack([flat // W, flat % W], 1)
    return type(corr)(**out) if copy else corr


def _route_compiled(
    out: dict[str, torch.Tensor],
    target: Camera,
    frames: Mapping[int, Any],
    pair_tol: float,
    passes: int,
) -> None:
    """:func:`route_cracks`' passes by the kernel, on the correspondence's tensors ``out``
    (contiguous clones, changed in place)."""
    names = ("rgb", "depth", "valid", "source_frame", "source_uv", "confidence", "observed")
    has_stretch = out.get("stretch") is not None
    st = out["stretch"] if has_stretch else torch.zeros(1, 1)
    corr = tuple(out[k].numpy() for k in names) + (st.numpy(),)
    ids = list(frames)
    fr = [frames[i] for i in ids]
    f_rgb = [np.ascontiguousarray(f.rgb.numpy()) for f in fr]
    f_depth = [np.ascontiguousarray(f.depth.float().numpy()) for f in fr]
    f_w2c = np.stack([f.camera.w2c.astype(np.float32) for f in fr])
    f_k = np.stack([_fxy(f.camera.K) for f in fr])
    a, b, dot = NEIGHBOUR_PAIRS
    pairs = (a.numpy(), b.numpy(), dot.numpy(), PAIR_EXP.numpy())
    with warnings.catch_warnings():
        # Lists of arrays (the frames, of any size) are "reflected" lists, which numba warns
        # about when it compiles them; the kernel only reads them.
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        ck.route_passes(
            corr,
            has_stretch,
            _fxy(target.K),
            target.c2w.astype(np.float32),
            np.array(ids, np.int64),
            f_rgb,
            f_depth,
            f_w2c,
            f_k,
            pairs,
            float(pair_tol),
            int(passes),
            np.float32(EXTRAPOLATED_STRETCH),
        )


def _fxy(K: np.ndarray) -> np.ndarray:
    """(4,) float32 ``fx, fy, cx, cy``, each rounded from float64 as torch rounds a Python float."""
    return np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.float64).astype(np.float32)


def route_crack_pass(
    corr: dict[str, torch.Tensor],
    holes: torch.Tensor,
    target: Camera,
    frames: Mapping[int, Any],
    pair_tol: float = 0.3,
    continued: torch.Tensor | None = None,
) -> torch.Tensor:
    """Route the cracks among ``holes`` (N, 2) long (y, x) in place; returns the (M, 2) routed.

    ``corr`` holds a :class:`models.memory.Correspondence`'s tensors by field name (changed in
    place: every read happens before any write, so a pass sees the state before it);
    ``frames`` maps frame ids to memory frames (``rgb`` (H, W, 3) uint8, ``depth`` (H, W),
    ``camera``); ``target`` is the correspondence's camera.

    A hole is visited when it is a crack (two exactly opposite routed 8-neighbours, as in
    :func:`crack_pixels`). Each is routed from one or two of its routed 8-neighbours:

    * **one surface**: with at least 5 routed neighbours (or two exactly opposite), the most
      opposite pair on one surface (depths within ``pair_tol``) nearest the neighbourhood's
      median depth. The hole gets the depth interpolated between the pair's (harmonically, at
      its position on the segment between them) and is sampled in the pair's first frame:
      unprojected, projected into that frame, accepted when that frame's depth at one of the
      2x2 pixels there agrees (within 10 %). Where it disagrees (a depth outlier or a flying
      pixel there) and both come from one frame, their source pixels at most ``UV_GAP`` apart,
      it is sampled between those. Confidence is the pair's lower, stretch its larger.
    * **a depth edge** (no such pair): the farthest routed neighbour, the layer a disocclusion
      uncovers. The hole is sampled at its depth as above.
    * Otherwise (that frame never saw it), on one surface only, the surface is continued:
      the median colour of the routed neighbours on it that were not continued themselves
      (``continued`` (H, W) bool, updated in place), the neighbour's depth and source pixel,
      half its confidence, stretch at least ``EXTRAPOLATED_STRETCH`` (seen, low detail), and not
      observed (it traces back to no real observation). A depth-edge crack no frame saw, or
      one with no such neighbour, stays a hole for the painter.
    """
    valid, depth = corr["valid"], corr["depth"]
    H, W = valid.shape
    if continued is None:
        continued = torch.zeros(H, W, dtype=torch.bool)
    y, x = holes[:, 0], holes[:, 1]
    ny, nx = y[:, None] + OFFSETS[:, 0], x[:, None] + OFFSETS[:, 1]  # (N, 8)
    inside = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    ny, nx = ny.clamp(0, H - 1), nx.clamp(0, W - 1)
    nv = valid[ny, nx] & inside
    crack = (nv & nv.flip(1)).any(1) & ~valid[y, x]  # offsets k and 7 - k are opposite
    y, x, ny, nx, nv = y[crack], x[crack], ny[crack], nx[crack], nv[crack]
    if y.numel() == 0:
        return holes[:0]
    count = nv.sum(1)
    nd = torch.where(nv, depth[ny, nx], math.inf)
    med = nd.sort(dim=1).values.gather(1, ((count - 1).clamp(min=0) // 2)[:, None])
    pa, pb, dot = NEIGHBOUR_PAIRS
    da, db = nd[:, pa], nd[:, pb]
    ok = nv[:, pa] & nv[:, pb]
    ok &= torch.maximum(da, db) <= torch.minimum(da, db) * (1 + pair_tol)
    score = PAIR_EXP[None] * (_ratio(da, med) * _ratio(db, med))
    score = torch.where(ok, score, math.inf)
    best = score.argmin(1)
    rows = torch.arange(len(y))
    same = torch.isfinite(score[rows, best]) & ((count >= 5) | (dot[best] < -0.99))
    # A depth edge: the farthest routed neighbour (both ends of the segment).
    far = torch.where(nv, depth[ny, nx], -1.0).argmax(1)
    i = torch.where(same, pa[best], far)
    j = torch.where(same, pb[best], far)
    on, om = OFFSETS[i].float(), OFFSETS[j].float()
    seg = om - on
    t = (-(on * seg).sum(1) / (seg * seg).sum(1).clamp(min=1)).clamp(0, 1)  # hole on n-m
    ya, xa = ny[rows, i], nx[rows, i]
    yb, xb = ny[rows, j], nx[rows, j]
    z = 1.0 / ((1 - t) / depth[ya, xa] + t / depth[yb, xb])
    fid = corr["source_frame"][ya, xa]
    # Unproject the holes into the world once, then sample them in their frames.
    Kt = target.K
    xyz_cam = torch.stack(
        [
            (x - float(Kt[0, 2])) / float(Kt[0, 0]) * z,
            (y - float(Kt[1, 2])) / float(Kt[1, 1]) * z,
            z,
        ],
        -1,
    )
    xyz_world = _rigid(target.c2w.astype(np.float32), xyz_cam)
    sampled, rgb, uv = _sample(xyz_world, fid, frames)
    # Between the pair's own source pixels, where the frame's depth disagreed.
    uva, uvb = corr["source_uv"][ya, xa], corr["source_uv"][yb, xb]
    gap = uva - uvb
    between = (
        ~sampled
        & same
        & (corr["source_frame"][yb, xb] == fid)
        & (gap[:, 0] * gap[:, 0] + gap[:, 1] * gap[:, 1] <= UV_GAP**2)
    )
    for frame_id in torch.unique(fid[between]).tolist():
        m = torch.nonzero(between & (fid == frame_id)).squeeze(1)
        uv[m] = uva[m] + t[m, None] * (uvb[m] - uva[m])
        rgb[m] = _bilinear(frames[int(frame_id)], uv[m, 0], uv[m, 1])
    routed = sampled | between
    # Never seen there, on one surface: continue it with the median colour of its routed
    # neighbours on that surface, none of them continued itself (a stray pixel neither spreads
    # nor chains from pass to pass). At a depth edge only an observation is routed: continuing
    # the far side spread dark rim pixels given the sky's depth into the sky as specks.
    za = depth[ya, xa]
    eligible = nv & ~continued[ny, nx]
    dn = depth[ny, nx]
    eligible &= torch.maximum(dn, za[:, None]) <= torch.minimum(dn, za[:, None]) * (1 + pair_tol)
    nrgb = torch.where(eligible[..., None], corr["rgb"][ny, nx], math.nan)
    cont = ~routed & same & eligible.any(1)
    keep = routed | cont
    rgb[cont], uv[cont], z[cont] = nrgb[cont].nanmedian(dim=1).values, uva[cont], za[cont]

    stretch = corr.get("stretch")
    conf = torch.minimum(corr["confidence"][ya, xa], corr["confidence"][yb, xb])
    observed = corr["observed"][ya, xa] & corr["observed"][yb, xb] & ~cont
    if stretch is not None:
        st = torch.maximum(stretch[ya, xa], stretch[yb, xb])
        st = torch.where(cont, st.clamp(min=EXTRAPOLATED_STRETCH), st)
    y, x, rgb, z, fid, uv, conf, observed, cont = (
        v[keep] for v in (y, x, rgb, z, fid, uv, conf, observed, cont)
    )
    out = corr
    if stretch is not None:
        stretch[y, x] = st[keep]
    out["rgb"][y, x] = rgb
    out["depth"][y, x] = z
    out["source_frame"][y, x] = fid
    out["source_uv"][y, x] = uv
    out["confidence"][y, x] = torch.where(cont, 0.5 * conf, conf)
    out["observed"][y, x] = observed
    out["valid"][y, x] = True
    continued[y, x] = cont
    return torch.stack([y, x], 1)


def warm_up_cracks(K: np.ndarray, rgb: torch.Tensor, depth: torch.Tensor) -> None:
    """Compile (or load) the kernel by routing one crack of a tiny correspondence (every field
    typed as the memory's) seen from a frame ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) with
    intrinsics ``K`` (:func:`models.geometry.warp.warm_up` calls it)."""
    H, W = depth.shape
    cam = Camera(K, np.eye(4), W, H)
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[H // 2, W // 2] = False
    u, v = torch.meshgrid(torch.arange(W) * 1.0, torch.arange(H) * 1.0, indexing="xy")
    corr = SimpleNamespace(
        rgb=torch.zeros(H, W, 3),
        depth=torch.where(valid, depth, 0.0),
        valid=valid,
        source_frame=torch.where(valid, 0, -1),
        source_uv=torch.stack([u, v], -1),
        confidence=torch.ones(H, W),
        observed=torch.ones(H, W, dtype=torch.bool),
        stretch=torch.ones(H, W),
    )
    route_cracks(corr, cam, {0: SimpleNamespace(rgb=rgb, depth=depth, camera=cam)}, copy=False)
