"""Settings of the exemplar painter (one place, so every stage reads the same numbers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PainterConfig:
    """Settings of :func:`models.synthesis.exemplar.paint_exemplar`.

    patch: patch side in px (odd), at every pyramid level.
    crack_radius: hole pixels no farther than this (px) from a seen pixel, in holes no deeper,
        take the cheap path (weighted mean of background neighbours).
    min_known: below this fraction of seen pixels the frame gets the smooth fill (and a note).
    lam_depth / lam_normal / lam_energy: weights of the squared differences of target and source
        patch centres in log depth, unit normal and log texture energy (``energy_floor`` is
        added before the log: below it, texture is invisible); lam_paint: the price of a source
        that is earlier paint rather than a real observation.
    fg_tol: a source nearer than the target by more than this (log depth) is another depth
        layer (a hole behind an object is filled from behind it): it costs ``fg_penalty``, so
        it is copied only where no source of the right layer exists.
    scale_range: clamp of the perspective scale (target depth / source depth).
    em_coarse / em_half: EM iterations on the coarse levels / on the half-size level;
    pm_iters: PatchMatch sweeps per EM iteration; search_radius: random-search window (px)
        on the levels that start from an upsampled field (the coarsest searches everywhere).
    min_level_size: smallest side of the coarsest level.
    vote_tau: full-size pixels average only the candidate colours within this distance (RGB,
        0..1) of the best-matching one (a robust vote: disagreeing copies do not blur).
    max_stretch: routed pixels magnified more than this are not sources (seen, low detail).
    band: width (px) of the seen ring around a hole that smooth fills read.
    far_radius: the hole's depth is at least the farthest seen border depth within this many
        half-size px (0: off): beside a near object the background continues, not the object.
    cross_ratio: where that makes a hole more than this many times deeper than the far end of
        its own crossing (row or column, the shorter; ``models.geometry.fill.hole_crossings``),
        it read the backdrop around the hole, not what is beside it: the crossing's far end
        decides (a strip beside a pole below the sky line takes the facade, not the sky).
    window_margin: holes are painted in windows with this many seen px around them (0: the
        whole frame always; :mod:`models.synthesis.exemplar.windows`) ...
    window_share: ... unless the windows would cover more than this share of the frame, or
    window_hole: ... the holes more than this share (large holes take sources from anywhere).
    detail_slack: painted pixels may carry this many times the texture strength of the seen
        background around them; sharper paint is low-passed down to it (0: off;
        :mod:`models.synthesis.exemplar.detail`).
    """

    patch: int = 7
    crack_radius: int = 1
    min_known: float = 0.03
    lam_depth: float = 8.0
    lam_normal: float = 3.0
    lam_energy: float = 0.3
    lam_paint: float = 0.5
    energy_floor: float = 1e-5
    fg_tol: float = 0.15
    fg_penalty: float = 100.0
    scale_range: tuple[float, float] = (0.5, 2.0)
    em_coarse: int = 3
    em_half: int = 2
    pm_iters: int = 1
    search_radius: int = 8
    min_level_size: int = 16
    vote_tau: float = 0.02
    max_stretch: float = 2.5
    band: int = 8
    far_radius: int = 24
    cross_ratio: float = 2.0
    window_margin: int = 48
    window_share: float = 0.5
    window_hole: float = 0.05
    detail_slack: float = 1.0
