"""Settings of the exemplar painter (one place, so every stage reads the same numbers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PainterConfig:
    """Settings of :func:`paint_exemplar`.

    patch: patch side (odd). crack_radius: holes no deeper than this (px) take the smooth
    crack fill. min_known: below this fraction of seen pixels the frame gets the smooth fill (and
    a note). lam_depth / lam_normal: penalties on squared log-depth and normal differences of
    target and source centres, lam_energy on squared log texture energy (with energy_floor
    added before the log: below it, texture is invisible); fg_tol: a source nearer than the target by more than this (log
    depth) is another layer, never copied. scale_range: clamp of the perspective scale.
    em_coarse / em_fine: EM iterations per level; pm_iters: PatchMatch sweeps per EM iteration.
    max_stretch: routed pixels magnified more than this are not sources (seen, low detail).
    smooth_energy: border gradient energy (mean squared 0..1 colour gradient) below which a
    hole keeps the smooth fill, blended in up to twice that.
    """

    patch: int = 7
    crack_radius: int = 2
    min_known: float = 0.03
    lam_depth: float = 8.0
    lam_normal: float = 3.0
    lam_energy: float = 0.3
    energy_floor: float = 1e-5
    fg_tol: float = 0.15
    scale_range: tuple[float, float] = (0.5, 2.0)
    em_coarse: int = 3
    pm_iters: int = 1
    min_level_size: int = 16
    max_stretch: float = 2.5
    smooth_energy: float = 2e-4
    band: int = 8
    margin: int = 48
    em_half: int = 2
    search_radius: int = 8
