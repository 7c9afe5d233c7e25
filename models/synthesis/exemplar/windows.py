"""Where to paint: windows around the holes, so a frame's cost follows what it has to paint.

Walking forward, a frame usually has a few hundred never-seen pixels (a sliver behind an object,
a crack the routing did not close), yet every stage of the painter reads whole-frame maps: at
512x768 that cost 50-150 ms a frame for 0.1 % of its pixels. The holes are painted instead in
windows: each group of holes with ``margin`` seen pixels around it (the geometry guide and the
texture sources it reads are local: the far layer within 48 px, a crossing ends inside the hole,
patches come from nearby), boxes merged where they overlap. Frames with large holes, or whose
windows would cover much of the frame, are painted whole (no gain, and large holes want
sources from everywhere).
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _merge(boxes: list[Box]) -> list[Box]:
    """Union boxes that overlap until none do (their union box, repeatedly)."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for b in boxes:
            for i, o in enumerate(out):
                if _overlap(b, o):
                    out[i] = (min(b[0], o[0]), max(b[1], o[1]), min(b[2], o[2]), max(b[3], o[3]))
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return sorted(boxes)


def hole_windows(
    hole: np.ndarray,
    margin: int,
    max_share: float = 0.5,
    max_count: int = 12,
    max_hole: float = 1.0,
) -> list[Box] | None:
    """Disjoint boxes ``(y0, y1, x0, x1)`` that hold every ``hole`` pixel with at least
    ``margin`` px of frame around it (where the frame has them), corners on even pixels (the
    painter's half-size grid stays the frame's). None when painting the whole frame is as
    cheap: the boxes would cover more than ``max_share`` of it, or there would be more than
    ``max_count`` (each window has a fixed cost), or ``margin`` is 0 (windows off); and when
    the holes themselves are more than ``max_hole`` of the frame (a turn's new side wants
    sources from the whole frame: on held-out turns windows lost texture, SWD 0.335 -> 0.355).

    Args:
        hole: (H, W) bool, the pixels to paint (at least one).
    """
    H, W = hole.shape
    if margin <= 0 or not hole.any() or hole.mean() > max_hole:
        return None
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)  # separable: cheap at any size
    grown = cv2.dilate(hole.astype(np.uint8), k)
    _, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    boxes = []
    for x, y, w, h, _ in stats[1:]:
        y0, x0 = (int(y) // 2) * 2, (int(x) // 2) * 2
        y1, x1 = min(H, -(-(int(y) + int(h)) // 2) * 2), min(W, -(-(int(x) + int(w)) // 2) * 2)
        boxes.append((y0, y1, x0, x1))
    boxes = _merge(boxes)
    area = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes)
    if len(boxes) > max_count or area > max_share * H * W:
        return None
    return boxes
