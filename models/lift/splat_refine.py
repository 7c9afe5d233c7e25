"""Refinement of pixel-aligned splats against their frames (Adam on L1).

Uses gsplat's CUDA rasteriser when CUDA exists, and our differentiable CPU renderer
(:mod:`models.lift.splat_render`) otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from models.lift.splat_render import render
from models.lift.splats import Frame, Gaussians

# ---------------------------------------------------------------------------------------------
# Refinement


def _gsplat_render(
    params: dict[str, torch.Tensor],
    c2w: torch.Tensor,
    K: torch.Tensor,
    w: int,
    h: int,
    sh_rest: torch.Tensor | None = None,
):
    """gsplat.rasterization (CUDA) with our pixel-centre convention: shift K by half a pixel.
    ``sh_rest`` (N, K, 3) fixed higher-order SH (degree from K), or None."""
    import gsplat

    coeffs = params["sh0"][:, None, :]
    degree = 0
    if sh_rest is not None and sh_rest.shape[1] > 0:
        coeffs = torch.cat([coeffs, sh_rest], 1)
        degree = {3: 1, 8: 2, 15: 3}[sh_rest.shape[1]]

    K_gs = K.clone()
    K_gs[0, 2] += 0.5
    K_gs[1, 2] += 0.5
    rgb, _, _ = gsplat.rasterization(
        params["means"],
        params["quats"],
        params["log_scales"].exp(),
        torch.sigmoid(params["opacity_logits"]),
        coeffs,
        torch.linalg.inv(c2w)[None],
        K_gs[None],
        w,
        h,
        sh_degree=degree,
    )
    return rgb[0]


def refine(
    gaussians: Gaussians,
    frames: list[Frame],
    steps: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | None = None,
) -> Gaussians:
    """Adam on the L1 photometric loss against ``frames`` (same tuples as ``init_from_frames``).

    Uses gsplat.rasterization when CUDA is available, our CPU renderer otherwise. One random frame
    (seeded) per step. Position lr is ``lr`` scaled by the scene extent; colours/opacity/scales use
    larger rates, as 3DGS does. Returns new Gaussians (sh_rest is carried over unchanged).
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device("cuda" if use_cuda else "cpu")
    extent = float(np.linalg.norm(gaussians.means.std(0))) if len(gaussians.means) > 1 else 1.0
    params = {
        k: torch.tensor(
            np.asarray(getattr(gaussians, k)), dtype=torch.float32, device=dev
        ).requires_grad_(True)
        for k in ("means", "quats", "log_scales", "opacity_logits", "sh0")
    }
    rates = {
        "means": lr * extent,
        "quats": lr,
        "log_scales": 5 * lr,
        "opacity_logits": 50 * lr,
        "sh0": 2.5 * lr,
    }
    opt = torch.optim.Adam([{"params": [params[k]], "lr": rates[k]} for k in params], eps=1e-15)
    targets = [
        (
            torch.tensor(rgb, dtype=torch.float32, device=dev) / 255.0,
            torch.tensor(c2w, dtype=torch.float32, device=dev),
            torch.tensor(K, dtype=torch.float32, device=dev),
        )
        for rgb, _, K, c2w, _ in frames
    ]
    rest = None
    if gaussians.sh_rest is not None:  # view-dependent colour is rendered, and kept as it is
        rest = torch.tensor(np.asarray(gaussians.sh_rest), dtype=torch.float32, device=dev)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        target, c2w, K = targets[int(rng.integers(len(targets)))]
        h, w = target.shape[:2]
        if use_cuda:
            pred = _gsplat_render(params, c2w, K, w, h, rest)
        else:
            pred = render(
                params["means"], params["quats"], params["log_scales"],
                params["opacity_logits"], params["sh0"], c2w, K, w, h, sh_rest=rest,
            )["rgb"]  # fmt: skip
        loss = (pred - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in params.items()}
    return Gaussians(**out, sh_rest=gaussians.sh_rest)
