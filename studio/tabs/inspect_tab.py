"""Inspect tab: the splats and the mesh in the browser, the walkthrough, and frame by frame a
switch between the generated frame, the splat render at the same camera and the source mask,
with the frames memory retrieved for it, its coverage and a revisit score when the path returns.
"""

from __future__ import annotations

from functools import lru_cache

import gradio as gr
import numpy as np

from models.metrics import psnr
from models.paths.trajectory import rotation_angle_deg
from storage.formats.splats import read_inria_ply
from studio.service import Studio, StudioError, WorldState
from studio.tabs.common import Shared, friendly
from studio.world_store import decode_png, load_rgb

VIEWS = ("generated frame", "splat render", "source mask")


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
        splats = gr.Model3D(label="Gaussian splats", elem_id="splat-viewer", height=420)
        mesh = gr.Model3D(label="Mesh", elem_id="mesh-viewer", height=420)
    video = gr.Video(label="Walkthrough", elem_id="world-video")
    with gr.Row():
        with gr.Column(scale=1):
            frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="inspect-frame")
            which = gr.Radio(list(VIEWS), value=VIEWS[0], label="Show", elem_id="inspect-view")
            info = gr.Markdown(elem_id="frame-info")
        with gr.Column(scale=2):
            image = gr.Image(label="Frame", interactive=False, elem_id="inspect-image")
    return {"load": load, "summary": summary, "splats": splats, "mesh": mesh, "video": video,
            "frame": frame, "which": which, "info": info, "image": image}  # fmt: skip


def listen(shared: Shared, c: dict) -> None:
    s: Studio = shared.studio
    ids = [shared.project_id, shared.key]

    @friendly
    def load(pid: str, key: str):
        ws = s.world(pid, key)
        if len(ws.frames) < 2:
            raise StudioError("Generate some frames first: the world is only the photo so far.")
        cell = s.lift(pid, key)
        splat_path = s.artifact(cell, "splats", f"splats-{ws.digest[:8]}.ply")
        mesh_path = s.export(pid, key, "glb")
        video = s.handoff(s.bundle(ws) / "video.mp4", f"walkthrough-{ws.digest[:8]}.mp4")
        p = cell.params
        text = (
            f"{len(ws.frames)} frames · {p.get('splats')} splats · {p.get('faces')} mesh faces "
            f"(lift step {cell.position + 1})."
        )
        return (str(splat_path), str(mesh_path), str(video), text,
                gr.update(maximum=len(ws.frames) - 1, value=len(ws.frames) - 1))  # fmt: skip

    c["load"].click(load, ids, [c["splats"], c["mesh"], c["video"], c["summary"], c["frame"]],
                    api_name="inspect")  # fmt: skip

    @friendly
    def show(pid: str, key: str, index: float, which: str):
        ws = s.world(pid, key)
        i = int(index)
        if not 0 <= i < len(ws.frames):
            raise StudioError(f"There is no frame {i}; this world has {len(ws.frames)}.")
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

    inputs, outputs = [*ids, c["frame"], c["which"]], [c["image"], c["info"]]
    c["frame"].release(show, inputs, outputs, api_name="inspect_frame")
    c["which"].change(show, inputs, outputs, api_visibility="private")
