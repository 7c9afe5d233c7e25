"""Depth Anything V2 through transformers (needs weights: hub id or a local directory).

Variants (``variant=``) pick the default checkpoint:

* ``"relative"`` (default): ``depth-anything/Depth-Anything-V2-Small-hf``. It predicts
  affine-invariant disparity, turned into depth (1 / disparity after normalising) and put at
  metric scale by median-matching the offline layout prior, whose scale comes from the camera
  height it finds in the scene. Recorded policy: the prior's plus ``-via-layout``, e.g.
  ``"camera-height-1.6m-outdoor-typical-via-layout"``.
* ``"metric-indoor"``: ``depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf`` (Hypersim,
  max 20 m) and ``"metric-outdoor"``: ``...-Metric-Outdoor-Small-hf`` (Virtual KITTI, max 80 m).
  Their output is metres and is used as it is. Recorded policy: ``"metric-model"``.
* ``"auto"``: the relative model, except that for each photo the layout prior's scene
  classifier picks the metric-indoor or metric-outdoor checkpoint when its weights are already
  local (never downloaded behind the user's back).

Depth steps are snapped to image edges (``models.depth.refine``): the network's output is
upsampled and blurs outlines into flying pixels otherwise. Images smaller than the model's
input size are processed at their own size (a multiple of 14), so new frames of a world,
estimated at reduced width, cost a fraction of the photo's estimate on a CPU.

Whether a checkpoint is metric is read from its config (``depth_estimation_type``), so a local
directory given with ``model=`` behaves according to what it holds. Loading goes through the
shared :data:`models.manager.MANAGER` (one copy per model id, dtype and device).
torch and transformers are imported only when the backend is built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.depth.base import DepthError, DepthResult, check_inputs
from models.depth.refine import snap_depth_edges

VARIANT_MODELS: dict[str, str] = {
    "relative": "depth-anything/Depth-Anything-V2-Small-hf",
    "metric-indoor": "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf",
    "metric-outdoor": "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf",
}
DEFAULT_MODEL = VARIANT_MODELS["relative"]
BACKEND = "depth-anything-v2"
OFFLINE_ALTERNATIVE = "--depth layout"
# Disparity below this fraction of the image's high percentile counts as "very far" (sky).
_MIN_REL_DISPARITY = 0.01


def _load_error(model: str, exc: BaseException) -> DepthError:
    """A DepthError (what the CLI and studio catch) carrying the manager's load message."""
    from models.manager import load_error

    return DepthError(str(load_error(BACKEND, model, OFFLINE_ALTERNATIVE, exc)))


def _load(model_id: str, dtype: Any, device: str, local_files_only: bool) -> tuple[Any, Any]:
    """(image processor, model on ``device`` in ``dtype``, eval mode) for ``model_id``."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    path = Path(model_id).expanduser()
    looks_local = path.is_absolute() or model_id.startswith((".", "~"))
    if looks_local and not path.is_dir():
        raise _load_error(model_id, FileNotFoundError(f"no directory {path}"))
    from models.manager import ModelError, ensure_available

    try:  # fail at once when the weights are neither here nor reachable (no hub retries)
        source = ensure_available("depth-anything-v2", model_id, "--depth layout")
    except ModelError as exc:
        raise DepthError(str(exc)) from exc
    try:
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
        model = AutoModelForDepthEstimation.from_pretrained(
            source, local_files_only=local_files_only
        )
    except (OSError, ValueError, ImportError, KeyError) as exc:
        # OSError covers missing files and LocalEntryNotFoundError (offline); ValueError covers
        # HFValidationError (a malformed repo id) and configs of another model type.
        raise _load_error(model_id, exc) from exc
    return processor, model.to(device=device, dtype=dtype).eval()


class DepthAnythingV2:
    """Monocular depth with a Depth Anything (V2) checkpoint.

    Args:
        model: hub id or local directory with config.json, weights and preprocessor_config.json;
            None -> the default id of ``variant``.
        variant: "relative", "metric-indoor", "metric-outdoor" or "auto" (see the module
            docstring). Asking for a metric variant with a relative checkpoint is an error.
        device: "cpu", "cuda" or None (CUDA when available, else CPU).
        dtype: torch dtype or its name ("float32", "bfloat16"); None -> bf16/fp16 on CUDA,
            fp32 on CPU (the manager's policy).
        camera_height: metres, for the layout prior that sets the scale of relative models
            (None: the layout prior's own, from the scene).
        local_files_only: never try the network (also implied by HF_HUB_OFFLINE=1).
    """

    name = BACKEND

    def __init__(
        self,
        model: str | Path | None = None,
        variant: str = "relative",
        device: str | None = None,
        dtype: Any = None,
        camera_height: float | None = None,
        local_files_only: bool = False,
    ) -> None:
        if variant not in (*VARIANT_MODELS, "auto"):
            raise DepthError(
                f"unknown Depth Anything variant {variant!r}; choose one of: "
                + ", ".join([*VARIANT_MODELS, "auto"])
            )
        try:
            import torch

            from models.manager import MANAGER, ModelError, pick_device
        except ImportError as exc:  # pragma: no cover - the project installs both
            raise DepthError(
                "Depth Anything needs torch and transformers; install them or use --depth layout"
            ) from exc
        self.variant = variant
        default = VARIANT_MODELS["relative" if variant == "auto" else variant]
        self.model_id = str(model) if model is not None else default
        self._local_files_only = local_files_only
        self._dtype_arg = dtype
        try:
            self.device = pick_device(device)
        except ModelError as exc:
            raise DepthError(str(exc)) from exc
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise DepthError("dtype must be a torch dtype name such as float32 or bfloat16")
        self.processor, self.model = MANAGER.get(
            BACKEND,
            self.model_id,
            lambda mid, dt, dev: _load(mid, dt, dev, local_files_only),
            device=self.device,
            dtype=dtype,
        )
        self.dtype = next(self.model.parameters()).dtype
        self.metric = getattr(self.model.config, "depth_estimation_type", "relative") == "metric"
        if variant not in ("relative", "auto") and not self.metric:
            raise DepthError(
                f"the model {self.model_id!r} predicts relative depth, but the {variant} variant "
                "needs a metric checkpoint (config depth_estimation_type 'metric'); drop the "
                "variant or pass a metric model"
            )
        self.camera_height = None if camera_height is None else float(camera_height)

    def _network(self, scene: str | None) -> tuple[Any, Any, str]:
        """(processor, model, model id) for this photo: the ``auto`` variant takes the scene's
        metric checkpoint when its weights are local, else the loaded model."""
        if self.variant != "auto" or scene not in ("indoor", "outdoor"):
            return self.processor, self.model, self.model_id
        from models.manager import MANAGER, weights_present

        metric_id = VARIANT_MODELS[f"metric-{scene}"]
        if not weights_present(metric_id):
            return self.processor, self.model, self.model_id
        proc, model = MANAGER.get(
            BACKEND,
            metric_id,
            lambda mid, dt, dev: _load(mid, dt, dev, True),
            device=self.device,
            dtype=self._dtype_arg,
        )
        return proc, model, metric_id

    def predict_raw(self, rgb: np.ndarray, network: tuple[Any, Any] | None = None) -> np.ndarray:
        """(H, W) float32 raw network output (disparity-like, or metres for metric models).

        An image smaller than the processor's input size is processed at its own size
        (rounded up to a multiple of 14): upsampling it would only cost time.
        """
        import torch

        processor, model = network or (self.processor, self.model)
        H, W = rgb.shape[:2]
        size = getattr(processor, "size", None) or {}
        target = max(int(size.get("height", 518)), int(size.get("width", 518)))
        kwargs: dict[str, Any] = {}
        if max(H, W) < target:
            kwargs["size"] = {"height": -(-H // 14) * 14, "width": -(-W // 14) * 14}
        inputs = processor(images=rgb, return_tensors="pt", **kwargs)
        pixels = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            out = model(pixel_values=pixels).predicted_depth  # (1, h, w)
        pred = torch.nn.functional.interpolate(
            out[:, None].float(), size=(H, W), mode="bicubic", align_corners=False
        )[0, 0]
        return pred.cpu().numpy().astype(np.float32)

    def estimate(self, rgb: np.ndarray, K: np.ndarray) -> DepthResult:
        """Metric depth (H, W) for ``rgb`` (H, W, 3) uint8 with intrinsics ``K`` (3, 3)."""
        from models.depth.layout import LayoutDepth

        t0 = time.perf_counter()
        rgb, K = check_inputs(rgb, K)
        prior = LayoutDepth(camera_height=self.camera_height).estimate(rgb, K)
        processor, model, model_id = self._network(prior.meta.get("scene"))
        raw = self.predict_raw(rgb, (processor, model))
        raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"
        meta: dict[str, Any] = {
            "model": model_id,
            "variant": self.variant,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        if metric:
            depth = np.maximum(raw, 1e-3)
            policy = "metric-model"
        else:
            # Relative disparity -> depth up to scale; very small disparity = very far.
            hi = float(np.percentile(raw, 99))
            if not hi > 0:
                hi = float(np.abs(raw).max()) or 1.0
            disp = np.clip(raw / hi, _MIN_REL_DISPARITY, None)
            depth = 1.0 / disp
            # Metric scale from the layout prior (camera height): median ratio over the pixels
            # the prior trusts (not sky, not depth edges).
            trust = prior.confidence > 0.2
            if trust.sum() < 0.05 * trust.size:
                trust = np.ones_like(trust)
            scale = float(np.median(prior.depth[trust]) / np.median(depth[trust]))
            depth = depth * scale
            meta["scale_from_layout"] = scale
            meta["camera_height_m"] = prior.meta.get("camera_height_m")
            policy = f"{prior.scale_policy}-via-layout"
        radius = max(1, round(3 * rgb.shape[1] / 512))
        depth = snap_depth_edges(depth.astype(np.float32), rgb, radius)
        conf = edge_confidence(depth, 0.9)
        meta["seconds"] = time.perf_counter() - t0
        meta["scene"] = prior.meta.get("scene")
        return DepthResult(depth, conf, prior.up_cam, policy, meta)


def edge_confidence(depth: np.ndarray, base: float | np.ndarray) -> np.ndarray:
    """(H, W) float32 confidence: ``base`` (scalar or (H, W)), lowered at depth edges, where
    networks blur foreground into background. ``depth`` (H, W) > 0."""
    logd = np.log(np.maximum(depth, 1e-6)).astype(np.float32)
    grad = np.hypot(cv2.Sobel(logd, cv2.CV_32F, 1, 0), cv2.Sobel(logd, cv2.CV_32F, 0, 1)) / 8
    return (base * np.exp(-grad / 0.05)).astype(np.float32)
