"""Fusing per-frame, pixel-aligned Gaussians into one set that reproduces every frame.

A world's frames overlap: later frames re-see what memory holds. Three rules decide which
Gaussians survive, each with a slow, obvious twin for the tests:

* **Keep the sharpest observation** (:func:`keep_sharpest`): space is cut into voxels; in each
  voxel only the Gaussians of the frame that saw it with the smallest footprint (the most
  detail per metre) are kept, all of them, unaveraged. Averaging the members of a voxel (what
  the lift did before) blurs every surface seen twice and mixes colours across edges.
* **Duplicates** (:func:`duplicates`): a Gaussian whose surface point another frame saw
  better is dropped (a second copy blurs or ghosts it). Voxels catch duplicates only when they
  fall in the same cell; reprojection catches them wherever the frames' depths agree.
* **Backdrop** (:func:`backdrop_keep`): sky and far backdrop pixels are not dropped (a render
  would show a black hole) but kept as a shell, deduplicated by viewing direction (the first
  frame that saw a direction keeps it: the photo first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "View",
    "backdrop_keep",
    "consensus_colors",
    "duplicates",
    "duplicates_reference",
    "keep_sharpest",
    "keep_sharpest_reference",
    "see_through",
    "see_through_reference",
]


def keep_sharpest(
    means: np.ndarray,
    footprint: np.ndarray,
    frame: np.ndarray,
    voxel: float,
    observed: np.ndarray | None = None,
) -> np.ndarray:
    """(N,) bool: the Gaussians to keep. In each voxel of size ``voxel`` (metres), the frame of
    its best member wins and keeps all its members (best as in ``_rank_key``: an observed
    pixel, traced to the photo, before a painted one; observed, the earlier frame, the least
    resampled; painted, the smaller footprint).

    means (N, 3) world; footprint (N,) metres; frame (N,) int frame of each Gaussian;
    observed (N,) bool (None: all observed).
    """
    if len(means) == 0:
        return np.zeros(0, bool)
    painted = np.zeros(len(means), bool) if observed is None else ~np.asarray(observed, bool)
    keys = np.floor(np.asarray(means, np.float64) / voxel).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rank = _rank_key(
        torch.from_numpy(painted),
        torch.from_numpy(np.asarray(footprint)),
        torch.from_numpy(np.asarray(frame)),
    )
    order = np.lexsort((rank.numpy(), inverse))  # by voxel, then rank
    first = np.ones(len(order), bool)
    first[1:] = inverse[order][1:] != inverse[order][:-1]
    winner = np.empty(inverse.max() + 1, np.int64)
    winner[inverse[order][first]] = frame[order][first]
    return frame == winner[inverse]


def keep_sharpest_reference(
    means: np.ndarray,
    footprint: np.ndarray,
    frame: np.ndarray,
    voxel: float,
    observed: np.ndarray | None = None,
) -> np.ndarray:
    """Slow twin of :func:`keep_sharpest`: a dict of voxels, one Gaussian at a time."""
    obs = np.ones(len(means), bool) if observed is None else observed
    best: dict[tuple[int, ...], tuple[tuple, int]] = {}
    keys = [tuple(int(k) for k in np.floor(np.asarray(m, np.float64) / voxel)) for m in means]
    for key, fp, fr, ob in zip(keys, footprint, frame, obs, strict=True):
        cand = (_rank_tuple(not bool(ob), float(fp), int(fr)), int(fr))
        if key not in best or cand < best[key]:
            best[key] = cand
    return np.array([int(fr) == best[key][1] for key, fr in zip(keys, frame, strict=True)])


@dataclass
class View:
    """One frame as the fusion sees it: depth (H, W) metres (0 = none), K (3, 3), c2w (4, 4),
    painted (H, W) bool (True where the frame's pixel was painted, not traced to the photo),
    rgb (H, W, 3) uint8 the frame's colours (for :func:`consensus_colors`)."""

    depth: np.ndarray
    K: np.ndarray
    c2w: np.ndarray
    painted: np.ndarray | None = None
    rgb: np.ndarray | None = None


def _rank_key(painted: torch.Tensor, footprint: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """One sortable number per observation (smaller is better): observed before painted; an
    observed pixel of an earlier frame first (every later copy of the photo's pixels is
    resampled, hence blurrier, however close the camera came); a painted pixel with the
    smaller footprint first (painted closer, painted finer), ties to the earlier frame."""
    fp = footprint.double().clamp(max=1e5)
    fr = frame.double()
    observed_key = fr * 1e6 + fp
    painted_key = 1e15 + fp * 1e6 + fr
    return torch.where(painted, painted_key, observed_key)


def duplicates(
    means: np.ndarray,
    footprint: np.ndarray,
    frame: np.ndarray,
    painted: np.ndarray,
    views: list[View],
    tol: float = 0.05,
) -> np.ndarray:
    """(N,) int: how many other frames saw each Gaussian's surface point better.

    A Gaussian from frame j projects into frame i at depth z; it is a *duplicate* when i saw
    the same surface there (depth within ``tol``) with a better observation (``_rank_key``:
    observed before painted; observed, the earlier frame; painted, the finer footprint): i's
    own Gaussian keeps the point. means (N, 3) world, footprint (N,) metres, frame (N,),
    painted (N,) bool.

    (Dropping Gaussians that lie in front of what another frame saw, a free-space test, was
    measured too: it cleared a few ghosts from the photo's view but opened holes in every
    other view; median PSNR fell 0.5-2 dB on three worlds, so the lift does not use it.)
    """
    pts = torch.from_numpy(np.asarray(means, np.float64))
    frame_t = torch.from_numpy(np.asarray(frame, np.int64))
    mine = _rank_key(
        torch.from_numpy(np.asarray(painted, bool)), torch.from_numpy(footprint), frame_t
    )
    dup = torch.zeros(len(pts), dtype=torch.int64)
    for i, view in enumerate(views):
        K = np.asarray(view.K, np.float64)
        z, uu, vv, inside, di = _lookup(pts, view)
        inside &= frame_t != i
        # The observation frame i had at that pixel: footprint = ray length / focal length.
        ray = torch.sqrt(((uu - K[0, 2]) / K[0, 0]) ** 2 + ((vv - K[1, 2]) / K[1, 1]) ** 2 + 1)
        fp_i = di * ray / math.sqrt(K[0, 0] * K[1, 1])
        p_i = torch.zeros_like(inside)
        if view.painted is not None:
            p_i = torch.from_numpy(np.asarray(view.painted, bool))[vv, uu]
        better = _rank_key(p_i, fp_i, torch.full_like(frame_t, i)) < mine
        dup += (inside & (di > 0) & ((di - z).abs() <= tol * z) & better).long()
    return dup.numpy()


def _lookup(pts: torch.Tensor, view: View) -> tuple[torch.Tensor, ...]:
    """Points (N, 3) float64 world seen by ``view``: camera z (N,), nearest pixel u, v (N,)
    (clamped), inside (N,) bool (in front and on the image), and the view's depth there (N,)."""
    d = torch.from_numpy(np.asarray(view.depth, np.float64))
    H, W = d.shape
    K = np.asarray(view.K, np.float64)
    w2c = torch.from_numpy(np.linalg.inv(np.asarray(view.c2w, np.float64)))
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    zs = z.clamp(min=1e-9)
    u = torch.round(cam[:, 0] / zs * K[0, 0] + K[0, 2]).long()
    v = torch.round(cam[:, 1] / zs * K[1, 1] + K[1, 2]).long()
    inside = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    uu, vv = u.clamp(0, W - 1), v.clamp(0, H - 1)
    return z, uu, vv, inside, d[vv, uu]


def see_through(
    means: np.ndarray, frame: np.ndarray, views: list[View], tol: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) int pairs: how many frames see each Gaussian's surface point (``confirm``: their
    depth there agrees within ``tol``, its own frame included) and how many see *through* it
    (``through``: their depth there is farther by more than ``tol``: free space where the
    Gaussian stands). means (N, 3) world, frame (N,) int.

    A world's frames need not agree: a later frame may paint sky between leaves that the photo
    saw as foliage (the router never moves outline pixels across parallax). A Gaussian that more
    frames see through than see is a ghost in most of the world's views; the lift drops it
    (a majority vote: dropping on any single disagreement opened holes, see :func:`duplicates`).
    """
    pts = torch.from_numpy(np.asarray(means, np.float64))
    frame_t = torch.from_numpy(np.asarray(frame, np.int64))
    confirm = torch.zeros(len(pts), dtype=torch.int64)
    through = torch.zeros(len(pts), dtype=torch.int64)
    for i, view in enumerate(views):
        z, _, _, inside, di = _lookup(pts, view)
        own = frame_t == i
        inside &= di > 0
        confirm += (own | (inside & ((di - z).abs() <= tol * z))).long()
        through += (~own & inside & (di > z * (1 + tol))).long()
    return confirm.numpy(), through.numpy()


def consensus_colors(
    means: np.ndarray,
    frame: np.ndarray,
    rgb: np.ndarray | None,
    views: list[View],
    far: float | None = None,
    tol: float = 0.05,
    own_weight: float = 1.0,
) -> np.ndarray:
    """(N, 3) float32 colours in [0, 1]: each Gaussian's colour averaged over every frame that
    sees its surface point (its own frame with weight ``own_weight``, its colour ``rgb`` (N, 3)
    in [0, 1]; another frame when its depth at the point agrees within ``tol``, or when both lie
    at the backdrop, ``far`` or beyond).

    Why: the world's frames disagree where they were painted (each frame paints its own strip
    of sky beside a pole, or its own clouds). One view-independent colour cannot match them all;
    the mean over the frames that see the point is the one that minimises the squared error
    over them (the PSNR of ``loci eval lift``), where keeping one frame's colour is exact in
    that frame and wrong in the others. Nearest-pixel look-ups: routed frames resample the
    photo, so the average of a surface seen everywhere stays close to the photo's pixel.
    """
    pts = torch.from_numpy(np.asarray(means, np.float64))
    frame_t = torch.from_numpy(np.asarray(frame, np.int64))
    if rgb is None:  # every frame looked up alike, its own included
        acc = torch.zeros(len(pts), 3, dtype=torch.float64)
        wsum = torch.zeros(len(pts), dtype=torch.float64)
    else:
        acc = torch.from_numpy(np.asarray(rgb, np.float64)) * own_weight
        wsum = torch.full((len(pts),), float(own_weight), dtype=torch.float64)
    for i, view in enumerate(views):
        if view.rgb is None:
            continue
        z, uu, vv, inside, di = _lookup(pts, view)
        agree = (di - z).abs() <= tol * z
        if far is not None:
            agree |= (z >= far) & (di >= far)
        use = inside & (di > 0) & agree
        if rgb is not None:
            use &= frame_t != i
        img = torch.from_numpy(np.asarray(view.rgb)).to(torch.float64)
        col = img[vv, uu] / (255.0 if view.rgb.dtype == np.uint8 else 1.0)
        acc += col * use[:, None]
        wsum += use
    return (acc / wsum.clamp(min=1e-12)[:, None]).numpy().astype(np.float32)


def see_through_reference(
    means: np.ndarray, frame: np.ndarray, views: list[View], tol: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Slow twin of :func:`see_through`: one Gaussian and one frame at a time."""
    confirm = np.zeros(len(means), np.int64)
    through = np.zeros(len(means), np.int64)
    for n, (p, fr) in enumerate(zip(means, frame, strict=True)):
        for i, view in enumerate(views):
            if i == fr:
                confirm[n] += 1
                continue
            hit = _lookup_reference(p, view)
            if hit is None or view.depth[hit[2], hit[1]] <= 0:
                continue
            z, u, v = hit
            di = view.depth[v, u]
            confirm[n] += abs(di - z) <= tol * z
            through[n] += di > z * (1 + tol)
    return confirm, through


def _lookup_reference(p: np.ndarray, view: View) -> tuple[float, int, int] | None:
    """One point (3,) seen by ``view``, for the slow twins: camera z and the nearest pixel
    (u, v), or None when it is behind the camera or off the image."""
    q = np.linalg.inv(view.c2w) @ np.r_[np.asarray(p, np.float64), 1.0]
    if q[2] <= 1e-6:
        return None
    u = round(q[0] / q[2] * view.K[0, 0] + view.K[0, 2])
    v = round(q[1] / q[2] * view.K[1, 1] + view.K[1, 2])
    H, W = view.depth.shape
    return (float(q[2]), u, v) if 0 <= u < W and 0 <= v < H else None


def _rank_tuple(painted: bool, footprint: float, frame: int) -> tuple:
    """The order of :func:`_rank_key`, written as a tuple (for the slow twins)."""
    return (1, footprint, frame) if painted else (0, frame, footprint)


def duplicates_reference(
    means: np.ndarray,
    footprint: np.ndarray,
    frame: np.ndarray,
    painted: np.ndarray,
    views: list[View],
    tol: float = 0.05,
) -> np.ndarray:
    """Slow twin of :func:`duplicates`: one Gaussian and one frame at a time."""
    dup = np.zeros(len(means), np.int64)
    for n, (p, fr) in enumerate(zip(means, frame, strict=True)):
        mine = _rank_tuple(bool(painted[n]), float(footprint[n]), int(fr))
        for i, view in enumerate(views):
            if i == fr:
                continue
            hit = _lookup_reference(p, view)
            if hit is None:
                continue
            z, u, v = hit
            K = view.K
            di = view.depth[v, u]
            ray = math.sqrt(((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2 + 1)
            pi = False if view.painted is None else bool(view.painted[v, u])
            better = _rank_tuple(pi, di * ray / math.sqrt(K[0, 0] * K[1, 1]), i) < mine
            if better and di > 0 and abs(di - z) <= tol * z:
                dup[n] += 1
    return dup


def backdrop_keep(directions: np.ndarray, angle: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(N,) bool: one backdrop Gaussian per direction cell, from the earliest frame.

    directions (N, 3) unit world directions from the world origin; angle (N,) the angular
    footprint (radians) of each; cells are twice the median footprint wide.
    """
    if len(directions) == 0:
        return np.zeros(0, bool)
    step = 2.0 * float(np.median(angle))
    keys = np.floor(np.asarray(directions, np.float64) / max(step, 1e-9)).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.lexsort((np.arange(len(frame)), frame, inverse))
    first = np.ones(len(order), bool)
    first[1:] = inverse[order][1:] != inverse[order][:-1]
    winner = np.empty(inverse.max() + 1, np.int64)
    winner[inverse[order][first]] = frame[order][first]
    return frame == winner[inverse]
