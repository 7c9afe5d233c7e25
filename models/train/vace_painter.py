"""``vace`` as a trainable painter (:class:`PainterDenoiser`): the transformer of a Wan VACE
pipeline, conditioned as the ``vace`` backend conditions it, trained by flow matching.

A stored sample becomes the chunk the backend would build for one target: the video is
``[the frame before] + [the target's warped memory, holes pre-filled] + padding`` (Wan takes
4k+1 frames) and the mask marks what the model generates, both from
:func:`models.synthesis.wan.build_inputs`, the backend's own code, at the backend's run size.
The pipeline's ``preprocess_conditions``, ``prepare_video_latents`` and ``prepare_masks`` turn
them into the control latents, with the sequence's first frame as the reference image (the seed
photo's place at inference). The clean target is the same video with the real target frames.

Flow matching: ``x_t = (1 - s) x0 + s e``, the network predicts ``e - x0`` at timestep 1000 s,
with s drawn through the scheduler's shift (the noise levels inference visits). The loss covers
the target's latent frames only (not the kept context frame, not the reference). The *history*
is the inactive control latents (what is kept: the frame before and the routed pixels);
self-augmentation decodes the model's one-step estimate of it, puts that on the kept pixels and
rebuilds the control latents.

Clips hold one target (padded to 5 frames, as the backend pads a short chunk): the adapter
learns appearance and hole painting; longer-range temporal behaviour is not trained here.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.manager import ModelError, pick_device
from models.synthesis.base import SynthesisRequest
from models.synthesis.vace import DEFAULT_MODEL, check_folder
from models.synthesis.wan import OFFLINE_ALTERNATIVE, TRAINED_AREA, build_inputs, run_size
from models.train.denoiser import (
    Cond,
    Encoded,
    PainterBatch,
    TrainError,
    default_weight_dtype,
    drop_text,
    fill_untrusted,
)

DILATE = 4  # the backend's defaults (WanPainter)
MAX_STRETCH = 1.5


def _area(width: int, height: int, resolution: int | None) -> int:
    """Pixels to run at: the trained area, or a long side of ``resolution`` px."""
    if resolution is None:
        return TRAINED_AREA
    return int(resolution * resolution * min(width, height) / max(width, height))


def prepare_batch(samples: list[dict[str, Any]], size: tuple[int, int], cell: int) -> PainterBatch:
    """Stored samples -> video chunks at the run size (module-level for DataLoader workers).

    PainterBatch fields hold clips here: target / image (B, 3, N, h, w) in [0, 1] (the real
    clip / the backend's conditioning video, frame 0 the kept frame before), hole
    (B, 1, N, h, w) (1 = generate), trust (B, 1, N, h, w) (0 on the kept frame);
    ``extra["reference"]``: each sample's reference image (H, W, 3) float or None.
    """
    w, h = size
    targets, videos, masks, trusts, refs = [], [], [], [], []
    for s in samples:
        if s.get("context") is None:
            raise TrainError("the dataset has no context frames; prepare it again with this Loci")
        valid = torch.from_numpy(np.asarray(s["valid"], bool))
        stretch = s.get("stretch")
        req = SynthesisRequest(
            0, None, torch.from_numpy(np.asarray(s["warped_rgb"], np.float32)),
            torch.from_numpy(np.asarray(s["warped_depth"], np.float32)), valid,
            stretch=None if stretch is None else torch.from_numpy(np.asarray(stretch, np.float32)),
            history=torch.from_numpy(np.asarray(s["context"])).float()[None] / 255.0,
        )  # fmt: skip
        inputs = build_inputs([req], size, cell=cell, context=1, dilate=DILATE,
                              max_stretch=MAX_STRETCH)  # fmt: skip
        n = len(inputs.video)
        trust = torch.from_numpy(np.asarray(s["trust"], bool))
        target = fill_untrusted(torch.from_numpy(np.asarray(s["target"])).float() / 255.0, trust)

        def resize(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True)

        tgt = resize(target.permute(2, 0, 1)[None]).clamp(0, 1)
        clip = torch.cat([inputs.video[:1], tgt.expand(n - 1, -1, -1, -1)])
        ok = (resize((~trust).float()[None, None]) <= 1e-3).float()
        tr = torch.cat([torch.zeros_like(ok), ok.expand(n - 1, -1, -1, -1)])  # context: no loss
        targets.append(clip.permute(1, 0, 2, 3))
        videos.append(inputs.video.permute(1, 0, 2, 3))
        masks.append(inputs.mask.permute(1, 0, 2, 3))
        trusts.append(tr.permute(1, 0, 2, 3))
        ref = s.get("reference")
        refs.append(None if ref is None else torch.from_numpy(np.asarray(ref)).float() / 255.0)
    batch = PainterBatch(torch.stack(targets), torch.stack(videos), torch.stack(masks),
                         torch.stack(trusts), {"reference": refs})  # fmt: skip
    batch.extra = {"reference": refs}
    return batch


class VaceDenoiser:
    """The trainable ``vace`` painter.

    Args:
        model: hub id or local folder of a WanVACEPipeline (default: the backend's).
        device / weight_dtype: as :class:`models.train.sd_painter.SDInpaintDenoiser`.
        prompt: the text the backend paints with ("" by default, as the backend).
        resolution: long side to run at (None: the backend's trained area, 480x832 pixels).
        sample_size: (width, height) of the stored samples. reference: condition on the
            sequence's first frame (the backend's default). conditioning_scale: as the backend.
    """

    name = "vace"
    network_name = "transformer"
    default_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(
        self,
        model: str | Path | None = None,
        device: str | None = None,
        weight_dtype: torch.dtype | None = None,
        prompt: str | None = None,
        resolution: int | None = None,
        sample_size: tuple[int, int] = (512, 384),
        reference: bool = True,
        conditioning_scale: float = 1.0,
        flow_shift: float = 3.0,
    ) -> None:
        from diffusers import AutoencoderKLWan, WanVACEPipeline

        from models.manager import resolve_pipeline_dir
        from models.synthesis import vram

        self.model_id = str(model or DEFAULT_MODEL)
        self.device = torch.device(pick_device(device))
        self.weight_dtype = weight_dtype or default_weight_dtype(self.device)
        folder = resolve_pipeline_dir(self.name, self.model_id, OFFLINE_ALTERNATIVE)
        check_folder(folder, self.model_id)
        spec = vram.spec_from_folder(folder, self.model_id)
        try:
            vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32)
            pipe = WanVACEPipeline.from_pretrained(
                str(folder), vae=vae, dtype=weight_dtype, local_files_only=True
            )
        except Exception as e:  # corrupt weights, version mismatch
            raise ModelError(f"cannot load {self.model_id} for training: {e}") from e
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        for m in (pipe.transformer, pipe.vae, pipe.text_encoder):
            m.requires_grad_(False)
        pipe.vae.eval()
        pipe.text_encoder.eval()
        self.pipeline, self.network = pipe, pipe.transformer
        self.cell, self.multiple = spec.vae_spatial, spec.multiple
        self.temporal = int(pipe.vae_scale_factor_temporal)
        self.size = run_size(*sample_size, self.multiple, _area(*sample_size, resolution))
        tcfg = json.loads((folder / "transformer" / "config.json").read_text())
        self.num_timesteps = 1000
        self.flow_shift = float(flow_shift)
        self.reference, self.conditioning_scale = bool(reference), float(conditioning_scale)
        self._scale = torch.full((len(tcfg["vace_layers"]),), self.conditioning_scale)
        vcfg = pipe.vae.config
        self._mean = torch.tensor(vcfg.latents_mean).view(1, -1, 1, 1, 1).to(self.device)
        self._std = torch.tensor(vcfg.latents_std).view(1, -1, 1, 1, 1).to(self.device)
        self.prompt = prompt or ""
        with torch.no_grad():
            emb, _ = pipe.encode_prompt([self.prompt, ""], None, False, device=self.device)
        self._text, self._empty = emb[:1], emb[1:]
        pipe.text_encoder.to("cpu")  # the prompts are encoded: its memory goes to the network

    @property
    def prepare(self):
        return functools.partial(prepare_batch, size=self.size, cell=self.cell)

    # -- latents -------------------------------------------------------------------------------
    def _reference(self, ref: torch.Tensor | None) -> Any:
        from models.synthesis.vace import reference_image

        return reference_image(ref, self.size) if self.reference and ref is not None else None

    def _control(self, video: torch.Tensor, mask: torch.Tensor, ref: Any,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, int]:  # fmt: skip
        """The pipeline's control latents (1, 96, F', h, w) for one clip, and its reference
        count: exactly the calls ``WanVACEPipeline.__call__`` makes."""
        pipe, (w, h) = self.pipeline, self.size
        n = video.shape[1]
        v, m, refs = pipe.preprocess_conditions(
            [video.permute(1, 0, 2, 3)], [mask.permute(1, 0, 2, 3)], ref, 1, h, w, n,
            torch.float32, self.device,
        )  # fmt: skip
        lat = pipe.prepare_video_latents(v, m, refs, generator, self.device)
        masks = pipe.prepare_masks(m, refs, generator)
        return torch.cat([lat, masks], 1), len(refs[0])

    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(1, 3, N, h, w) in [0, 1] -> normalized latents, as the pipeline encodes conditions."""
        from diffusers.pipelines.wan.pipeline_wan_vace import retrieve_latents

        x = (video * 2 - 1).to(self.device, self.pipeline.vae.dtype)
        lat = retrieve_latents(self.pipeline.vae.encode(x), None, sample_mode="argmax")
        return (lat.float() - self._mean) / self._std

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents.float() * self._std + self._mean
        out = self.pipeline.vae.decode(x.to(self.pipeline.vae.dtype), return_dict=False)[0]
        return ((out.float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode(self, batch: PainterBatch, generator: torch.Generator) -> Encoded:
        controls, x0s, weights = [], [], []
        z = int(self.pipeline.vae.config.z_dim)
        refs = batch.extra["reference"]
        for b in range(len(batch)):
            ref = self._reference(refs[b])
            control, nref = self._control(batch.image[b], batch.hole[b], ref, generator)
            x0 = self._encode_video(batch.target[b][None])
            if nref:  # the reference latent leads the sequence, as at inference
                x0 = torch.cat([control[:, :z, :nref].float(), x0], 2)
            trust = batch.trust[b][None].to(self.device)  # (1, 1, N, h, w)
            # Latent frame 0 is video frame 0 (the kept context); frame k covers 4 frames.
            first = trust[:, :, :1]
            rest = trust[:, :, 1:]
            groups = rest.shape[2] // self.temporal
            rest = rest[:, :, : groups * self.temporal].unflatten(2, (groups, self.temporal))
            frames = torch.cat([first, rest.amin(3)], 2)
            cells = -F.max_pool3d(-frames, (1, self.cell, self.cell))
            w = torch.cat([torch.zeros_like(cells[:, :, :nref]), cells], 2)
            controls.append(control)
            x0s.append(x0)
            weights.append((w >= 1 - 1e-6).float())
        control = torch.cat(controls)
        history = control[:, :z].float()
        text = self._text.expand(len(batch), -1, -1)
        cond = {"control": control, "text": text}
        return Encoded(torch.cat(x0s), cond, history, torch.cat(weights))

    # -- flow matching -------------------------------------------------------------------------
    def sample_t(self, n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
        u = lo + (hi - lo) * torch.rand(n, generator=generator)
        shift = self.flow_shift
        sigma = shift * u / (1 + (shift - 1) * u)  # the schedule's shift, as inference visits
        return (sigma * self.num_timesteps).to(self.device)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (t.float() / self.num_timesteps).view(-1, 1, 1, 1, 1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self._sigma(t)
        return (1 - s) * x0 + s * noise

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        dt = self.weight_dtype
        out = self.network(
            hidden_states=x_t.to(dt), timestep=t, encoder_hidden_states=cond["text"].to(dt),
            control_hidden_states=cond["control"].to(dt),
            control_hidden_states_scale=self._scale.to(self.device, dt), return_dict=False,
        )[0]  # fmt: skip
        return out

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - x0

    def estimate_x0(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return x_t - self._sigma(t) * pred.float()

    # -- conditioning edits --------------------------------------------------------------------
    @torch.no_grad()
    def free_condition(self, cond: Cond) -> Cond:
        """Nothing known: an empty video, everything to generate, no reference."""
        control = cond["control"]
        B, _, n_lat, hl, wl = control.shape
        n = (n_lat - 1) * self.temporal + 1
        h, w = hl * self.cell, wl * self.cell
        free, _ = self._control(torch.zeros(3, n, h, w), torch.ones(1, n, h, w), None, None)
        # A reference (if any) keeps its latent frame: pad so the frame counts match.
        if free.shape[2] < n_lat:
            free = torch.cat([torch.zeros_like(free[:, :, : n_lat - free.shape[2]]), free], 2)
        return {**cond, "control": free.expand(B, -1, -1, -1, -1).to(control.dtype)}

    @torch.no_grad()
    def with_history(
        self, cond: Cond, history_x0: torch.Tensor, batch: PainterBatch, generator: torch.Generator
    ) -> Cond:
        """The control whose kept pixels show the decoded ``history_x0``."""
        controls = []
        refs = batch.extra["reference"]
        for b in range(len(batch)):
            nref = int(cond["control"].shape[2] - self._latent_frames(batch.image.shape[2]))
            decoded = self._decode(history_x0[b : b + 1, :, nref:])[0].cpu()  # (3, N, h, w)
            keep = batch.hole[b] < 0.5
            video = torch.where(keep, decoded[:, : batch.image.shape[2]], batch.image[b])
            control, _ = self._control(video, batch.hole[b], self._reference(refs[b]), generator)
            controls.append(control)
        return {**cond, "control": torch.cat(controls).to(cond["control"].dtype)}

    def _latent_frames(self, n: int) -> int:
        return (n - 1) // self.temporal + 1

    def drop_prompt(self, cond: Cond, drop: torch.Tensor) -> Cond:
        return drop_text(cond, drop, self._empty)

    def lora_meta(self) -> dict[str, Any]:
        return {"backend": self.name, "base_model": self.model_id, "prompt": self.prompt,
                "reference": self.reference}  # fmt: skip
