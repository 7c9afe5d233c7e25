"""Export tab: every format of ``loci export`` as a download, made on demand and cached.

A format is exported once per world content (an export step in the history, its file in the
artifact store); asking again serves the stored file. Folder formats (MJCF, nerfstudio, COLMAP)
come as a zip.
"""

from __future__ import annotations

import gradio as gr

from studio.exports.lift import FORMATS
from studio.tabs.common import Shared, friendly

DESCRIPTIONS = {
    "ply": "Gaussian splats, INRIA .ply (SuperSplat, gsplat, Model3D)",
    "splat": "Gaussian splats, antimatter15 .splat (web viewers)",
    "spz": "Gaussian splats, Niantic SPZ v3 (compressed)",
    "glb": "Mesh, glTF binary (Blender, three.js)",
    "obj": "Mesh, Wavefront OBJ",
    "usd": "Physics scene, USD text (Isaac Sim)",
    "usdz": "Physics scene, USDZ package (Z-up, Isaac Sim)",
    "usdz-ar": "Mesh for AR viewers, USDZ (Y-up, AR Quick Look)",
    "mjcf": "Physics scene for MuJoCo (zip: one MJCF file, meshes inline)",
    "nerfstudio": "nerfstudio dataset (zip: transforms.json + images)",
    "colmap": "COLMAP text model (zip)",
    "mp4": "Walkthrough video",
}


def render(shared: Shared) -> dict:
    fmt = gr.Dropdown([(f"{f}: {DESCRIPTIONS.get(f, f)}", f) for f in FORMATS], value="ply",
                      label="Format", elem_id="export-format")  # fmt: skip
    go = gr.Button("Export", variant="primary", elem_id="export")
    out = gr.File(label="Download", elem_id="export-file")
    note = gr.Markdown(elem_id="export-note")
    return {"format": fmt, "go": go, "file": out, "note": note}


def listen(shared: Shared, c: dict) -> None:
    s = shared.studio

    @friendly
    def export(pid: str, key: str, fmt: str):
        path = s.export(pid, key, fmt)
        size = path.stat().st_size
        return str(path), f"`{path.name}` · {size / 1e6:.2f} MB · {DESCRIPTIONS.get(fmt, fmt)}"

    c["go"].click(export, [shared.project_id, shared.key, c["format"]], [c["file"], c["note"]],
                  api_name="export")  # fmt: skip
