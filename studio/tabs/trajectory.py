"""Trajectory tab: a top-down map of what has been seen, and a path sketched on it.

Click the map to drop waypoints (a click is a ``select`` event with the pixel it hit); the path
through them is smoothed, resampled at constant speed and drawn with heading ticks, together
with how much of each view the memory already knows. Presets work from the same start camera.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import gradio as gr
import numpy as np

from models.paths.trajectory import PRESET_NAMES
from studio.service import PathPlan, Studio, StudioError, WorldState
from studio.tabs.common import Shared, friendly
from studio.worldmap import MapView, plotly_map, render_map

SKETCH = "sketch on the map"
_BASE: OrderedDict[str, tuple] = OrderedDict()  # world digest -> map base (small LRU)


def map_base(
    studio: Studio, ws: WorldState
) -> tuple[MapView, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(view, points_xy, colours, cameras_xy, headings) of a world, cached per world content."""
    digest = ws.digest
    if digest not in _BASE:
        gf = ws.ground()
        pts, cols = studio.map_points(ws)
        c2w = np.stack([np.asarray(f.c2w) for f in ws.frames])
        cams = gf.to_ground(c2w[:, :3, 3])
        fwd = c2w[:, :3, 2]
        heads = np.arctan2(fwd @ gf.right, fwd @ gf.forward)
        # Room around what is known, so paths can be sketched into the unseen.
        view = MapView.fit(pts, cams, margin=0.35)
        _BASE[digest] = (view, pts, cols, cams, heads)
        while len(_BASE) > 16:
            _BASE.popitem(last=False)
    return _BASE[digest]


def draw(studio: Studio, ws: WorldState, plan: PathPlan | None, waypoints: list | None):
    view, pts, cols, cams, heads = map_base(studio, ws)
    wp = np.asarray(waypoints, float).reshape(-1, 2) if waypoints else None
    path = plan.ground_xy if plan else None
    img = render_map(view, pts, cols, cams, heads, path, plan.headings if plan else None, wp)
    return img, plotly_map(pts, cols, cams, path)


def parse_waypoints(text: str | None) -> list[list[float]]:
    if not text or not str(text).strip():
        return []
    if len(str(text)) > 100_000:
        raise StudioError("That waypoint list is too long; a path has at most 1000 waypoints.")
    try:
        wp = json.loads(text)
        arr = np.asarray(wp, float)
    except (ValueError, TypeError) as e:
        raise StudioError("Waypoints must be JSON like [[0.5, 2.0], [1.0, 3.5]] (metres).") from e
    if arr.size == 0:
        return []
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise StudioError("Waypoints must be a list of [x, y] pairs in metres.")
    return arr.tolist()


def plan_from_inputs(studio: Studio, pid: str, key: str, preset: str, waypoints: str,
                     frames: float, speed: float, eye: float, look: str, start: str,
                     ws: WorldState | None = None) -> PathPlan:  # fmt: skip
    """A plan from the tab's inputs (the service checks every number: the API skips the UI)."""
    if preset and preset != SKETCH:
        return studio.plan_path(pid, key, preset=preset, frames=frames, start=start, ws=ws)
    wp = parse_waypoints(waypoints)
    kw: dict[str, Any] = {"speed": speed} if speed else {"frames": frames}
    return studio.plan_path(pid, key, waypoints=wp, eye_height=eye or None, look=look,
                            start=start, ws=ws, **kw)  # fmt: skip


def coverage_text(plan: PathPlan) -> str:
    cov = plan.coverage
    first = ", ".join(f"{c:.0%}" for c in cov[1:6])
    text = (
        f"**{len(plan.trajectory)} frames**, {plan.trajectory.path_length():.2f} m. Memory already "
        f"sees {first} of the first views; {np.mean(cov[1:]):.0%} on average along the path."
    )
    return text + "".join(f"\n\n⚠️ {w}" for w in plan.warnings)


def render(shared: Shared) -> dict:
    with gr.Row():
        with gr.Column(scale=3):
            map_img = gr.Image(label="Map (click to add waypoints; north = the photo's view)",
                               interactive=False, elem_id="map", height=512)  # fmt: skip
            coverage = gr.Markdown(elem_id="coverage")
        with gr.Column(scale=2):
            preset = gr.Dropdown([SKETCH, *PRESET_NAMES], value=SKETCH, label="Path",
                                 elem_id="path-preset")  # fmt: skip
            waypoints = gr.Textbox("[]", label="Waypoints (x right, y ahead; metres)",
                                   elem_id="waypoints")  # fmt: skip
            with gr.Row():
                undo = gr.Button("Undo point", elem_id="undo-waypoint")
                clear = gr.Button("Clear", elem_id="clear-waypoints")
                show = gr.Button("Show map", elem_id="show-map")
            # The server's own limit (and the server checks every number: the API skips the UI).
            frames = gr.Slider(2, shared.studio.ctx.max_frames, value=24, step=1, label="Frames",
                               elem_id="path-frames")  # fmt: skip
            speed = gr.Number(0, label="Speed, m per frame (0 = use the frame count)",
                              elem_id="path-speed")  # fmt: skip
            eye = gr.Number(0, label="Eye height, m (0 = the photo's)", elem_id="eye-height")
            look = gr.Radio(["path", "fixed"], value="path", label="Look", elem_id="look")
            start = gr.Dropdown([("end of the world so far", "end"), ("the photo", "photo")],
                                value="end", label="Start from", elem_id="start-from",
                                allow_custom_value=True)  # fmt: skip
            save = gr.Button("Use this path", variant="primary", elem_id="save-path")
            saved = gr.Markdown(elem_id="path-saved")
            path_id = gr.Textbox(label="Path step id", interactive=False, elem_id="path-id")
    with gr.Accordion("Interactive map (zoom, hover for coordinates)", open=False):
        plot = gr.Plot(elem_id="map-plot")
    return {"map": map_img, "coverage": coverage, "preset": preset, "waypoints": waypoints,
            "undo": undo, "clear": clear, "show": show, "frames": frames, "speed": speed,
            "eye": eye, "look": look, "start": start, "save": save, "saved": saved,
            "plot": plot, "path_id": path_id}  # fmt: skip


def param_components(c: dict) -> list:
    return [c["preset"], c["waypoints"], c["frames"], c["speed"], c["eye"], c["look"], c["start"]]


def preview_outputs(c: dict) -> list:
    return [c["map"], c["coverage"], c["plot"], c["start"]]


def preview_handler(shared: Shared):
    """The handler that redraws the map with the path the inputs describe."""
    s = shared.studio

    def starts(ws: WorldState, current: str):
        gens = [(f"end of step {x.position + 1} (generation)", x.id)
                for x in ws.cells if x.kind == "generation" and x.position > ws.photo.position]  # fmt: skip
        choices = [("end of the world so far", "end"), ("the photo", "photo"), *gens]
        value = current if current in {v for _, v in choices} else "end"
        return gr.update(choices=choices, value=value)

    @friendly
    def preview(pid: str, key: str, preset, waypoints, frames, speed, eye, look, start):
        ws = s.world(pid, key)
        wp = parse_waypoints(waypoints)
        if (not preset or preset == SKETCH) and not wp:
            img, fig = draw(s, ws, None, None)
            text = "Click the map to add waypoints, or pick a preset path."
            return img, text, fig, starts(ws, start)
        plan = plan_from_inputs(s, pid, key, preset, waypoints, frames, speed, eye, look, start, ws)
        img, fig = draw(s, ws, plan, wp if preset == SKETCH else None)
        return img, coverage_text(plan), fig, starts(ws, start)

    return preview


def listen(shared: Shared, c: dict) -> None:
    s = shared.studio
    ids = [shared.project_id, shared.key]
    params = param_components(c)
    preview = preview_handler(shared)

    outs = preview_outputs(c)
    c["show"].click(preview, [*ids, *params], outs, api_name="preview_path")

    def redraw(*args):  # as preview, leaving the start choices alone (no change-event loop)
        return preview(*args)[:3]

    for trigger in (c["preset"].change, c["look"].change, c["start"].change, c["frames"].release,
                    c["speed"].submit, c["eye"].submit):  # fmt: skip
        trigger(redraw, [*ids, *params], outs[:3], api_visibility="private")

    @friendly
    def click(pid: str, key: str, waypoints: str, evt: gr.SelectData):
        ws = s.world(pid, key)
        view = map_base(s, ws)[0]
        x, y = view.to_ground(float(evt.index[0]), float(evt.index[1]))
        wp = [*parse_waypoints(waypoints), [round(x, 3), round(y, 3)]]
        return json.dumps(wp), SKETCH

    c["map"].select(click, [*ids, c["waypoints"]], [c["waypoints"], c["preset"]],
                    api_visibility="private").then(
        redraw, [*ids, *params], outs[:3], api_visibility="private")  # fmt: skip

    def undo(waypoints: str):
        wp = parse_waypoints(waypoints) if waypoints else []
        return json.dumps(wp[:-1])

    for btn, fn in ((c["undo"], undo), (c["clear"], lambda _w: "[]")):
        btn.click(friendly(fn), [c["waypoints"]], [c["waypoints"]], api_visibility="private").then(
            redraw, [*ids, *params], outs[:3], api_visibility="private")  # fmt: skip

    @friendly
    def save(pid: str, key: str, preset, waypoints, frames, speed, eye, look, start):
        plan = plan_from_inputs(s, pid, key, preset, waypoints, frames, speed, eye, look, start)
        cell = s.save_path(pid, key, plan)
        if plan.warnings:
            gr.Warning(plan.warnings[0])
        return (
            f"Saved as step {cell.position + 1}: {len(plan.trajectory)} frames. "
            "Generate it in the Generate tab.",
            cell.id,
        )

    c["save"].click(save, [*ids, *params], [c["saved"], c["path_id"]], api_name="plan_path")
