"""Depth Anything V2 through transformers (needs weights: hub id or a local directory).

The relative models predict affine-invariant disparity. It is turned into depth (1 / disparity,
after normalising) and put at metric scale by median-matching the offline layout prior, whose
scale comes from the camera height: the recorded policy is "camera-height-1.6m-via-layout".
Metric checkpoints (config ``depth_estimation_type == "metric"``) are used as they are.
torch and transformers are imported only when the backend is built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.depth.base import DepthError, DepthResult, check_inputs

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# Disparity below this fraction of the image's high percentile counts as "very far" (sky).
_MIN_REL_DISPARITY = 0.01


def _load_error(model: str, exc: Exception) -> DepthError:
    return DepthError(
        f"could not load the depth model {model!r} ({type(exc).__name__}: {exc}). "
        "The weights are not available here (offline, or a wrong name/path). Use the offline "
        "backend instead (--depth layout), or pass a local directory holding the model "
        "(model=/path/to/Depth-Anything-V2-Small-hf)."
    )


class DepthAnythingV2:
    """Monocular depth with a Depth Anything (V2) checkpoint.

    Args:
        model: hub id or local directory with config.json, weights and preprocessor_config.json.
        device: "cpu", "cuda" or None (CUDA when available, else CPU; fp32 either way).
        camera_height: metres, for the layout prior that sets the scale of relative models.
        local_files_only: never try the network (also implied by HF_HUB_OFFLINE=1).
    """

    name = "depth-anything-v2"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        device: str | None = None,
        camera_height: float = 1.6,
        local_files_only: bool = False,
    ) -> None:
        try:
            import torch
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError as exc:  # pragma: no cover - the project installs both
            raise DepthError(
                "Depth Anything needs torch and transformers; install them or use --depth layout"
            ) from exc
        self.model_id = str(model)
        path = Path(self.model_id).expanduser()
        looks_local = path.is_absolute() or self.model_id.startswith((".", "~"))
        if looks_local and not path.is_dir():
            raise _load_error(self.model_id, FileNotFoundError(f"no directory {path}"))
        source = str(path) if path.is_dir() else self.model_id
        try:
            self.processor = AutoImageProcessor.from_pretrained(
                source, local_files_only=local_files_only
            )
            self.model = AutoModelForDepthEstimation.from_pretrained(
                source, local_files_only=local_files_only
            )
        except (OSError, ValueError, ImportError) as exc:
            # OSError covers missing files and LocalEntryNotFoundError (offline); ValueError
            # covers HFValidationError (a malformed repo id).
            raise _load_error(self.model_id, exc) from exc
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model = self.model.to(device=device, dtype=torch.float32).eval()
        self.metric = getattr(self.model.config, "depth_estimation_type", "relative") == "metric"
        self.camera_height = float(camera_height)

    def predict_raw(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 raw network output (disparity-like, or metres for metric models)."""
        import torch

        H, W = rgb.shape[:2]
        inputs = self.processor(images=rgb, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model(**inputs).predicted_depth  # (1, h, w)
        pred = torch.nn.functional.interpolate(
            out[:, None].float(), size=(H, W), mode="bicubic", align_corners=False
        )[0, 0]
        return pred.cpu().numpy().astype(np.float32)

    def estimate(self, rgb: np.ndarray, K: np.ndarray) -> DepthResult:
        """Metric depth (H, W) for ``rgb`` (H, W, 3) uint8 with intrinsics ``K`` (3, 3)."""
        from models.depth.layout import LayoutDepth

        t0 = time.perf_counter()
        rgb, K = check_inputs(rgb, K)
        raw = np.nan_to_num(self.predict_raw(rgb), nan=0.0, posinf=0.0, neginf=0.0)
        prior = LayoutDepth(camera_height=self.camera_height).estimate(rgb, K)
        meta: dict[str, Any] = {"model": self.model_id, "device": self.device}
        if self.metric:
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
            policy = f"camera-height-{self.camera_height:g}m-via-layout"
        depth = depth.astype(np.float32)
        # Confidence: high, except at depth edges where the network blurs foreground/background.
        logd = np.log(depth)
        grad = np.hypot(cv2.Sobel(logd, cv2.CV_32F, 1, 0), cv2.Sobel(logd, cv2.CV_32F, 0, 1)) / 8
        conf = (0.9 * np.exp(-grad / 0.05)).astype(np.float32)
        meta["seconds"] = time.perf_counter() - t0
        meta["scene"] = prior.meta.get("scene")
        return DepthResult(depth, conf, prior.up_cam, policy, meta)
