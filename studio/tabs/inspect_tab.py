"""Inspect tab: the world in 3D in the browser, and frame by frame what made it.

The 3D view (:func:`studio.web.components.world_view`, Spark on three.js) opens at frame 0's
camera with its intrinsics, follows the frame slider (in the page, no round trip), and switches
at that same camera between the browser's splat render, the generated frame and its source mask;
the mesh (GLB) has the same cameras and controls. The splats reach the browser as a compact SPZ
(a few MB), the full .ply stays a download. Beside it, the frame panel shows the frame (or the
server's own CPU splat render, or the mask), the frames memory retrieved for it, its coverage
and a revisit score when the path returns.
"""

from __future__ import annotations

from functools import lru_cache

import gradio as gr
import numpy as np

from models.metrics import psnr
from models.paths.trajectory import rotation_angle_deg
from storage.db import Forbidden
from storage.formats.splats import read_inria_ply
from studio.errors import checked_number
from studio.service import Studio, StudioError, WorldState
from studio.tabs.common import Shared, friendly
from studio.web.components import world_view
from studio.web.routes import stored_file_url
from studio.web.scene import scene_payload
from studio.world_store import decode_png, load_rgb

VIEWS = ("generated frame", "splat render", "source mask")
# The 3D view follows the slider in the page itself: no server round trip per frame.
FOLLOW_JS = """(i) => {
  const v = document.querySelector('#world-view.loci-view, #world-view .loci-view');
  if (v && v.__lociView) v.__lociView.goTo(i);
}"""


@lru_cache(maxsize=4)
def _splats(path: str) -> dict:
    return read_inria_ply(path)


def revisit(ws: WorldState, i: int, rgb_of) -> str:
    """'returns to frame j: PSNR x dB' when an earlier frame (not a neighbour) has nearly the
    same camera (within 3 % of the scene depth and 5 degrees)."""
    c = ws.camera(i)
    tol = 0.03 * float(ws.meta.get("scene_depth", 3.0))
    best = None
    for j in range(0, max(0, i - 3)):
        cj = ws.camera(j)
        d = float(np.linalg.norm(c.c2w[:3, 3] - cj.c2w[:3, 3]))
        if (
            d < tol
            and rotation_angle_deg(c.c2w[:3, :3], cj.c2w[:3, :3]) < 5
            and (best is None or d < best[1])
        ):
            best = (j, d)
    if best is None:
        return ""
    j = best[0]
    score = psnr(rgb_of(i), rgb_of(j))
    return f"Revisit: returns to frame {j} ({best[1] * 100:.1f} cm away): PSNR {score:.1f} dB."


def render(shared: Shared) -> dict:
    load = gr.Button("Load the world (lifts it once, then reuses the result)",
                     variant="primary", elem_id="load-inspect")  # fmt: skip
    summary = gr.Markdown(elem_id="inspect-summary")
    with gr.Row():
        with gr.Column(scale=3, min_width=320):
            view = world_view(elem_id="world-view")
            with gr.Row():
                dl_splats = gr.DownloadButton("Splats (.ply)", size="sm", elem_id="dl-splats",
                                              visible=False)  # fmt: skip
                dl_spz = gr.DownloadButton("Splats, compact (.spz)", size="sm",
                                           elem_id="dl-spz", visible=False)  # fmt: skip
                dl_mesh = gr.DownloadButton("Mesh (.glb)", size="sm", elem_id="dl-mesh",
                                            visible=False)  # fmt: skip
        with gr.Column(scale=2, min_width=280):
            frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="inspect-frame")
            # The API's frame number: no UI limits (the slider's maximum is per session).
            frame_api = gr.Number(0, precision=0, visible=False)
            which = gr.Radio(list(VIEWS), value=VIEWS[0], label="Frame panel shows",
                             elem_id="inspect-view")  # fmt: skip
            image = gr.Image(label="Frame", interactive=False, elem_id="inspect-image")
            info = gr.Markdown(elem_id="frame-info")
    video = gr.Video(label="Walkthrough", elem_id="world-video")
    return {"load": load, "summary": summary, "view": view, "video": video, "frame": frame,
            "frame_api": frame_api, "which": which, "info": info, "image": image,
            "dl_splats": dl_splats, "dl_spz": dl_spz, "dl_mesh": dl_mesh}  # fmt: skip


def world_scene(s: Studio, pid: str, key: str, ws: WorldState) -> tuple[dict, dict, str]:
    """(scene prop, download paths, summary) of a loaded world; lifts it when needed."""
    cell = s.lift(pid, key)
    web = s.repo.cell_artifacts(cell.id, "splats-web")
    ply = s.repo.cell_artifacts(cell.id, "splats")[-1]
    name = f"splats-{ws.digest[:8]}"
    # Worlds lifted before compact splats existed fall back to the full .ply (Spark reads it).
    splats = (web[-1].sha256, f"{name}.spz") if web else (ply.sha256, f"{name}.ply")
    downloads = {"ply": s.named_file(ply.sha256, f"{name}.ply"),
                 "spz": s.named_file(web[-1].sha256, f"{name}.spz") if web else None}  # fmt: skip
    mesh_url, note = None, ""
    try:
        mesh = s.export(pid, key, "glb")
        step = s.repo.get_cell(s.world_step(ws).id)  # read again: the export attached to it
        entry = s.attachment(step, "glb", ws.digest)
        mesh_url = stored_file_url(s, pid, key, entry["sha256"], mesh.name) if entry else None
        downloads["glb"] = mesh
    except Forbidden:
        note = " The mesh appears once an editor of this project has loaded the world."
    frames = [
        {
            "rgb": stored_file_url(s, pid, key, f.rgb_sha256, f"frame-{f.frame_index:06d}.png"),
            "mask": stored_file_url(s, pid, key, f.mask_sha256, f"mask-{f.frame_index:06d}.png")
            if f.mask_sha256
            else None,
        }
        for f in ws.frames
    ]
    scene = scene_payload(
        ws.meta,
        [(np.asarray(f.K), np.asarray(f.c2w)) for f in ws.frames],
        splats_url=stored_file_url(s, pid, key, *splats),
        mesh_url=mesh_url,
        frame_urls=frames,
    )
    p = cell.params
    web_note = (
        f" The browser gets {p['web_splats']} of them ({p['web_bytes'] / 1e6:.1f} MB SPZ)."
        if p.get("web_bytes")
        else ""
    )
    text = (
        f"{len(ws.frames)} frames · {p.get('splats')} splats · {p.get('faces')} mesh faces "
        f"(lift step {cell.position + 1}).{web_note}{note}"
    )
    return scene, downloads, text


def listen(shared: Shared, c: dict) -> None:
    s: Studio = shared.studio
    ids = [shared.project_id, shared.key]

    def panel(pid: str, key: str, ws: WorldState, i: int, which: str):
        f = ws.frames[i]
        meta = f.meta or {}
        if which == VIEWS[1]:
            lifts = [x for x in ws.cells if x.kind == "lift" and x.status == "done"]
            if not lifts:
                raise StudioError("Load the world first: the splats are made then.")
            path = s.artifact(lifts[-1], "splats", "splats.ply")
            g = _splats(str(path))
            from models.lift.splat_render import render as render_splats

            cam = ws.camera(i)
            out = render_splats(g["means"], g["quats_wxyz"], g["log_scales"], g["opacity_logits"],
                                g["sh0"], cam.c2w, cam.K, ws.width, ws.height)  # fmt: skip
            img = (out["rgb"].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        elif which == VIEWS[2]:
            img = decode_png(s.store.read_bytes(f.mask_sha256)) if f.mask_sha256 else None
        else:
            img = load_rgb(s.store, f)
        lines = [
            f"**Frame {i}** · memory coverage {f.memory_coverage or 0:.0%}"
            + (f" · routed {meta['routed_coverage']:.0%}" if "routed_coverage" in meta else ""),
            f"Retrieved from memory: {meta.get('retrieved', []) or 'none (the photo)'}"
            + (" · joined memory" if meta.get("joined_memory", i == 0) else ""),
        ]
        rv = revisit(ws, i, lambda j: load_rgb(s.store, ws.frames[j]))
        if rv:
            lines.append(rv)
        return img, "\n\n".join(lines)

    @friendly
    def load(pid: str, key: str, which: str):
        ws = s.world(pid, key)
        if len(ws.frames) < 2:
            msg = "Generate some frames first: the world is only the photo so far."
            gr.Warning(msg)
            hidden = gr.DownloadButton(visible=False)
            return (gr.HTML(scene={"message": msg}), gr.skip(), msg, gr.skip(),
                    *panel(pid, key, ws, 0, VIEWS[0]), hidden, hidden, hidden)  # fmt: skip
        scene, downloads, text = world_scene(s, pid, key, ws)
        with s.bundle(ws) as root:
            video = s.handoff(root / "video.mp4", f"walkthrough-{ws.digest[:8]}.mp4")

        def button(fmt: str):
            path = downloads.get(fmt)
            return gr.DownloadButton(value=str(path), visible=True) if path else \
                gr.DownloadButton(visible=False)  # fmt: skip

        return (gr.HTML(scene=scene, frame=0), str(video), text,
                gr.update(maximum=len(ws.frames) - 1, value=0), *panel(pid, key, ws, 0, which),
                button("ply"), button("spz"), button("glb"))  # fmt: skip

    c["load"].click(load, [*ids, c["which"]],
                    [c["view"], c["video"], c["summary"], c["frame"], c["image"], c["info"],
                     c["dl_splats"], c["dl_spz"], c["dl_mesh"]], api_name="inspect")  # fmt: skip

    @friendly
    def show(pid: str, key: str, index: float, which: str):
        ws = s.world(pid, key)
        i = checked_number(index, "The frame number", 0, len(ws.frames) - 1, integer=True)
        if which not in VIEWS:
            raise StudioError(f"Show one of: {', '.join(VIEWS)}.")
        return panel(pid, key, ws, i, which)

    inputs, outputs = [*ids, c["frame"], c["which"]], [c["image"], c["info"]]
    c["frame"].input(None, [c["frame"]], None, js=FOLLOW_JS)
    c["frame"].change(None, [c["frame"]], None, js=FOLLOW_JS)
    c["frame"].release(show, inputs, outputs, api_visibility="private")
    c["which"].change(show, inputs, outputs, api_visibility="private")
    c["frame_api"].change(show, [*ids, c["frame_api"], c["which"]], outputs,
                          api_name="inspect_frame")  # fmt: skip
