"""Compositing the warps of several memory frames into one target view (the correspondence).

Per pixel, a frame's claim has a quality ``q = confidence * exp(-|log stretch| / 2)``
(resampling and magnification both lose detail). A nearer surface occludes unless it is a far
weaker guess (``2 q < q_best``), only the depth-edge rim of a weaker frame (a footprint spilling
over a better observation), or a weaker frame's claim against a frame that would have seen it
(its parallax at that depth under half a pixel: seen from about the target's centre, nothing
nearer was there). On the same surface the better pixel wins (by 5 %: near-ties keep the earlier
frame, so regions stay coherent).

:class:`Composite` holds the running result; :meth:`Composite.add` folds one warp in, either with
the compiled kernel :func:`composite_kernel` (one pass over the pixels, in place) or with the
torch reference :meth:`Composite._add_torch` (whole-image ``where`` s, the obvious form), which
the tests compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit

_f32 = np.float32


@njit(cache=True)
def composite_kernel(state, w_rgb, w_depth, w_valid, w_uv, w_stretch, w_edge, frame, prm, fid):
    """Fold one warp into the composite, in place.

    ``state`` = (rgb (H, W, 3), depth, src int64, uv (H, W, 2), quality, conf, observed bool,
    stretch, rim bool, base_px); the warp's arrays as in ``WarpResult`` (``w_rgb`` is updated
    where earlier paint is copied instead of resampled); ``frame`` = (rgb uint8 (Hs, Ws, 3),
    confidence (Hs, Ws) float32, observed (Hs, Ws) bool); ``prm`` float32 (depth_tol,
    baseline * f_t, paint_nearest_stretch, 1 - depth_tol).
    """
    rgb, depth, src, uv, quality, conf, observed, stretch, rim, base_px = state
    f_rgb, f_conf, f_obs = frame
    tol, bf, nearest, lo = prm[0], prm[1], prm[2], prm[3]
    H, W = w_depth.shape
    Hs, Ws = f_conf.shape
    hi, half_ = _f32(1.05), _f32(0.5)
    for y in range(H):
        for x in range(W):
            if not w_valid[y, x]:
                continue
            ui = min(max(int(np.rint(w_uv[y, x, 0])), 0), Ws - 1)
            vi = min(max(int(np.rint(w_uv[y, x, 1])), 0), Hs - 1)
            c = f_conf[vi, ui]
            s_ = max(w_stretch[y, x], _f32(1e-6))
            q = c * np.sqrt(min(s_, _f32(1.0) / s_))
            obs = f_obs[vi, ui]
            wd, d, qb = w_depth[y, x], depth[y, x], quality[y, x]
            if d > 0:
                nearer = wd < d * lo
                same = abs(wd - d) <= tol * d
                weaker = q < qb
                holder_saw = base_px[y, x] < half_ * wd
                occludes = nearer and q * 2 >= qb and not ((w_edge[y, x] or holder_saw) and weaker)
                saw_holder = bf < half_ * d
                better = q > 2 * qb or ((rim[y, x] or saw_holder) and q > qb)
                uncovers = not nearer and not same and better
                if not (occludes or (same and q > hi * qb) or uncovers):
                    continue
            if not obs and w_stretch[y, x] <= nearest:
                # Earlier paint is copied from the nearest source pixel, not resampled (a
                # bilinear resample at every hop blurs it into a wash).
                for ch in range(3):
                    w_rgb[y, x, ch] = _f32(f_rgb[vi, ui, ch]) / _f32(255.0)
            for ch in range(3):
                rgb[y, x, ch] = w_rgb[y, x, ch]
            depth[y, x] = wd
            src[y, x] = fid
            uv[y, x, 0], uv[y, x, 1] = w_uv[y, x, 0], w_uv[y, x, 1]
            quality[y, x] = q
            conf[y, x] = c
            observed[y, x] = obs
            stretch[y, x] = w_stretch[y, x]
            rim[y, x] = w_edge[y, x]
            base_px[y, x] = bf


class Composite:
    """The running composite of a target view (H, W): call :meth:`add` per warped frame, in
    retrieval order, then read the tensors (``rgb`` (H, W, 3) float32, ``depth``, ``src``
    int64 frame id or -1, ``uv`` (H, W, 2), ``conf``, ``observed`` bool, ``stretch``).

    ``reference``: use the torch form (the slow, obvious twin) instead of the kernel.
    """

    def __init__(
        self,
        width: int,
        height: int,
        f_t: float,
        depth_tol: float = 0.03,
        paint_nearest_stretch: float = 1.25,
        reference: bool = False,
    ) -> None:
        H, W = height, width
        self.rgb = torch.zeros(H, W, 3)
        self.depth = torch.zeros(H, W)
        self.src = torch.full((H, W), -1, dtype=torch.long)
        self.uv = torch.full((H, W, 2), -1.0)
        self.quality = torch.full((H, W), -1.0)
        self.conf = torch.zeros(H, W)
        self.observed = torch.zeros(H, W, dtype=torch.bool)
        self.stretch = torch.zeros(H, W)
        # Whether the current pixel is a source depth edge (a rim a footprint may have spilled
        # over), and its frame's baseline to the target times the focal length (parallax * z).
        self.rim = torch.zeros(H, W, dtype=torch.bool)
        self.base_px = torch.zeros(H, W)
        self.f_t, self.tol, self.nearest = f_t, depth_tol, paint_nearest_stretch
        self.reference = reference

    def add(self, fid: int, w: Any, frame: Any) -> None:
        """Fold in warp ``w`` (a ``WarpResult``) of memory frame ``frame`` (``rgb`` uint8,
        ``confidence``, ``observed``) whose id is ``fid``."""
        if self.reference:
            self._add_torch(fid, w, frame)
            return
        state = (
            self.rgb.numpy(),
            self.depth.numpy(),
            self.src.numpy(),
            self.uv.numpy(),
            self.quality.numpy(),
            self.conf.numpy(),
            self.observed.numpy(),
            self.stretch.numpy(),
            self.rim.numpy(),
            self.base_px.numpy(),
        )
        prm = np.array([self.tol, w.baseline * self.f_t, self.nearest, 1 - self.tol], np.float32)
        f = (frame.rgb.numpy(), frame.confidence.float().numpy(), frame.observed.numpy())
        warp = (w.rgb, w.depth, w.valid, w.src_uv, w.stretch, w.edge)
        composite_kernel(state, *(a.contiguous().numpy() for a in warp), f, prm, fid)

    def _add_torch(self, fid: int, w: Any, frame: Any) -> None:
        """The torch reference of :func:`composite_kernel` (whole-image operations)."""
        Hs, Ws = frame.depth.shape
        ui = w.src_uv[..., 0].round().long().clamp(0, Ws - 1)
        vi = w.src_uv[..., 1].round().long().clamp(0, Hs - 1)
        flat = vi * Ws + ui
        c = frame.confidence.reshape(-1)[flat].float()
        s_ = w.stretch.clamp(min=1e-6)
        q = c * torch.minimum(s_, 1.0 / s_).sqrt()  # = c exp(-|log stretch| / 2)
        obs = frame.observed.reshape(-1)[flat]
        hop = w.valid & ~obs & (w.stretch <= self.nearest)
        w_rgb = w.rgb.clone()
        if bool(hop.any()):
            w_rgb[hop] = frame.rgb.reshape(-1, 3)[flat[hop]].float() / 255.0
        tol, depth, quality = self.tol, self.depth, self.quality
        have = depth > 0
        nearer = w.depth < depth * (1 - tol)
        same = (w.depth - depth).abs() <= tol * depth
        weaker = q < quality
        # Would the holder's frame have seen this nearer surface (parallax < 0.5 px)?
        holder_saw = self.base_px < 0.5 * w.depth
        occludes = nearer & (q * 2 >= quality) & ~((w.edge | holder_saw) & weaker)
        saw_holder = w.baseline * self.f_t < 0.5 * depth  # ... and this frame the holder's?
        uncovers = ~nearer & ~same & ((q > 2 * quality) | ((self.rim | saw_holder) & (q > quality)))
        # On one surface a pixel must be 5 % better to switch frames: near-ties keep the
        # earlier (retrieval order) frame, so routed regions stay coherent per frame.
        take = w.valid & (~have | occludes | (same & (q > 1.05 * quality)) | uncovers)
        self.rgb = torch.where(take[..., None], w_rgb, self.rgb)
        self.depth = torch.where(take, w.depth, depth)
        self.src = torch.where(take, fid, self.src)
        self.uv = torch.where(take[..., None], w.src_uv, self.uv)
        self.quality = torch.where(take, q, quality)
        self.conf = torch.where(take, c, self.conf)
        self.observed = torch.where(take, obs, self.observed)
        self.stretch = torch.where(take, w.stretch, self.stretch)
        self.rim = torch.where(take, w.edge, self.rim)
        self.base_px = torch.where(take, w.baseline * self.f_t, self.base_px)
