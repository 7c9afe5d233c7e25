"""Exemplar-based completion for the offline painter (PatchMatch + voting, geometry-guided).

:func:`paint_exemplar` is the entry point; ``patchmatch`` holds the compiled kernels and
``reference`` their slow, obvious twins; ``guide`` derives what the geometry says; ``lookup``
reads real pixels from memory frames; ``complete`` runs the coarse-to-fine EM.

The kernels are compiled by numba on first use and cached on disk (``__pycache__``, or the
user cache directory when that is read-only): the first run after an install spends several
seconds compiling. :func:`warm_up` does it ahead of time, in a background thread if asked.
"""

from __future__ import annotations

import threading

import numpy as np

from models.synthesis.exemplar.config import PainterConfig
from models.synthesis.exemplar.lookup import View
from models.synthesis.exemplar.painter import PaintResult, paint_exemplar

__all__ = ["PaintResult", "PainterConfig", "View", "paint_exemplar", "warm_up"]

_warm = threading.Lock()
_warmed = False


def warm_up(background: bool = False) -> threading.Thread | None:
    """Compile (or load from the disk cache) every kernel by painting a tiny frame once per
    process. With ``background`` it runs in a daemon thread, returned (None when already
    warm: no thread is started)."""
    global _warmed
    if background and not _warmed:
        thread = threading.Thread(target=warm_up, name="painter-warm-up", daemon=True)
        thread.start()
        return thread
    if background:
        return None
    with _warm:
        if _warmed:
            return None
        v, u = np.mgrid[0:48, 0:64].astype(np.float32)
        rgb = np.stack([0.5 + 0.2 * np.sin(u), 0.5 + 0.2 * np.cos(v), 0.5 + 0 * u], -1)
        known = np.ones((48, 64), bool)
        known[10:30, 40:60] = False
        known[5, :] = False  # a crack
        K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
        paint_exemplar(rgb, known, np.full((48, 64), 2.0, np.float32), K)
        _warmed = True
    return None
