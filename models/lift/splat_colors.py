"""Least-squares colours for fixed splats: the colours that reproduce the frames best.

With positions, shapes and opacities fixed, a render is *linear* in the splats' colours: pixel p
of frame f is ``Σ_g w_fpg · c_g(f)`` where the blending weights ``w`` come from the compositor
(``rasterize(..., contributions=True)``) and ``c_g(f)`` is splat g's colour seen from f. So the
colours that minimise the squared error over the frames (what ``loci eval lift`` scores as PSNR)
solve a sparse linear least-squares problem, here by preconditioned conjugate gradients on the
normal equations. Unlike a per-splat mean of the frames that see it (``consensus_colors``) this
accounts for the splats overlapping and blending: a splat whose neighbours blur into its pixel
is made to compensate, so the renders keep the photo's fine detail (foliage, text).

With ``sh_degree=1`` each colour is ``a_g + Σ_k B_k(d_fg) s_gk``: a base colour plus 3DGS's
degree-1 spherical harmonics of the viewing direction d (three coefficients per channel, written
to the PLY as ``f_rest_*``). The world's frames disagree where they were painted (a strip of sky
beside a pole in one frame, foliage in the next); a view-dependent colour can follow them
smoothly. A ridge term keeps both near their start (the consensus colour, zero SH) where the
frames say little, so a splat seen once is not pushed to extremes.

``solve_colors_reference`` is the slow, obvious twin (a dense matrix and ``numpy.linalg.lstsq``)
for tiny scenes in the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from models.lift.splat_render import render
from models.lift.splats import SH_C0, Frame, Gaussians, rgb_to_sh0, sh_basis

__all__ = ["blend_matrix", "solve_colors", "solve_colors_reference"]


def blend_matrix(g: Gaussians, c2w: np.ndarray, K: np.ndarray, width: int, height: int):
    """scipy CSR (H·W, N): row y·W + x holds the blending weights of every splat in that pixel
    at this camera (render = matrix @ colours; pixels nothing covers stay black)."""
    with torch.no_grad():
        out = render(
            g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, c2w, K, width, height,
            contributions=True,
        )  # fmt: skip
    rows = out["pixel"].numpy().astype(np.int32)
    cols = out["gaussian"].numpy().astype(np.int32)
    return sp.csr_matrix(
        (out["weight"].numpy().astype(np.float32), (rows, cols)), shape=(width * height, len(g))
    )


def _view_basis(g: Gaussians, c2w: np.ndarray, n_rest: int) -> np.ndarray:
    """(N, n_rest) SH basis values of each splat's viewing direction from camera ``c2w``."""
    d = np.asarray(g.means, np.float64) - np.asarray(c2w, np.float64)[:3, 3]
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return np.stack(sh_basis(d, n_rest), -1)


def solve_colors(
    g: Gaussians,
    frames: list[Frame],
    sh_degree: int = 0,
    iters: int = 40,
    ridge: float = 0.02,
    ridge_sh: float = 0.2,
    rounds: int = 2,
    ridge_floor: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> Gaussians:
    """New Gaussians whose colours (and degree-1 SH with ``sh_degree=1``) minimise
    ``Σ_frames |render - frame|² + ridge·Σ_g D_g |a_g - a0_g|² + ridge_sh·Σ_g D_g |s_g|²``.

    ``frames`` as for ``init_from_frames`` (only rgb, K and c2w are used). ``D_g`` is the splat's
    summed squared blending weight over the frames, so the ridge is relative: a splat half hidden
    is held as firmly, for its share of the pixels, as one fully visible, and ``ridge_floor``
    (times the median ``D_g``) is added to it so a barely seen splat keeps its fused colour.
    Geometry and opacity
    are unchanged; the base colours are clipped to [0, 1] after the solve (what viewers show).
    Deterministic (no randomness; CG from the current colours, ``iters`` steps).
    """
    if sh_degree not in (0, 1):
        raise ValueError(f"sh_degree must be 0 or 1 (got {sh_degree})")
    say = progress or (lambda _msg: None)
    n, n_rest = len(g), 3 * sh_degree
    mats, bases, targets = [], [], []
    for k, (rgb, _, K, c2w, _) in enumerate(frames):
        h, w = rgb.shape[:2]
        say(f"blend weights {k + 1}/{len(frames)}")
        mats.append(blend_matrix(g, c2w, K, w, h))
        bases.append(_view_basis(g, c2w, n_rest) if n_rest else None)
        targets.append(np.asarray(rgb, np.float32).reshape(-1, 3) / 255.0)

    def forward(x: np.ndarray, f: int) -> np.ndarray:
        """Colours seen from frame f (N, 3) from unknowns x (N, 1 + n_rest, 3)."""
        c = x[:, 0]
        if n_rest:
            c = c + np.einsum("nk,nkc->nc", bases[f], x[:, 1:])
        return c

    def adjoint(y: np.ndarray, f: int) -> np.ndarray:
        """Transpose of ``forward`` (N, 3) -> (N, 1 + n_rest, 3)."""
        if not n_rest:
            return y[:, None]
        return np.concatenate([y[:, None], bases[f][:, :, None] * y[:, None]], 1)

    diag = np.zeros(n)
    rhs = np.zeros((n, 1 + n_rest, 3))
    for f, W in enumerate(mats):
        diag += np.asarray(W.multiply(W).sum(0)).reshape(-1)
        rhs += adjoint(W.T @ targets[f], f)
    # The ridge grows with how much the frames see a splat, with a floor: a splat the frames
    # barely see (hidden behind others, its weights tiny) would otherwise take any colour that
    # nudges a few pixels, and show as a coloured speck from a new viewpoint.
    floor = ridge_floor * float(np.median(diag[diag > 0])) if (diag > 0).any() else 0.0
    strength = np.concatenate([[ridge], np.full(n_rest, ridge_sh)])[None, :, None]
    lam = strength * (diag + floor)[:, None, None] + 1e-6
    x0 = np.zeros((n, 1 + n_rest, 3))
    x0[:, 0] = np.clip(np.asarray(g.sh0, np.float64) * SH_C0 + 0.5, 0, 1)
    if g.sh_rest is not None and n_rest:
        x0[:, 1:] = np.asarray(g.sh_rest, np.float64)[:, :n_rest]
    prior = lam * x0
    prior[:, 1:] = 0.0  # the SH terms are pulled towards zero (no view dependence)

    def normal(x: np.ndarray) -> np.ndarray:
        out = lam * x
        for f, W in enumerate(mats):  # float32 products (the weights are float32)
            out += adjoint(W.T @ (W @ forward(x, f).astype(np.float32)), f)
        return out

    # Jacobi-preconditioned CG (each splat's diagonal: its squared weights, times the basis²).
    pre = np.zeros_like(x0)
    pre[:, 0] = diag[:, None]
    for f, W in enumerate(mats):
        if n_rest:
            d_f = np.asarray(W.multiply(W).sum(0)).reshape(-1)
            pre[:, 1:] += (bases[f] ** 2 * d_f[:, None])[:, :, None]
    pre = 1.0 / (pre + lam)
    # Viewers clip each splat's colour to [0, 1]; a free least-squares solve sharpens edges by
    # overshooting (ringing) and loses that when clipped. So: solve, clip, hold the clipped
    # colours at their bound and solve again for the others (an active set, ``rounds`` times).
    x = x0.copy()
    free = np.ones_like(x, bool)
    per_round = max(1, iters // rounds)
    for k in range(rounds):
        x = _cg(normal, rhs + prior, x, pre * free, per_round, say, k * per_round, iters)
        over = (x[:, 0] < 0) | (x[:, 0] > 1)
        x[:, 0] = np.clip(x[:, 0], 0.0, 1.0)
        free[:, 0] &= ~over
    base = np.clip(x[:, 0], 0.0, 1.0)
    rest = x[:, 1:].astype(np.float32) if n_rest else g.sh_rest
    return Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, rgb_to_sh0(base), rest)


def _cg(normal, b, x, pre, iters, say, done, total) -> np.ndarray:
    """``iters`` steps of preconditioned conjugate gradients on ``normal(x) = b`` from ``x``;
    ``pre`` is the diagonal preconditioner (0 where a variable is held fixed)."""
    x = x.copy()
    r = (b - normal(x)) * (pre > 0)
    z = pre * r
    p = z.copy()
    rz = float((r * z).sum())
    for it in range(iters):
        say(f"colour solve {done + it + 1}/{total}")
        ap = normal(p)
        alpha = rz / max(float((p * ap).sum()), 1e-30)
        x += alpha * p
        r -= alpha * ap
        z = pre * r
        rz_new = float((r * z).sum())
        p = z + (rz_new / max(rz, 1e-30)) * p
        rz = rz_new
    return x


def solve_colors_reference(
    g: Gaussians, frames: list[Frame], ridge: float = 0.02, ridge_floor: float = 0.5
) -> np.ndarray:
    """Slow twin for tiny scenes, DC colours only: the exact minimiser (N, 3) in [0, 1] before
    clipping, from a dense blend matrix stacked over frames and ``numpy.linalg.lstsq``."""
    rows, ys = [], []
    for rgb, _, K, c2w, _ in frames:
        h, w = rgb.shape[:2]
        rows.append(blend_matrix(g, c2w, K, w, h).toarray())
        ys.append(np.asarray(rgb, np.float64).reshape(-1, 3) / 255.0)
    A, Y = np.concatenate(rows), np.concatenate(ys)
    d = (A**2).sum(0)
    D = ridge * (d + ridge_floor * np.median(d[d > 0])) + 1e-6
    a0 = np.clip(np.asarray(g.sh0, np.float64) * SH_C0 + 0.5, 0, 1)
    A_aug = np.concatenate([A, np.diag(np.sqrt(D))])
    Y_aug = np.concatenate([Y, np.sqrt(D)[:, None] * a0])
    return np.linalg.lstsq(A_aug, Y_aug, rcond=None)[0]
