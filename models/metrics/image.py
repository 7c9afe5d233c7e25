"""Image metrics for evaluation: PSNR and SSIM, whole-frame or over a mask.

SSIM follows Wang et al. 2004 (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, per channel
then averaged), the same as ``skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``; the tests check that. Over a mask, the SSIM map is
averaged over mask pixels whose whole window lies in the mask (the window must not straddle
painted pixels).

LPIPS and FID need network weights that cannot be downloaded here; :class:`PerceptualMetrics`
runs them from user-supplied TorchScript modules and says why when they are skipped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images (H, W, 3) over ``mask`` (H, W) bool (all pixels if None).

    inf when identical; nan when the mask is empty.
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    if a.size == 0:
        return float("nan")
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) SSIM map (channel mean) of uint8 images (H, W, 3) or (H, W); valid interior only
    (a 5-pixel border, where the window leaves the image, is NaN)."""
    x = torch.from_numpy(np.atleast_3d(a).astype(np.float64)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(np.atleast_3d(b).astype(np.float64)).permute(2, 0, 1)[:, None]
    g = _gauss()
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only
        return F.conv2d(F.conv2d(t, gx), gy)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    s = s.mean(0)[0].numpy()
    out = np.full(a.shape[:2], np.nan)
    out[5:-5, 5:-5] = s
    return out


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM of uint8 images; over ``mask`` (H, W) bool, only where the whole 11x11 window
    is inside the mask. nan when no such pixel exists."""
    m = ssim_map(a, b)
    valid = np.isfinite(m)
    if mask is not None:
        inside = (
            F.max_pool2d(torch.from_numpy(~mask).float()[None, None], 11, stride=1, padding=5)[
                0, 0
            ].numpy()
            == 0
        )
        valid &= inside
    return float(m[valid].mean()) if valid.any() else float("nan")


class PerceptualMetrics:
    """Optional LPIPS (TorchScript f(x, y) -> distance, NCHW in [-1, 1]) and FID features
    (TorchScript f(x) -> (N, D), NCHW in [0, 1])."""

    def __init__(self, lpips_model: str | None, fid_model: str | None) -> None:
        self.lpips = torch.jit.load(lpips_model).eval() if lpips_model else None
        self.fid = torch.jit.load(fid_model).eval() if fid_model else None
        self.notes = []
        if self.lpips is None:
            self.notes.append(
                "LPIPS skipped: it needs network weights (VGG/AlexNet) that cannot "
                "be downloaded here; pass --lpips-model a TorchScript LPIPS module"
            )
        if self.fid is None:
            self.notes.append(
                "FID skipped: it needs Inception weights; pass --fid-model a "
                "TorchScript feature extractor (and many frames: FID on a few "
                "frames is not meaningful)"
            )

    @staticmethod
    def _t(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255.0

    def lpips_distance(self, a: np.ndarray, b: np.ndarray) -> float | None:
        if self.lpips is None:
            return None
        with torch.no_grad():
            return float(self.lpips(self._t(a) * 2 - 1, self._t(b) * 2 - 1).reshape(-1)[0])

    def fid_score(self, fakes: list[np.ndarray], reals: list[np.ndarray]) -> float | None:
        if self.fid is None or len(fakes) < 2 or len(reals) < 2:
            return None
        from scipy import linalg

        with torch.no_grad():
            f1 = self.fid(torch.cat([self._t(x) for x in fakes])).double().numpy()
            f2 = self.fid(torch.cat([self._t(x) for x in reals])).double().numpy()
        m1, m2 = f1.mean(0), f2.mean(0)
        c1, c2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
        covmean = linalg.sqrtm(c1 @ c2)
        covmean = covmean.real if np.iscomplexobj(covmean) else covmean
        return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))
