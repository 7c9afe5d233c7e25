"""``reproject``: the offline synthesis default. No weights, no randomness.

Memory-covered pixels are routed through unchanged (bit for bit); only the never-seen pixels are
painted, from the background side of the hole (see ``models.geometry.fill``).
"""

from __future__ import annotations

from models.geometry.fill import fill_depth, inpaint_rgb
from models.synthesis.base import SynthesisRequest, SynthesisResult, register_synthesis_backend


class ReprojectSynthesis:
    name = "reproject"
    chunk_size = 1

    def __init__(self, work_width: int = 192) -> None:
        self.work_width = work_width

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]:
        out = []
        for r in requests:
            known = r.valid
            if not bool(known.any()):
                # Nothing seen at all (e.g. turned to face a wall never observed): grey, flagged.
                rgb = r.warped_rgb.new_full(r.warped_rgb.shape, 0.5)
                out.append(SynthesisResult(rgb, known.clone(), None, {"painted": 1.0}))
                continue
            depth = fill_depth(r.warped_depth, known)
            rgb = inpaint_rgb(r.warped_rgb, known, depth, work_width=self.work_width)
            painted = float((~known).float().mean())
            out.append(SynthesisResult(rgb, known.clone(), depth, {"painted": painted}))
        return out


@register_synthesis_backend("reproject")
def _factory(**options) -> ReprojectSynthesis:
    return ReprojectSynthesis(**options)
