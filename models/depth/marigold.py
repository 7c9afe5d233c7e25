"""Marigold depth through diffusers' ``MarigoldDepthPipeline`` (needs weights: hub id or folder).

Marigold is a Stable-Diffusion-2 UNet fine-tuned to denoise a depth latent conditioned on the
photo's latent. Its output is *affine-invariant*: ``p`` in [0, 1] with metric depth about
``a * p + b`` for unknown ``a > 0``, ``b``. Metric scale comes from the camera-height policy:

* the offline layout prior (:class:`models.depth.layout.LayoutDepth`, camera 1.6 m above the
  floor) gives metric depth; on its floor pixels (where it equals the ray / ground-plane
  intersection, which is exact geometry for a level camera at that height) ``a, b`` are fitted by
  trimmed least squares (the 80 % best-fitting pixels, three rounds);
* when too few floor pixels are seen, or they span too small a range of ``p`` to pin both numbers,
  the fit uses every pixel the prior trusts (not sky, not depth edges);
* when the affine fit is not usable (``a <= 0``, it would put some pixel at or behind the camera,
  or it flattens the prediction to under a quarter of the prior's depth spread) it falls back to
  median scaling (``b = 0``).

The recorded policy is ``"camera-height-1.6m-via-layout-affine"`` (or ``...-median`` for the
fallback); ``meta`` holds ``a``, ``b`` and the region used. Models predicting disparity
(``prediction_type == "disparity"``) are fitted the same way in inverse depth.

Confidence: with ``ensemble_size > 1`` it comes from the ensemble's uncertainty (the spread of
the aligned members, in units of ``p``): ``0.9 * exp(-u / 0.05)``; with one member it is the
constant 0.6. Either way it is lowered at depth edges.

Defaults: ``prs-eth/marigold-depth-v1-1`` with the model's own step count and processing
resolution (``steps=None``, ``processing_resolution=None``; v1-1 states 4 DDIM "trailing" steps
at 768 px in its model_index.json), one ensemble member, seed 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.depth.base import DepthError, DepthResult, check_inputs
from models.depth.depth_anything import edge_confidence

BACKEND = "marigold"
DEFAULT_MODEL = "prs-eth/marigold-depth-v1-1"
OFFLINE_ALTERNATIVE = "--depth layout"
PIPELINE_CLASS = "MarigoldDepthPipeline"
COMPONENTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
SINGLE_MEMBER_CONFIDENCE = 0.6
# Extra VRAM (GB) beyond the weights for activations at 768 px; below that, CPU offload.
_ACTIVATION_GB = 2.0


def _load_error(model: str, exc: BaseException) -> DepthError:
    """A DepthError (what the CLI and studio catch) carrying the manager's load message."""
    from models.manager import load_error

    return DepthError(str(load_error(BACKEND, model, OFFLINE_ALTERNATIVE, exc)))


def validate_pipeline_folder(path: Path, model_id: str) -> dict[str, Any]:
    """Check a local folder holds a complete Marigold depth pipeline; returns model_index.json.

    Raises DepthError (before any weights are read) for: no model_index.json, another pipeline
    class, a missing component folder, or a tokenizer folder without vocabulary files
    (transformers would silently build an empty tokenizer from it).
    """
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise DepthError(
            f"{model_id!r} is not a Marigold depth pipeline: it has no model_index.json (is it a "
            f"transformers model? use it with --depth depth-anything-v2, or use --depth layout)"
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as exc:
        raise DepthError(f"cannot read {index_file}: {exc}") from exc
    cls = index.get("_class_name")
    if cls != PIPELINE_CLASS:
        raise DepthError(
            f"{model_id!r} is not a Marigold depth pipeline: its model_index.json names {cls!r}, "
            f"the marigold backend needs {PIPELINE_CLASS} (or use --depth layout)"
        )
    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise DepthError(
            f"the Marigold pipeline folder {model_id!r} is incomplete: missing "
            f"{', '.join(missing)}/. Download the full pipeline again, or use --depth layout."
        )
    tok = path / "tokenizer"
    has_vocab = (tok / "tokenizer.json").is_file() or (
        (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
    )
    if not has_vocab:
        raise DepthError(
            f"the Marigold pipeline folder {model_id!r} has a tokenizer/ folder without "
            "vocab.json + merges.txt (or tokenizer.json); the tokenizer would load empty. "
            "Download the full pipeline again, or use --depth layout."
        )
    return index


def _load(model_id: str, dtype: Any, device: str, local_files_only: bool) -> Any:
    """The MarigoldDepthPipeline for ``model_id`` on ``device`` in ``dtype``, checked."""
    import torch
    from diffusers import MarigoldDepthPipeline

    from models.manager import free_vram_gb, local_path

    path = Path(model_id).expanduser()
    looks_local = path.is_absolute() or model_id.startswith((".", "~"))
    if looks_local and not path.is_dir():
        raise _load_error(model_id, FileNotFoundError(f"no directory {path}"))
    folder = local_path(model_id)  # the folder itself, or the hub-cache snapshot when present
    if folder is not None:
        validate_pipeline_folder(folder, model_id)
    else:  # fail at once when the weights are neither here nor reachable (no hub retries)
        from models.manager import ModelError, ensure_available

        try:
            ensure_available("marigold", model_id, "--depth layout")
        except ModelError as exc:
            raise DepthError(str(exc)) from exc
    try:
        pipe = MarigoldDepthPipeline.from_pretrained(
            str(folder) if folder is not None else model_id,
            dtype=dtype,
            local_files_only=local_files_only,
        )
    except (OSError, ValueError, ImportError, KeyError, TypeError, AttributeError) as exc:
        raise _load_error(model_id, exc) from exc
    if not isinstance(pipe, MarigoldDepthPipeline):
        raise DepthError(f"{model_id!r} is not a Marigold depth pipeline ({type(pipe).__name__})")
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None or len(tokenizer) == 0:
        raise DepthError(
            f"the Marigold pipeline {model_id!r} loaded an empty tokenizer (its tokenizer/ "
            "files are missing); download the full pipeline again, or use --depth layout"
        )
    if pipe.unet.config.in_channels != 2 * pipe.vae.config.latent_channels:
        raise DepthError(
            f"{model_id!r} does not look like a Marigold depth model: its UNet takes "
            f"{pipe.unet.config.in_channels} channels, Marigold needs image + depth latents"
        )
    pipe.set_progress_bar_config(disable=True)
    offload = False
    free = free_vram_gb(device)
    if free is not None:
        params = sum(
            p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()
        )
        need = params * torch.finfo(dtype).bits / 8 / 2**30 + _ACTIVATION_GB
        offload = free < need
    if offload:
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    pipe._loci_offload = offload  # remembered for meta
    return pipe


class MarigoldDepth:
    """Monocular depth with a Marigold depth pipeline, put at metric scale by the layout prior.

    Args:
        model: hub id or local pipeline folder (model_index.json + unet/vae/scheduler/
            text_encoder/tokenizer).
        steps: denoising steps; None -> the pipeline's ``default_denoising_steps`` (4 for v1-1;
            10 for checkpoints that state none).
        ensemble_size: predictions averaged (affine-aligned) per photo; > 1 gives uncertainty.
        processing_resolution: longer side the model runs at; None -> the model's default
            (768 for v1-1); 0 -> the photo's own size.
        device: "cpu", "cuda" or None (CUDA when available).
        dtype: torch dtype or its name; None -> bf16/fp16 on CUDA, fp32 on CPU.
        seed: seeds the initial noise; the same photo and seed give the same depth.
        camera_height: metres, for the layout prior that sets the metric scale (None: the
            layout prior's own, from the scene).
        local_files_only: never try the network (also implied by HF_HUB_OFFLINE=1).
    """

    name = BACKEND

    def __init__(
        self,
        model: str | Path | None = None,
        steps: int | None = None,
        ensemble_size: int = 1,
        processing_resolution: int | None = None,
        device: str | None = None,
        dtype: Any = None,
        seed: int = 0,
        camera_height: float | None = None,
        local_files_only: bool = False,
    ) -> None:
        if steps is not None and int(steps) < 1:
            raise DepthError(f"Marigold needs at least 1 denoising step, got {steps}")
        if int(ensemble_size) < 1:
            raise DepthError(f"ensemble_size must be at least 1, got {ensemble_size}")
        if processing_resolution is not None and int(processing_resolution) < 0:
            raise DepthError("processing_resolution must be 0 (native) or a positive size")
        try:
            import torch

            from models.manager import MANAGER, ModelError, pick_device
        except ImportError as exc:  # pragma: no cover - the project installs both
            raise DepthError(
                "Marigold needs torch and diffusers; install them or use --depth layout"
            ) from exc
        self.model_id = str(model) if model is not None else DEFAULT_MODEL
        try:
            self.device = pick_device(device)
        except ModelError as exc:
            raise DepthError(str(exc)) from exc
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise DepthError("dtype must be a torch dtype name such as float32 or bfloat16")
        self.pipe = MANAGER.get(
            BACKEND,
            self.model_id,
            lambda mid, dt, dev: _load(mid, dt, dev, local_files_only),
            device=self.device,
            dtype=dtype,
        )
        # Checkpoints that state no defaults (v1-0) get 10 DDIM steps at 768 px.
        self.steps = int(steps or self.pipe.default_denoising_steps or 10)
        self.ensemble_size = int(ensemble_size)
        if processing_resolution is None:
            processing_resolution = self.pipe.default_processing_resolution or 768
        self.processing_resolution = int(processing_resolution)
        self.seed = int(seed)
        self.camera_height = None if camera_height is None else float(camera_height)
        self.disparity = self.pipe.config.get("prediction_type") == "disparity"

    def predict_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Affine-invariant prediction (H, W) float32 in about [0, 1] (0 = near for depth
        models) and, with an ensemble, its uncertainty (H, W) float32 (else None)."""
        import torch

        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        with torch.no_grad():
            out = self.pipe(
                rgb,
                num_inference_steps=self.steps,
                ensemble_size=self.ensemble_size,
                processing_resolution=self.processing_resolution,
                match_input_resolution=True,
                batch_size=min(self.ensemble_size, 4),
                generator=generator,
                output_type="np",
                output_uncertainty=self.ensemble_size > 1,
            )
        pred = np.asarray(out.prediction, dtype=np.float32).reshape(rgb.shape[:2])
        unc = out.uncertainty
        if unc is not None:
            unc = np.asarray(unc, dtype=np.float32).reshape(rgb.shape[:2])
        return np.nan_to_num(pred, nan=0.5), unc

    def estimate(self, rgb: np.ndarray, K: np.ndarray) -> DepthResult:
        """Metric depth (H, W) for ``rgb`` (H, W, 3) uint8 with intrinsics ``K`` (3, 3)."""
        from models.depth.layout import LayoutDepth

        t0 = time.perf_counter()
        rgb, K = check_inputs(rgb, K)
        pred, unc = self.predict_raw(rgb)
        prior = LayoutDepth(camera_height=self.camera_height).estimate(rgb, K)
        depth, fit = align_to_prior(pred, prior, K, disparity=self.disparity)
        if unc is not None:
            base: float | np.ndarray = 0.9 * np.exp(-np.nan_to_num(unc, nan=1.0) / 0.05)
        else:
            base = SINGLE_MEMBER_CONFIDENCE
        conf = edge_confidence(depth, base)
        policy = f"{prior.scale_policy}-via-layout-{fit['kind']}"
        meta: dict[str, Any] = {
            "model": self.model_id,
            "device": self.device,
            "dtype": str(self.pipe.dtype).removeprefix("torch."),
            "cpu_offload": bool(getattr(self.pipe, "_loci_offload", False)),
            "steps": self.steps,
            "ensemble_size": self.ensemble_size,
            "processing_resolution": self.processing_resolution,
            "seed": self.seed,
            "fit": fit,
            "scene": prior.meta.get("scene"),
            "camera_height_m": prior.meta.get("camera_height_m"),
            "seconds": time.perf_counter() - t0,
        }
        return DepthResult(depth, conf, prior.up_cam, policy, meta)


def _trimmed_affine(x: np.ndarray, y: np.ndarray, keep: float = 0.8) -> tuple[float, float]:
    """(a, b) minimising sum (a x + b - y)^2 over the ``keep`` best-fitting pairs (3 rounds).
    ``x``, ``y``: (N,) float64."""
    sel = np.ones(len(x), bool)
    a, b = 0.0, float(np.median(y))
    for _ in range(3):
        A = np.stack([x[sel], np.ones(int(sel.sum()))], 1)
        (a, b), *_ = np.linalg.lstsq(A, y[sel], rcond=None)
        r = np.abs(a * x + b - y)
        sel = r <= np.quantile(r, keep)
        if sel.sum() < 10:
            break
    return float(a), float(b)


def floor_mask(prior: DepthResult, K: np.ndarray, camera_height: float) -> np.ndarray:
    """(H, W) bool: pixels where the layout prior's depth is the ground-plane intersection
    (within 5 %) and trusted: the region where its metric scale is exact geometry."""
    from models.depth.layout import LEVEL_UP_CAM, ground_plane_depth

    H, W = prior.depth.shape
    up = prior.up_cam if prior.up_cam is not None else LEVEL_UP_CAM
    plane = ground_plane_depth(W, H, K, up, camera_height, max_depth=1e6)
    on_plane = np.abs(prior.depth / plane - 1.0) < 0.05
    return on_plane & (plane < 50.0) & (prior.confidence > 0.2)


def align_to_prior(
    pred: np.ndarray,
    prior: DepthResult,
    K: np.ndarray,
    camera_height: float | None = None,
    disparity: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Metric depth (H, W) float32 > 0 from an affine-invariant prediction ``pred`` (H, W).

    Fits ``a * pred + b`` to the prior's depth (or inverse depth when ``disparity``) on its
    floor pixels, else on its trusted pixels; falls back to median scaling. Returns the depth and
    a JSON-serialisable dict: kind ("affine" or "median"), region, a, b, n_pixels.
    """
    x_all = pred.astype(np.float64)
    target = 1.0 / prior.depth if disparity else prior.depth
    target = target.astype(np.float64)
    region = "floor"
    if camera_height is None:
        camera_height = float(prior.meta.get("camera_height_m", 1.6))
    mask = floor_mask(prior, K, camera_height)
    n_min = max(50, int(0.02 * mask.size))
    if mask.sum() < n_min or np.ptp(np.percentile(x_all[mask], [10, 90])) < 0.05:
        region = "trusted"
        mask = prior.confidence > 0.2
        if mask.sum() < n_min:
            region, mask = "all", np.ones_like(mask)
    x, y = x_all[mask], target[mask]
    a, b = _trimmed_affine(x, y)
    out = a * x_all + b
    lo = 0.02 * float(np.median(y))
    kind = "affine"
    # A fit whose slope spreads the prediction over much less than the prior's own spread
    # explains nothing (it is a constant in disguise): use median scaling instead.
    spread_x = float(np.subtract(*np.percentile(x, [95, 5])))
    spread_y = float(np.subtract(*np.percentile(y, [95, 5])))
    flat = a * spread_x < 0.25 * spread_y
    if flat or not (np.isfinite(a) and np.isfinite(b) and a > 0 and float(out.min()) > lo):
        # Scale only: prediction floored at 2 % of its range so nothing sits at the camera.
        kind, b = "median", 0.0
        xs = np.maximum(x_all, 0.02 * max(float(x_all.max()), 1e-6))
        a = float(np.median(y) / np.median(xs[mask]))
        out = a * xs
    depth = 1.0 / out if disparity else out
    depth = np.clip(np.nan_to_num(depth, nan=1.0, posinf=1e3), 0.05, 1e3).astype(np.float32)
    fit = {"kind": kind, "region": region, "a": a, "b": b, "n_pixels": int(mask.sum())}
    return depth, fit
