"""``reproject``: the offline synthesis default. No weights; deterministic under the seed.

Memory-covered pixels are routed through unchanged (bit for bit); only the never-seen pixels are
painted. Two painters:

* ``exemplar`` (default): geometry-aware exemplar completion (``models.synthesis.exemplar``):
  real pixels looked up in memory frames where they saw the spot without depth, then texture
  copied from seen pixels of the same layer, orientation and texture strength, coarse to fine;
  thin cracks take the cheap smooth path. Options are :class:`PainterConfig` fields;
* ``smooth``: the earlier background-first push-pull + Telea fill (``models.geometry.fill``),
  kept as the baseline the evaluation compares against.
"""

from __future__ import annotations

import numpy as np
import torch

from models.geometry.fill import fill_depth, inpaint_rgb
from models.synthesis.base import (
    SynthesisError,
    SynthesisRequest,
    SynthesisResult,
    register_synthesis_backend,
)

PAINTERS = ("exemplar", "smooth")


class ReprojectSynthesis:
    """Routes memory, paints the rest. ``painter``: "exemplar" or "smooth" (see module doc);
    ``work_width``: Telea's working width for the smooth painter."""

    name = "reproject"
    chunk_size = 1

    def __init__(self, painter: str = "exemplar", work_width: int = 192, **painter_options) -> None:
        if painter not in PAINTERS:
            raise SynthesisError(
                f"unknown painter {painter!r}; choose one of {', '.join(PAINTERS)}"
            )
        self.painter = painter
        self.work_width = work_width
        self.config = None
        if painter == "exemplar":
            from models.synthesis.exemplar import PainterConfig, warm_up

            self.config = PainterConfig(**painter_options)
            warm_up(background=True)  # compile while the caller seeds the world
        elif painter_options:
            raise SynthesisError(f"options {sorted(painter_options)} need painter='exemplar'")

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]:
        return [self._one(r) for r in requests]

    def _one(self, r: SynthesisRequest) -> SynthesisResult:
        known = r.valid
        if not bool(known.any()):
            # Nothing seen at all (e.g. turned to face a wall never observed): grey, flagged.
            rgb = r.warped_rgb.new_full(r.warped_rgb.shape, 0.5)
            note = "nothing of this view was seen before: flat grey"
            return SynthesisResult(rgb, known.clone(), None, {"painted": 1.0, "note": note})
        if self.painter == "smooth":
            depth = fill_depth(r.warped_depth, known)
            rgb = inpaint_rgb(r.warped_rgb, known, depth, work_width=self.work_width)
            painted = float((~known).float().mean())
            return SynthesisResult(rgb, known.clone(), depth, {"painted": painted})
        from models.synthesis.exemplar import View, paint_exemplar

        stretch = None if r.stretch is None else r.stretch.numpy()
        views = [
            View(v.rgb.numpy(), v.depth.numpy(), v.camera.K, v.camera.c2w)
            for v in (r.sources or [])
        ]
        res = paint_exemplar(
            r.warped_rgb.numpy(),
            known.numpy(),
            r.warped_depth.numpy(),
            r.camera.K,
            seed=r.seed,
            stretch=stretch,
            config=self.config,
            c2w=r.camera.c2w,
            views=views,
            observed=None if r.observed is None else r.observed.numpy(),
            up_cam=None if r.up is None else r.camera.c2w[:3, :3].T @ np.asarray(r.up, float),
        )
        rgb = torch.from_numpy(np.ascontiguousarray(res.rgb))
        depth = torch.from_numpy(np.ascontiguousarray(res.depth))
        return SynthesisResult(rgb, known.clone(), depth, res.meta)


@register_synthesis_backend("reproject")
def _factory(**options) -> ReprojectSynthesis:
    return ReprojectSynthesis(**options)
