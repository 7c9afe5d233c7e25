"""Routing the small holes inside a routed surface (the correspondence's last step).

After the retrieved frames are warped and composited, one-pixel holes remain inside routed
surfaces: a pixel every warp dropped (a depth edge, a failed depth check) between pixels that
were routed. Left to the painter, such holes became the dotted contours of the street walks;
:func:`route_cracks` routes them, with the same backward sampling as the warp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from models.geometry.cameras import Camera, transform_points

__all__ = ["NEIGHBOUR_PAIRS", "route_cracks"]


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


def route_cracks(
    corr: Any,
    target: Camera,
    frames: Mapping[int, Any],
    pair_tol: float = 0.3,
    near: torch.Tensor | None = None,
) -> Any:
    """A :class:`models.memory.Correspondence` with small holes inside routed surfaces routed.

    ``frames`` maps frame ids to memory frames (``rgb`` (H, W, 3) uint8, ``depth`` (H, W),
    ``camera``); ``target`` is the correspondence's camera. ``near`` (H, W) bool, when given,
    limits the holes visited (a second pass only looks next to what the first one filled).

    A hole with at least 5 routed 8-neighbours (or two opposite ones) lies between a pair of
    them on one surface (depths within ``pair_tol``): the most opposite pair nearest the
    neighbourhood's median depth, i.e. the surface most of the neighbourhood shows. The
    hole gets the depth interpolated between the pair's (harmonically, at its position on
    the segment between them) and is sampled, like any warped pixel, in the pair's first
    frame: unprojected, projected into that frame, accepted when that frame's depth at one of
    the 2x2 pixels there agrees (within 10 %). Confidence is the pair's lower, stretch its
    larger.
    """
    valid = corr.valid
    if bool(valid.all()) or not bool(valid.any()):
        return corr
    H, W = valid.shape
    # Candidates first, densely: holes between two routed opposite neighbours (the inside
    # of a large painted region has none, and is never visited).
    vp = torch.nn.functional.pad(valid, (1, 1, 1, 1))
    opposite = (vp[1:-1, :-2] & vp[1:-1, 2:]) | (vp[:-2, 1:-1] & vp[2:, 1:-1])
    opposite |= (vp[:-2, :-2] & vp[2:, 2:]) | (vp[:-2, 2:] & vp[2:, :-2])
    cand = ~valid & opposite
    if near is not None:
        cand &= near
    holes = torch.nonzero(cand)  # (5 of 8 routed neighbours hold a pair)
    if holes.numel() == 0:
        return corr
    y, x = holes[:, 0], holes[:, 1]
    offs = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
    ny, nx = y[:, None] + offs[:, 0], x[:, None] + offs[:, 1]  # (N, 8)
    inside = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    ny, nx = ny.clamp(0, H - 1), nx.clamp(0, W - 1)
    nv = valid[ny, nx] & inside
    count = nv.sum(1)
    nd = torch.where(nv, corr.depth[ny, nx], math.inf)
    med = nd.sort(dim=1).values.gather(1, ((count - 1).clamp(min=0) // 2)[:, None])
    pa, pb, dot = NEIGHBOUR_PAIRS
    da, db = nd[:, pa], nd[:, pb]
    ok = nv[:, pa] & nv[:, pb]
    ok &= torch.maximum(da, db) <= torch.minimum(da, db) * (1 + pair_tol)
    score = dot[None] + (torch.log(da / med).abs() + torch.log(db / med).abs())
    score = torch.where(ok, score, math.inf)
    best = score.argmin(1)
    rows = torch.arange(len(y))
    good = torch.isfinite(score[rows, best]) & ((count >= 5) | (dot[best] < -0.99))
    if not bool(good.any()):
        return corr
    y, x, best = y[good], x[good], best[good]
    rows = torch.arange(len(y))
    i, j = pa[best], pb[best]
    on, om = offs[i].float(), offs[j].float()
    seg = om - on
    t = (-(on * seg).sum(1) / (seg * seg).sum(1)).clamp(0, 1)  # the hole on segment n-m
    ya, xa = ny[good][rows, i], nx[good][rows, i]
    yb, xb = ny[good][rows, j], nx[good][rows, j]
    z = 1.0 / ((1 - t) / corr.depth[ya, xa] + t / corr.depth[yb, xb])
    fid = corr.source_frame[ya, xa]
    # Unproject the holes into the world once, then project into each source frame.
    Kt = target.K
    xyz_cam = torch.stack(
        [
            (x - float(Kt[0, 2])) / float(Kt[0, 0]) * z,
            (y - float(Kt[1, 2])) / float(Kt[1, 1]) * z,
            z,
        ],
        -1,
    )
    xyz_world = transform_points(torch.from_numpy(target.c2w.astype(np.float32)), xyz_cam)
    out = {k: v.clone() for k, v in vars(corr).items() if isinstance(v, torch.Tensor)}
    filled = torch.zeros(len(y), dtype=torch.bool)
    for frame_id in torch.unique(fid).tolist():
        m = torch.nonzero(fid == frame_id).squeeze(1)
        fr = frames[int(frame_id)]
        Hs, Ws = fr.depth.shape
        p = transform_points(torch.from_numpy(fr.camera.w2c.astype(np.float32)), xyz_world[m])
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
        if m.numel() == 0:
            continue
        grid = torch.stack([u * (2.0 / max(Ws - 1, 1)) - 1, v * (2.0 / max(Hs - 1, 1)) - 1], -1)
        img = fr.rgb.permute(2, 0, 1)[None].float() / 255.0
        col = torch.nn.functional.grid_sample(img, grid[None, None], align_corners=True)[0, :, 0].T
        out["rgb"][y[m], x[m]] = col
        out["source_frame"][y[m], x[m]] = int(frame_id)
        out["source_uv"][y[m], x[m]] = torch.stack([u, v], -1)
        filled[m] = True
    y, x, ya, xa, yb, xb, z = (a[filled] for a in (y, x, ya, xa, yb, xb, z))
    out["depth"][y, x] = z
    out["confidence"][y, x] = torch.minimum(corr.confidence[ya, xa], corr.confidence[yb, xb])
    out["observed"][y, x] = corr.observed[ya, xa] & corr.observed[yb, xb]
    if corr.stretch is not None:
        out["stretch"][y, x] = torch.maximum(corr.stretch[ya, xa], corr.stretch[yb, xb])
    out["valid"] = out["depth"] > 0
    return type(corr)(**out)
