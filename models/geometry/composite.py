"""Compositing the warps of several memory frames into one target view (the correspondence).

Per pixel, a frame's claim has a quality ``q = confidence * exp(-|log stretch| / 2) * r``
(resampling and magnification both lose detail; ``r`` in (0, 1], how well the frame's geometry
places the pixel here: :mod:`models.geometry.reliability`; a pixel whose claim has ``r`` below a
floor is handed to the painter, :meth:`Composite.drop_unreliable`). A nearer surface occludes unless
it is a far weaker guess (``2 q < q_best``), only the depth-edge rim of a weaker frame (a footprint
spilling over a better observation), or a weaker frame's claim against a frame that would have seen
it (its parallax at that depth under half a pixel: seen from about the target's centre, nothing
nearer was there). On the same surface the better pixel wins (by 5 %: near-ties keep the earlier
frame, so regions stay coherent).

After the last frame, :meth:`Composite.cohere` makes the choice coherent over small windows
(no pixel-by-pixel flipping between frames or between layers: visible speckle).

:class:`Composite` holds the running result; :meth:`Composite.add` folds one warp in, either with
the compiled kernel :func:`composite_kernel` (one pass over the pixels, in place) or with the
torch reference :meth:`Composite._add_torch` (whole-image ``where`` s, the obvious form), which
the tests compare.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import cv2
import numpy as np
import torch
from numba import njit

_f32 = np.float32
COHERE_RADIUS = 2  # 5x5 votes: wider than Kinect depth-noise speckle, narrower than objects
COHERE_PASSES = 2
# A layer switch (a pixel taking a claim on another surface) needs the current claim to be a
# speck (support <= COHERE_SPECK of the 25 window pixels: a straight one-pixel line has 5, so it
# stays) and the other one well supported. Tuned on TUM fr3 frames 1..8.
COHERE_SPECK = 4
COHERE_SUPPORT = 10
# Row bands of the coherence pass given to a thread pool (more than threads: the pixels to
# decide cluster at frame boundaries, so equal bands carry unequal work).
COHERE_BANDS = 4


@njit(cache=True, nogil=True)
def composite_kernel(
    state, w_rgb, w_depth, w_valid, w_uv, w_stretch, w_edge, w_rel, frame, prm, fid, claim
):
    """Fold one warp into the composite, in place.

    ``state`` = (rgb (H, W, 3), depth, src int64, uv (H, W, 2), quality, conf, observed bool,
    stretch, rim bool, base_px); the warp's arrays as in ``WarpResult`` (``w_rgb`` is updated
    where earlier paint is copied instead of resampled); ``w_rel`` (H, W) float32 the claim's
    geometric reliability (:mod:`models.geometry.reliability`: a factor of its quality);
    ``frame`` = (rgb uint8 (Hs, Ws, 3),
    confidence (Hs, Ws) float32, observed (Hs, Ws) bool); ``prm`` float32 (depth_tol,
    baseline * f_t, paint_nearest_stretch, 1 - depth_tol); ``claim`` = (conf, observed) (H, W)
    outputs: this warp's claim at every valid pixel (``w_rgb`` holds its colour), kept
    for the coherence pass.
    """
    c_c, c_obs = claim
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
            q = c * np.sqrt(min(s_, _f32(1.0) / s_)) * w_rel[y, x]
            obs = f_obs[vi, ui]
            if not obs and w_stretch[y, x] <= nearest:
                # Earlier paint is copied from the nearest source pixel, not resampled (a
                # bilinear resample at every hop blurs it into a wash).
                for ch in range(3):
                    w_rgb[y, x, ch] = _f32(f_rgb[vi, ui, ch]) / _f32(255.0)
            c_c[y, x], c_obs[y, x] = c, obs
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


@njit(cache=True, nogil=True)
def cohere_kernel(out, cand, fids, k_in, prm, active, pick, rows):
    """Decide one pass of coherent source selection over rows ``rows`` = (y0, y1).

    ``out`` = (depth (H, W), src int64, base_px): the composite, read only (this pass's votes);
    ``cand`` = (valid, depth): every retrieved frame's claim, stacked (F, H, W) in the order of
    ``fids`` (F,) int64; ``k_in`` (H, W) int16 the source's index into ``fids`` (-1: none).
    ``prm`` float32 (depth_tol, radius, speck, support). ``active`` (H, W) bool: the pixels to
    decide (the others keep their claim); ``pick`` (H, W) int16, output: the index into
    ``fids`` of the claim a pixel switches to (untouched where it keeps its own), applied by
    :func:`cohere_apply` once the pass is decided. Nothing is written but ``pick``'s own rows:
    row bands may run in parallel threads, the result is the same whatever the scheduling.

    A claim's *support* is the number of pixels in the window (itself included) that the
    composite took from the same frame at the claim's depth (within ``depth_tol``). A pixel
    takes the best-supported claim if it beats the current one's support and is on the same
    surface, or, on another surface (a layer switch), only if the current claim is a speck
    (support <= ``speck``) and the other is well supported (>= ``support``): thin structures
    (a one-pixel line has support 2 r + 1) stay. First frame on a tie. A pixel whose frame saw
    it along the target's rays (parallax under half a pixel) is exact and keeps its claim.
    """
    depth_in, src_in, base_px = out
    k_valid, k_depth = cand
    tol, r, speck, need = prm[0], int(prm[1]), prm[2], prm[3]
    half_ = _f32(0.5)
    F = fids.shape[0]
    H, W = src_in.shape
    score = np.zeros(F, np.int64)
    cds = np.zeros(F, np.float32)
    lim = np.zeros(F, np.float32)  # a neighbour's depth within lim[k] of claim k's: support
    for y in range(rows[0], rows[1]):
        for x in range(W):
            cur = k_in[y, x]
            if cur < 0 or not active[y, x]:
                continue
            d = depth_in[y, x]
            if base_px[y, x] < half_ * d:
                # its frame saw along the target's rays (parallax < 0.5 px): exact, no speckle
                # to fix (a pure rotation back to a frame returns it exactly)
                continue
            for k in range(F):
                ok = k_valid[k, y, x]
                score[k] = 0 if ok else -1
                cds[k] = k_depth[k, y, x]
                # an invalid claim gets no support (no |difference| is <= -1): score stays -1
                lim[k] = tol * cds[k] if ok else _f32(-1.0)
            for yy in range(max(y - r, 0), min(y + r + 1, H)):
                for xx in range(max(x - r, 0), min(x + r + 1, W)):
                    k = k_in[yy, xx]
                    if k >= 0 and abs(depth_in[yy, xx] - cds[k]) <= lim[k]:
                        score[k] += 1
            best = -1
            for k in range(F):
                if k == cur or score[k] <= score[cur]:
                    continue
                if abs(k_depth[k, y, x] - d) > tol * d:  # another surface: a layer switch
                    if score[cur] > speck or score[k] < need:
                        continue
                if best < 0 or score[k] > score[best]:
                    best = k
            if best >= 0:
                pick[y, x] = best


@njit(cache=True, nogil=True)
def cohere_apply(out, claim, fid, base, k, pick, k_in, idx):
    """Copy claim ``k`` (frame id ``fid``, baseline times focal ``base``) where ``pick`` chose
    it, in place. ``out`` = (rgb (H, W, 3), depth, src int64, uv (H, W, 2), conf, observed,
    stretch, base_px); ``claim`` = that frame's (rgb, depth, uv, conf, observed, stretch);
    ``k_in`` (H, W) int16 is kept up to date; ``idx`` (N,) int64: the flat indices where
    ``pick`` >= 0."""
    rgb, depth, src, uv, conf, observed, stretch, base_px = out
    c_rgb, c_depth, c_uv, c_conf, c_obs, c_stretch = claim
    W = pick.shape[1]
    for i in idx:
        y, x = i // W, i % W
        if pick[y, x] != k:
            continue
        for ch in range(3):
            rgb[y, x, ch] = c_rgb[y, x, ch]
        depth[y, x] = c_depth[y, x]
        src[y, x] = fid
        uv[y, x, 0], uv[y, x, 1] = c_uv[y, x, 0], c_uv[y, x, 1]
        conf[y, x] = c_conf[y, x]
        observed[y, x] = c_obs[y, x]
        stretch[y, x] = c_stretch[y, x]
        base_px[y, x] = base
        k_in[y, x] = k


@njit(cache=True)
def frame_index(src, fids):
    """(H, W) int16: the index into ``fids`` (F,) of each pixel's source frame ``src`` (H, W)
    int64, -1 where it has none (one pass; ``fids`` holds a handful of ids), and (H, W) uint8
    1 where a 4-neighbour has another source (a boundary between frames, or a hole)."""
    H, W = src.shape
    out = np.full((H, W), -1, np.int16)
    bound = np.zeros((H, W), np.uint8)
    for y in range(H):
        for x in range(W):
            s = src[y, x]
            for k in range(fids.shape[0]):
                if fids[k] == s:
                    out[y, x] = k
                    break
            if x > 0 and s != src[y, x - 1]:
                bound[y, x] = bound[y, x - 1] = 1
            if y > 0 and s != src[y - 1, x]:
                bound[y, x] = bound[y - 1, x] = 1
    return out, bound


@njit(cache=True)
def flat_picks(pick):
    """(N,) int64: the flat indices where ``pick`` (H, W) int16 is >= 0, in order."""
    flat = pick.ravel()
    n = 0
    for i in range(flat.size):
        n += flat[i] >= 0
    out = np.empty(n, np.int64)
    n = 0
    for i in range(flat.size):
        if flat[i] >= 0:
            out[n] = i
            n += 1
    return out


def warm_up_cohere(comp: Composite) -> None:
    """Compile (or load) :func:`cohere_apply` on ``comp`` (after an :meth:`Composite.add`),
    which :meth:`Composite.cohere` only calls once a pixel switches: copies nothing."""
    out = comp._arrays("rgb", "depth", "src", "uv", "conf", "observed", "stretch", "base_px")
    c = comp.claims[0]
    pick = np.full(out[1].shape, -1, np.int16)
    idx = np.zeros(0, np.int64)
    cohere_apply(out, (c[3], c[2], c[4], c[5], c[6], c[7]), int(c[0]), 0.0, 0, pick, pick, idx)


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
        # Every frame's claim (fid, valid, depth, rgb, uv, conf, observed, stretch), for the
        # coherence pass after the last add.
        self.claims: list[tuple] = []
        self.claim_base: list[float] = []
        self.claim_rel: list[torch.Tensor] = []  # each claim's reliability (H, W)

    def _arrays(self, *names: str) -> tuple[np.ndarray, ...]:
        """Numpy views (shared memory) of the named state tensors, for the kernels."""
        return tuple(getattr(self, n).numpy() for n in names)

    def add(self, fid: int, w: Any, frame: Any, reliability: torch.Tensor | None = None) -> None:
        """Fold in warp ``w`` (a ``WarpResult``) of memory frame ``frame`` (``rgb`` uint8,
        ``confidence``, ``observed``) whose id is ``fid``. ``reliability`` (H, W) float32 in
        (0, 1]: a factor of the claim's quality for how well its geometry places it
        (:func:`models.geometry.reliability.claim_reliability`; None: 1 everywhere)."""
        rel = torch.ones_like(w.depth) if reliability is None else reliability.float()
        self.claim_rel.append(rel)
        if self.reference:
            self._add_torch(fid, w, frame, rel)
            return
        state = self._arrays(
            "rgb", "depth", "src", "uv", "quality", "conf", "observed", "stretch", "rim", "base_px"
        )
        prm = np.array([self.tol, w.baseline * self.f_t, self.nearest, 1 - self.tol], np.float32)
        f = (frame.rgb.numpy(), frame.confidence.numpy().astype(_f32), frame.observed.numpy())
        warp = [
            a.contiguous().numpy() for a in (w.rgb, w.depth, w.valid, w.src_uv, w.stretch, w.edge)
        ]
        claim = (np.zeros(warp[1].shape, _f32), np.zeros(warp[1].shape, np.bool_))
        composite_kernel(state, *warp, rel.contiguous().numpy(), f, prm, fid, claim)
        # the kernel wrote the claim's colour (earlier paint copied) into warp[0]
        self.claims.append((fid, warp[2], warp[1], warp[0], warp[3], *claim, warp[4]))
        self.claim_base.append(w.baseline * self.f_t)

    def _add_torch(self, fid: int, w: Any, frame: Any, rel: torch.Tensor) -> None:
        """The torch reference of :func:`composite_kernel` (whole-image operations)."""
        Hs, Ws = frame.depth.shape
        ui = w.src_uv[..., 0].round().long().clamp(0, Ws - 1)
        vi = w.src_uv[..., 1].round().long().clamp(0, Hs - 1)
        flat = vi * Ws + ui
        c = frame.confidence.reshape(-1)[flat].float()
        s_ = w.stretch.clamp(min=1e-6)
        q = c * torch.minimum(s_, 1.0 / s_).sqrt() * rel  # = c exp(-|log stretch| / 2) rel
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
        self.claims.append((fid, w.valid, w.depth, w_rgb, w.src_uv, c, obs, w.stretch))
        self.claim_base.append(w.baseline * self.f_t)

    def cohere(
        self,
        radius: int = COHERE_RADIUS,
        passes: int = COHERE_PASSES,
        speck: int = COHERE_SPECK,
        support: int = COHERE_SUPPORT,
        pool: Executor | None = None,
    ) -> None:
        """Coherent source selection, after the last :meth:`add` (rules in
        :func:`cohere_kernel`): on one surface a pixel takes the frame most of its neighbours
        (``(2 radius + 1)^2`` window) come from; a speck on another surface than its
        surroundings (support <= ``speck``) takes a well-supported claim (>= ``support``) on
        theirs where a frame offers one. Pixels seen along the target's rays keep theirs.

        Why: frames that see one surface disagree by a fraction of a pixel (sensor-depth noise,
        different resampling), and noisy depth lets single pixels of one layer win inside
        another; per-pixel choices that flip from pixel to pixel are visible speckle (on TUM
        it held most of the routed pixels' excess gradient energy). Occlusion boundaries and
        thin structures stay (a switch of layer needs a speck and a clear majority).
        ``passes`` Jacobi passes (each votes on the previous pass's result). ``pool``: threads
        that decide row bands in parallel (the result does not depend on it).
        """
        if not self.claims:
            return
        if self.reference:
            for _ in range(passes):
                self._cohere_torch(radius, speck, support)
            return
        fids = np.array([c[0] for c in self.claims], np.int64)
        # Decisions read only every claim's valid and depth (stacked: the kernel's votes);
        # a switched pixel then copies the rest of its new claim, frame by frame.
        cand = tuple(np.stack([np.asarray(c[j]) for c in self.claims]) for j in (1, 2))
        out = self._arrays("rgb", "depth", "src", "uv", "conf", "observed", "stretch", "base_px")
        prm = np.array([self.tol, radius, speck, support], np.float32)
        box = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        H = out[2].shape[0]
        # Only a window holding two frames can vote for a switch: pixels within ``radius`` of a
        # source boundary (most pixels are not, and the kernel skips them).
        k_in, bound = frame_index(out[2], fids)
        active = cv2.dilate(bound, box).view(np.bool_)
        # Row bands decided in parallel threads where a pool is given (the kernel releases
        # the GIL and writes only its rows of ``pick``: the same result whatever the order).
        n_bands = 1 if pool is None or H < 64 else COHERE_BANDS
        cuts = np.linspace(0, H, n_bands + 1).astype(np.int64)
        bands = [cuts[i : i + 2].copy() for i in range(n_bands)]
        votes = (out[1], out[2], out[7])  # depth, src, base_px: read only while deciding
        for _ in range(passes):
            pick = np.full(k_in.shape, -1, np.int16)
            args = (votes, cand, fids, k_in, prm, active, pick)
            if n_bands == 1:
                cohere_kernel(*args, bands[0])
            else:
                list(pool.map(lambda rows, a=args: cohere_kernel(*a, rows), bands))
            idx = flat_picks(pick)
            if not len(idx):
                break
            for k, c in enumerate(self.claims):
                claim = (c[3], c[2], c[4], c[5], c[6], c[7])  # rgb, depth, uv, conf, obs, stretch
                cohere_apply(out, claim, int(c[0]), float(self.claim_base[k]), k, pick, k_in, idx)
            # only windows where something changed can decide differently in the next pass
            active = cv2.dilate((pick >= 0).view(np.uint8), box).view(np.bool_)

    def _cohere_torch(self, radius: int, speck: int, support: int) -> None:
        """The torch reference of one :func:`cohere_kernel` pass (shifted whole images)."""
        fids = torch.tensor([c[0] for c in self.claims])
        src, depth = self.src, self.depth
        H, W = depth.shape
        r = radius

        def stack(j: int) -> torch.Tensor:
            return torch.stack([torch.as_tensor(c[j]) for c in self.claims])

        k_valid, k_depth = stack(1), stack(2)  # (F, H, W)
        sp = torch.nn.functional.pad(src, (r, r, r, r), value=-1)
        dp = torch.nn.functional.pad(depth, (r, r, r, r), value=0.0)
        lim = self.tol * k_depth
        score = torch.zeros(len(fids), H, W, dtype=torch.long)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                ns, nd = sp[dy : dy + H, dx : dx + W], dp[dy : dy + H, dx : dx + W]
                same = (ns[None] == fids[:, None, None]) & ((nd[None] - k_depth).abs() <= lim)
                score += same.long()
        score = torch.where(k_valid, score, -1)
        cur = (src[None] == fids[:, None, None]).long().argmax(0)
        s_cur = score.gather(0, cur[None])[0]
        layer = (k_depth - depth).abs() > self.tol * depth  # another surface
        ok = (score > s_cur) & (torch.arange(len(fids))[:, None, None] != cur)
        ok &= ~layer | ((s_cur <= speck) & (score >= support))
        best = torch.where(ok, score, -2).argmax(0)  # the first frame on a tie
        switch = (src >= 0) & ok.gather(0, best[None])[0]
        switch &= ~(self.base_px < 0.5 * depth)  # seen along the target's rays: exact

        def pick(j: int) -> torch.Tensor:
            st = stack(j)
            idx = best.reshape(1, H, W, *([1] * (st.dim() - 3)))
            return st.gather(0, idx.expand(1, *st.shape[1:]))[0]

        s3 = switch[..., None]
        self.rgb = torch.where(s3, pick(3), self.rgb)
        self.depth = torch.where(switch, pick(2), depth)
        self.src = torch.where(switch, fids[best], src)
        self.uv = torch.where(s3, pick(4), self.uv)
        self.conf = torch.where(switch, pick(5), self.conf)
        self.observed = torch.where(switch, pick(6), self.observed)
        self.stretch = torch.where(switch, pick(7), self.stretch)
        k_base = torch.tensor(self.claim_base, dtype=torch.float32)
        self.base_px = torch.where(switch, k_base[best], self.base_px)

    def reliability(self) -> torch.Tensor:
        """(H, W) float32: the reliability of each pixel's current claim (that of the frame it
        comes from, after :meth:`cohere`; 0 where no frame claims it)."""
        src = self.src.numpy()  # numpy throughout: no torch thread pool to wake per frame
        out = np.zeros(src.shape, _f32)
        for (fid, *_), rel in zip(self.claims, self.claim_rel, strict=True):
            m = src == fid
            out[m] = rel.numpy()[m]
        return torch.from_numpy(out)

    def drop_unreliable(self, min_reliability: float) -> torch.Tensor:
        """Un-route the pixels whose claim's reliability is below ``min_reliability`` (after
        :meth:`cohere`): no frame places them well enough (a surface seen at grazing incidence
        across a wide baseline lands shards of the wrong surface), so the painter fills them
        from reliable context instead. Returns the (H, W) bool mask of dropped pixels."""
        drop = (self.src.numpy() >= 0) & (self.reliability().numpy() < min_reliability)
        if drop.any():
            # in place through numpy views of the state tensors
            for name, value in (
                ("rgb", 0.0), ("depth", 0.0), ("src", -1), ("uv", -1.0), ("quality", -1.0),
                ("conf", 0.0), ("observed", False), ("stretch", 0.0), ("rim", False),
                ("base_px", 0.0),
            ):  # fmt: skip
                getattr(self, name).numpy()[drop] = value
        return torch.from_numpy(drop)
