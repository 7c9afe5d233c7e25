"""Trajectory tab: a top-down map of what has been seen, and a path sketched on it.

The map is :func:`studio.web.components.map_sketch`: draw a stroke (mouse, pen, finger) or tap
points; the browser turns the stroke into waypoints (metres, in drawing order) and previews the
path and how much of each view memory knows without a server round trip; when an edit ends the
server plans the path once (spline, resampling, exact memory coverage) and the map shows that.
The waypoints also stay editable as text, and presets work from the same start camera.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

import gradio as gr
import numpy as np

from models.paths.trajectory import PRESET_NAMES
from studio.service import PathPlan, Studio, StudioError, WorldState, user_facing
from studio.tabs.common import Shared, friendly
from studio.web.components import map_payload, map_sketch, plan_payload
from studio.worldmap import MapView, render_map

SKETCH = "sketch on the map"
_BASE: OrderedDict[str, tuple] = OrderedDict()  # world digest -> map base (small LRU)
_PAYLOAD: OrderedDict[str, dict] = OrderedDict()  # world digest + start -> MapSketch base prop


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
        # Room around what is known (at any height: a facade stands above eye level), so paths
        # can be sketched into the unseen.
        solid, floor = studio.known_points(ws)
        view = MapView.fit(solid if len(solid) else pts, cams, margin=0.35)
        _BASE[digest] = (view, pts, cols, cams, heads)
        while len(_BASE) > 16:
            _BASE.popitem(last=False)
    return _BASE[digest]


def view_geometry(ws: WorldState) -> dict[str, float]:
    """What the map's coverage estimate needs to know of the cameras: eye height above the
    floor (metres), vertical field of view and pitch (radians, up positive) of the photo."""
    cam = ws.camera(0)
    up = np.asarray(ws.meta["up"], float)
    up = up / np.linalg.norm(up)
    vfov = 2 * math.atan(ws.height / (2 * float(cam.K[1, 1])))
    pitch = math.asin(float(np.clip(cam.c2w[:3, 2] @ up, -1, 1)))
    return {"eye_height": float(ws.meta["camera_height"]), "vfov_rad": vfov, "pitch_rad": pitch}


def start_pose(studio: Studio, ws: WorldState, start: str) -> tuple[str, tuple[float, ...]]:
    """(cache key, (x, y, heading)) on the map of the camera a new path starts from."""
    i = studio._start_index(ws, start or "end")
    _, _, _, cams, heads = map_base(studio, ws)
    return f"{ws.digest}:{i}", (float(cams[i, 0]), float(cams[i, 1]), float(heads[i]))


def base_payload(studio: Studio, ws: WorldState, start: str) -> tuple[str, dict]:
    """(key, map sketch ``base`` prop) for a world and start, cached."""
    key, pose = start_pose(studio, ws, start)
    if key not in _PAYLOAD:
        view, pts, cols, cams, heads = map_base(studio, ws)
        solid, floor = studio.known_points(ws)
        _PAYLOAD[key] = map_payload(view, pts, cols, cams, heads, pose, ws.meta["hfov_deg"],
                                    ws.meta["scene_depth"], solid=solid, floor=floor,
                                    sight=view_geometry(ws))  # fmt: skip
        while len(_PAYLOAD) > 16:
            _PAYLOAD.popitem(last=False)
    return key, _PAYLOAD[key]


def draw(studio: Studio, ws: WorldState, plan: PathPlan | None, waypoints: list | None):
    """The map as a picture (the Generate tab's live map), with a planned path if given."""
    view, pts, cols, cams, heads = map_base(studio, ws)
    wp = np.asarray(waypoints, float).reshape(-1, 2) if waypoints else None
    path = plan.ground_xy if plan else None
    return render_map(view, pts, cols, cams, heads, path, plan.headings if plan else None, wp)


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
        with gr.Column(scale=3, min_width=300):
            sketch = map_sketch(elem_id="map-sketch")
            coverage = gr.Markdown(elem_id="coverage")
        with gr.Column(scale=2, min_width=280):
            preset = gr.Dropdown([SKETCH, *PRESET_NAMES], value=SKETCH, label="Path",
                                 elem_id="path-preset")  # fmt: skip
            waypoints = gr.Textbox("[]", label="Waypoints (x right, y ahead; metres; Enter to "
                                   "apply)", elem_id="waypoints", max_lines=4)  # fmt: skip
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
            show = gr.Button("Show the map", elem_id="show-map", visible=False)  # API only
            saved = gr.Markdown(elem_id="path-saved")
            path_id = gr.Textbox(label="Path step id", interactive=False, elem_id="path-id")
    memory = gr.Gallery(label="What memory already knows of a few views (magenta: to be painted)",
                        columns=5, height=200, object_fit="contain", allow_preview=True,
                        elem_id="memory-preview")  # fmt: skip
    base_key = gr.State("")  # which map base the page has (sent again only when it changes)
    return {"sketch": sketch, "coverage": coverage, "preset": preset, "waypoints": waypoints,
            "frames": frames, "speed": speed, "eye": eye, "look": look, "start": start,
            "save": save, "show": show, "saved": saved, "path_id": path_id, "memory": memory,
            "base_key": base_key}  # fmt: skip


def param_components(c: dict) -> list:
    return [c["preset"], c["waypoints"], c["frames"], c["speed"], c["eye"], c["look"], c["start"]]


def preview_inputs(shared: Shared, c: dict) -> list:
    return [shared.project_id, shared.key, *param_components(c), c["base_key"]]


def preview_outputs(c: dict) -> list:
    return [c["sketch"], c["coverage"], c["base_key"], c["start"]]


def _settings(studio: Studio, frames, speed, look) -> dict:
    return {"frames": int(frames or 24), "speed": float(speed or 0), "look": look or "path",
            "max_frames": studio.ctx.max_frames}  # fmt: skip


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
    def preview(pid: str, key: str, preset, waypoints, frames, speed, eye, look, start, have):
        ws = s.world(pid, key)
        start = start if start in ("end", "photo") or any(c.id == start for c in ws.cells) \
            else "end"  # fmt: skip
        bkey, base = base_payload(s, ws, start)
        props: dict[str, Any] = {"settings": _settings(s, frames, speed, look)}
        if bkey != have:
            props["base"] = base
        wp = parse_waypoints(waypoints)
        if (not preset or preset == SKETCH) and not wp:
            text = "Draw the path on the map (or tap points, or pick a preset path)."
            return gr.HTML(plan=None, **props), text, bkey, starts(ws, start)
        plan = plan_from_inputs(s, pid, key, preset, waypoints, frames, speed, eye, look, start, ws)
        props["plan"] = plan_payload(plan, wp if (not preset or preset == SKETCH) else None)
        return gr.HTML(**props), coverage_text(plan), bkey, starts(ws, start)

    return preview


def listen(shared: Shared, c: dict) -> None:
    s = shared.studio
    ids = [shared.project_id, shared.key]
    params = param_components(c)
    preview = preview_handler(shared)
    inputs, outs = preview_inputs(shared, c), preview_outputs(c)
    c_sketch = c["sketch"]

    def memory_preview(pid: str, key: str, preset, waypoints, frames, speed, eye, look, start):
        """What memory knows of a few views (after the plan is drawn; its errors were shown)."""
        try:
            if (not preset or preset == SKETCH) and not parse_waypoints(waypoints):
                return []
            ws = s.world(pid, key)
            plan = plan_from_inputs(s, pid, key, preset, waypoints, frames, speed, eye, look,
                                    start, ws)  # fmt: skip
        except user_facing():
            return []
        return s.memory_preview(ws, plan)

    def redraw(*args):  # as preview, leaving the start choices alone (no change-event loop)
        return preview(*args)[:3]

    for trigger in (c["preset"].change, c["look"].change, c["start"].change, c["frames"].release,
                    c["speed"].submit, c["eye"].submit):  # fmt: skip
        trigger(redraw, inputs, outs[:3], api_visibility="private").then(
            memory_preview, [*ids, *params], [c["memory"]], api_visibility="private")  # fmt: skip

    # Typed waypoints go to the map; the map's edits come back as text.
    c["waypoints"].submit(lambda w: json.dumps(parse_waypoints(w)), [c["waypoints"]], [c_sketch],
                          api_visibility="private")  # fmt: skip

    def from_sketch(pid, key, value, preset, frames, speed, eye, look, start, have):
        """An edit on the map: the waypoints as text, and the server's plan, in one round trip
        (the stroke-end-to-planned-path time is what a person waits for)."""
        wp = parse_waypoints(value)
        text = json.dumps(wp)
        try:
            view = preview(pid, key, SKETCH, text, frames, speed, eye, look, start, have)[:3]
        except gr.Error as e:  # e.g. drawn far outside the map: say so on the map, keep it
            gr.Warning(e.message)
            view = (gr.HTML(plan={"waypoints": wp, "error": e.message}), gr.skip(), gr.skip())
        return text, gr.skip() if preset == SKETCH else SKETCH, *view

    sketch_inputs = [*ids, c_sketch, c["preset"], c["frames"], c["speed"], c["eye"], c["look"],
                     c["start"], c["base_key"]]  # fmt: skip
    c_sketch.change(friendly(from_sketch), sketch_inputs, [c["waypoints"], c["preset"], *outs[:3]],
                    api_visibility="private", show_progress="hidden").then(
        memory_preview, [*ids, *params], [c["memory"]], api_visibility="private",
        show_progress="hidden")  # fmt: skip

    c["show"].click(preview, inputs, outs, api_name="preview_path")

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
