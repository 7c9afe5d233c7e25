"""``wan-i2v``: chunks of frames painted by a Wan image-to-video model (Wan 2.2 TI2V-5B, Wan 2.1
I2V), camera-controlled without training by warped-latent guidance.

The chunk is laid out as for ``vace`` (:func:`models.synthesis.wan.build_inputs`): the world's
last finished frame first, then the targets' pre-filled warps (padded to 4k+1 frames). The first
frame is the model's conditioning image, so each chunk starts exactly where the last one ended.
Then, as the ``video`` backend does for Stable Video Diffusion:

1. the whole chunk is encoded by the Wan VAE into ``z_mem`` (normalised as the pipeline does);
2. a latent cell is *covered* only if every pixel under it is kept in every frame of its
   temporal group (Wan's VAE packs frame 0 alone, then groups of 4 frames per latent frame);
3. after every scheduler step (``callback_on_step_end``) the covered cells are replaced by
   ``z_mem`` noised to the current flow-matching level with one fixed noise per chunk; after
   the last step they hold the clean ``z_mem``. The camera path and the memory are thereby
   imposed, and the model paints the rest;
4. after decoding, the exact pixels are pasted back bit for bit (feathered on the painted side).

The scheduler is flow-matching Euler with the model's shift (5 for TI2V-5B at 720p, 3 for the
480p models): its sigmas give the exact noise level the guidance needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.manager import ModelError
from models.synthesis.base import SynthesisRequest, register_synthesis_backend
from models.synthesis.video import WarpedLatentGuidance
from models.synthesis.wan import TRAINED_AREA, ChunkInputs, WanPainter, _run, check_wan_folder

BACKEND = "wan-i2v"
DEFAULT_MODEL = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
TI2V_AREA = 704 * 1280  # Wan 2.2 TI2V-5B's 720p family


def check_folder(folder: Path, model_id: str) -> dict[str, Any]:
    """Raise ModelError unless ``folder`` holds a Wan model that starts from an image: a
    WanImageToVideoPipeline, or a WanPipeline with ``expand_timesteps`` (TI2V); JSON only."""
    accepts = {"WanImageToVideoPipeline": "", "WanPipeline": ""}
    index = check_wan_folder(folder, model_id, BACKEND, accepts)
    if index["_class_name"] == "WanPipeline" and not index.get("expand_timesteps"):
        raise ModelError(
            f"{model_id!r} is a Wan text-to-video model: it cannot start from an image. Use an "
            f"image-to-video model such as {DEFAULT_MODEL}, or --synthesis vace"
        )
    tcfg = json.loads((folder / "transformer" / "config.json").read_text())
    if tcfg.get("image_dim") and not (folder / "image_encoder").is_dir():
        raise ModelError(f"{model_id!r} has no image_encoder/ component (an incomplete download?)")
    return index


def latent_cover(keep: torch.Tensor, cell: int) -> torch.Tensor:
    """(T, h, w) bool: latent cells every pixel of which is kept in every frame they encode.

    keep: (N, H, W) bool with N = 4(T-1)+1 and H, W multiples of ``cell``. Latent frame 0 is
    pixel frame 0; latent frame t >= 1 is pixel frames 4t-3 .. 4t.
    """
    lost = F.max_pool2d((~keep).float()[:, None], cell, stride=cell)[:, 0]  # (N, h, w)
    groups = [lost[:1]] + [lost[i : i + 4].amax(0, keepdim=True) for i in range(1, len(lost), 4)]
    return torch.cat(groups) == 0


class WanI2VSynthesis(WanPainter):
    """Wan image-to-video with warped-latent guidance (see the module docstring); takes the
    arguments of :class:`models.synthesis.wan.WanPainter`. ``flow_shift`` None picks the
    model's own (5 for TI2V-5B, 3 otherwise)."""

    name = BACKEND
    default_model = DEFAULT_MODEL
    encodes, references = 1, 0

    def __init__(self, *args: Any, flow_shift: float | None = None, **kw: Any) -> None:
        super().__init__(*args, flow_shift=flow_shift or 0.0, **kw)
        if not flow_shift:
            self.flow_shift = 5.0 if self.ti2v else 3.0

    check = staticmethod(check_folder)

    @property
    def ti2v(self) -> bool:
        return bool(self.index.get("expand_timesteps"))

    @property
    def trained_area(self) -> int:  # type: ignore[override]
        return TI2V_AREA if self.ti2v else TRAINED_AREA

    def pipeline_class(self) -> Any:
        from diffusers import WanImageToVideoPipeline

        return WanImageToVideoPipeline

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) float [0, 1] -> (1, C, T, h/s, w/s) normalised latents, float32 (the
        VAE's mode: deterministic)."""
        vae = self.pipe.vae
        x = (video.permute(1, 0, 2, 3)[None] * 2 - 1).to(self.pipe._execution_device, vae.dtype)
        z = vae.encode(x).latent_dist.mode().float()
        mean = torch.tensor(vae.config.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        return ((z - mean) / std).cpu()

    def _generate(self, inputs: ChunkInputs, first: SynthesisRequest, size: tuple[int, int]):
        from diffusers import FlowMatchEulerDiscreteScheduler
        from PIL import Image

        pipe, (w, h), n = self.pipe, size, len(inputs.video)
        pos, neg = self._prompt_embeds(first.prompt or self.prompt)
        z_mem = self.encode(inputs.video)
        self.last_cover = latent_cover(inputs.mask[:, 0] < 0.5, self.spec.vae_spatial)
        cover = self.last_cover[None, None]
        # One fixed noise per chunk from its own generator: the pipeline's stays untouched.
        gen = torch.Generator("cpu").manual_seed(int(first.seed) + 1)
        noise = torch.randn(z_mem.shape, generator=gen)
        guide = WarpedLatentGuidance(z_mem, cover, noise, self.steps)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=self.flow_shift)
        cond = Image.fromarray((inputs.video[0].permute(1, 2, 0) * 255).round().byte().numpy())
        kwargs = dict(
            image=cond, prompt_embeds=pos, negative_prompt_embeds=neg, height=h, width=w,
            num_frames=n, num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(int(first.seed)),
            callback_on_step_end=guide,
        )  # fmt: skip
        return _run(pipe, kwargs, self._lease_seconds(size, n))


@register_synthesis_backend(BACKEND)
def _factory(**options: Any) -> WanI2VSynthesis:
    return WanI2VSynthesis(**options)
