"""The studio's two browser components, built on Gradio 6's ``gr.HTML`` component kit.

- :func:`map_sketch`: the top-down map with path sketching (``assets/loci-map.js``). Its value
  is the waypoints as JSON (``[[x, y], ...]``, ground metres); props ``base`` (the map: floor
  plan image, cameras, known-floor grid, start pose), ``settings`` (frames, speed, look) and
  ``plan`` (the server's planned path with exact coverage). Fires ``change`` when an edit ends.
- :func:`world_view`: the 3D world view (``assets/loci-view.js``: Spark + three.js). Props
  ``scene`` (see :func:`studio.web.scene.scene_payload`), ``frame`` and ``live``.

Both keep their HTML template static and build their DOM in JavaScript once: Gradio re-renders
a template when a prop it uses changes, which would throw away the canvas and its WebGL context.
The payload builders here turn server-side state into those props (plain JSON).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import cv2
import gradio as gr
import numpy as np

from studio.web.routes import ASSETS, module_loader_js
from studio.worldmap import MapView, known_grid, render_points

__all__ = ["map_sketch", "map_payload", "plan_payload", "world_view"]


def _component(module: str, value: Any, **props: Any) -> gr.HTML:
    """A ``gr.HTML`` whose DOM our ES module ``module``.js builds (CSS from ``module``.css).

    A function, not a gr.HTML subclass: Gradio writes a .pyi stub next to subclasses.
    """
    return gr.HTML(
        value,
        html_template="",  # static: a re-rendered template would drop the canvas
        css_template=(ASSETS / f"{module}.css").read_text(),
        apply_default_css=False,
        js_on_load=module_loader_js(f"{module}.js"),
        **props,
    )


def map_sketch(value: str = "[]", **kwargs: Any) -> gr.HTML:
    """Path sketching on the top-down map (value: waypoints JSON, metres)."""
    return _component("loci-map", value, base=None, plan=None, settings=None, **kwargs)


def world_view(compact: bool = False, **kwargs: Any) -> gr.HTML:
    """The 3D world view: splats or mesh at the world's cameras, fly and orbit."""
    return _component("loci-view", None, scene=None, frame=0, live=False, compact=compact,
                      **kwargs)  # fmt: skip


def _png_data_uri(rgba: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise ValueError("could not encode the map as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def map_payload(
    view: MapView,
    points_xy: np.ndarray,
    colors: np.ndarray,
    cameras_xy: np.ndarray,
    headings: np.ndarray,
    start: tuple[float, float, float],
    hfov_deg: float,
    scene_depth: float,
    grid_n: int = 128,
    solid: np.ndarray | None = None,
    floor: np.ndarray | None = None,
    sight: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The ``base`` prop of :func:`map_sketch`.

    view: the map window; points_xy (N, 2) + colors (N, 3): the floor plan; cameras_xy (M, 2)
    + headings (M,) radians (0 = map north, positive to the right): the world's cameras; start:
    (x, y, heading) where a new path begins; hfov_deg: the cameras' horizontal field of view;
    solid / floor: what memory knows for the coverage estimate (default: points_xy / none);
    sight: eye height, vertical field of view and pitch for it (``view_geometry``).
    """
    hfov = math.radians(hfov_deg)
    solid = points_xy if solid is None else solid
    grid = known_grid(view, solid, cameras_xy, headings, hfov, n=grid_n, floor_xy=floor)
    sight = sight or {"eye_height": 1.6, "vfov_rad": 0.75 * hfov, "pitch_rad": 0.0}
    step = max(1, len(cameras_xy) // 400)  # the map shows the path of cameras, not every one
    cams = [[round(float(x), 3), round(float(y), 3), round(float(h), 4)]
            for (x, y), h in zip(cameras_xy[::step], headings[::step], strict=True)]  # fmt: skip
    if step > 1:
        cams.append([round(float(v), 3) for v in (*cameras_xy[-1], headings[-1])])
    return {
        "extent": {
            "x0": float(view.x0),
            "y1": float(view.y1),
            "span": float(view.scale * view.size),
        },  # fmt: skip
        "image": _png_data_uri(render_points(view, points_xy, colors)),
        "cameras": cams,
        "grid": {"n": grid_n, "data": base64.b64encode(grid.tobytes()).decode()},
        "hfov": hfov,
        "start": [round(float(v), 4) for v in start],
        "scene_depth": float(scene_depth),
        "eye_height": float(sight["eye_height"]),
        "vfov": float(sight["vfov_rad"]),
        "pitch": float(sight["pitch_rad"]),
    }


def plan_payload(plan: Any, waypoints: list[list[float]] | None) -> dict[str, Any]:
    """The ``plan`` prop of :func:`map_sketch` from a :class:`studio.state.PathPlan`: the path
    as the server planned it, for the waypoints it was planned from (None for a preset)."""
    return {
        "waypoints": waypoints if waypoints is not None else None,
        "preset": waypoints is None,
        "xy": np.round(plan.ground_xy, 4).tolist(),
        "headings": np.round(plan.headings, 5).tolist(),
        "coverage": [round(float(c), 4) for c in plan.coverage],
    }
