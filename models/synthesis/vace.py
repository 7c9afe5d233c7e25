"""``vace``: chunks of frames painted by Wan VACE masked video completion (diffusers
``WanVACEPipeline``), conditioned on exactly what the spatial memory routes into each view.

VACE takes a *video* and a *mask of what to keep (0) and what to generate (1)*; that is our
routing. Per chunk of target cameras (the pipeline hands ``chunk_size`` of them over together):

* the video is ``[context frames] + [targets] (+ padding)``: the world's last finished frame(s)
  (``SynthesisRequest.history``, mask 0: fully kept, so motion and appearance carry over from
  the previous chunk, or from the photo for the first one), then each target's warped memory
  render with its never-seen holes pre-filled (``models.geometry.fill``, so the VAE sees no
  black); Wan takes 4k+1 frames, so the chunk is padded with copies of its last target, which
  are generated and thrown away;
* the mask is the never-seen pixels, dilated a few pixels and rounded out to whole VAE cells
  (8x8 px), so no latent cell mixes kept and generated content. Routed pixels that are strongly
  magnified in the target (``SynthesisRequest.stretch`` > ``max_stretch``) are marked "generate"
  too, with their routed content left in the video for the model to see: walking forward gains
  detail instead of blur. Pixels seen at native resolution stay exact, so revisits stay identical;
* the reference image is the seed photo (``SynthesisRequest.reference``);
* frames run at the model's trained area (480x832 = 399,360 px, aspect kept, sides multiples of
  16), resized in and out; after decoding, every exact pixel is pasted back bit for bit, with a
  feather on the painted side only.

Before any weight is read, the folder is checked (class, components, tokenizer, VACE channels)
and a VRAM plan is made (:mod:`models.synthesis.vram`): the placement, VAE tiling and the
estimated peak and time, printed and stored in world.json (``info``). Without CUDA, a model that
would take hours is refused with the estimate unless ``force_cpu``. The transformer stays
reachable as ``denoiser`` (and the pipeline as ``pipe``) for LoRA adapters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.manager import ModelError
from models.synthesis.base import SynthesisRequest, register_synthesis_backend
from models.synthesis.wan import ChunkInputs, WanPainter, _run, check_wan_folder

BACKEND = "vace"
DEFAULT_MODEL = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"


def check_folder(folder: Path, model_id: str) -> dict[str, Any]:
    """Raise ModelError unless ``folder`` holds a complete WanVACEPipeline whose transformer
    takes this VAE's control channels (2 x z_dim + 8 x 8 mask channels); JSON only."""
    index = check_wan_folder(folder, model_id, BACKEND, {"WanVACEPipeline": ""})
    tcfg = json.loads((folder / "transformer" / "config.json").read_text())
    vcfg = json.loads((folder / "vae" / "config.json").read_text())
    z, cell = int(vcfg.get("z_dim", 16)), 2 ** len(vcfg.get("temperal_downsample", [0] * 3))
    if not tcfg.get("vace_layers") or int(tcfg.get("vace_in_channels", 0)) != 2 * z + cell**2:
        raise ModelError(
            f"{model_id!r}: its transformer is not a VACE transformer for this VAE (it takes "
            f"{tcfg.get('vace_in_channels')} control channels; the VAE needs {2 * z + cell**2})"
        )
    return index


class VaceSynthesis(WanPainter):
    """Wan VACE masked video completion (see the module docstring). On top of
    :class:`WanPainter`'s arguments: ``reference`` conditions on the seed photo as VACE's
    reference image; ``conditioning_scale`` weighs the VACE control branch."""

    name = BACKEND
    default_model = DEFAULT_MODEL
    references = 1

    def __init__(
        self, *args: Any, reference: bool = True, conditioning_scale: float = 1.0, **kw: Any
    ) -> None:
        self.reference, self.conditioning_scale = bool(reference), float(conditioning_scale)
        self.references = int(self.reference)
        super().__init__(*args, **kw)

    check = staticmethod(check_folder)

    def pipeline_class(self) -> Any:
        from diffusers import WanVACEPipeline

        return WanVACEPipeline

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "reference": self.reference,
                "conditioning_scale": self.conditioning_scale}  # fmt: skip

    def _generate(self, inputs: ChunkInputs, first: SynthesisRequest, size: tuple[int, int]):
        from PIL import Image

        pipe, (w, h) = self.pipe, size
        pos, neg = self._prompt_embeds(first.prompt or self.prompt)
        ref = None
        if self.reference and first.reference is not None:
            img = first.reference.float().permute(2, 0, 1)[None]
            img = F.interpolate(img, size=(h, w), mode="bilinear", antialias=True)[0]
            ref = Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy())
        n = len(inputs.video)
        # A scheduler per call: the shift is this backend's, while the pipe is shared.
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, flow_shift=self.flow_shift
        )
        kwargs = dict(
            video=[inputs.video], mask=[inputs.mask], reference_images=ref,
            prompt_embeds=pos, negative_prompt_embeds=neg,
            conditioning_scale=self.conditioning_scale, height=h, width=w, num_frames=n,
            num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(int(first.seed)),
        )  # fmt: skip
        return _run(pipe, kwargs, self._lease_seconds(size, n))


@register_synthesis_backend(BACKEND)
def _factory(**options: Any) -> VaceSynthesis:
    return VaceSynthesis(**options)
