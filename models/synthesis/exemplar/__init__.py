"""Exemplar-based completion for the offline painter (PatchMatch + voting, geometry-guided).

:func:`paint_exemplar` is the entry point; ``patchmatch`` holds the compiled kernels and
``reference`` their slow, obvious twins; ``guide`` derives what the geometry says.
"""

from models.synthesis.exemplar.config import PainterConfig
from models.synthesis.exemplar.lookup import View
from models.synthesis.exemplar.painter import PaintResult, paint_exemplar

__all__ = ["PaintResult", "PainterConfig", "View", "paint_exemplar"]
