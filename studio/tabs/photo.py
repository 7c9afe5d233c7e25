"""Photo tab: upload (or pick an example), set the field of view, see the depth and the points.

Using a photo seeds the project's world: frame 0 with its estimated depth joins memory. The
depth preview and the seeded point cloud show what the rest of the studio will build on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from storage.formats.images import load_photo
from studio.service import Studio
from studio.tabs.common import Shared, friendly
from studio.world_store import load_rgb, load_state

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "photos"


def depth_preview(depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour image of a depth map (near = warm), unknown pixels black."""
    valid = depth > 0
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    inv = np.where(valid, 1.0 / np.maximum(depth, 1e-6), 0)
    lo, hi = np.percentile(inv[valid], [2, 98])
    norm = np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where(valid[..., None], rgb, 0).astype(np.uint8)


def point_cloud_figure(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, stride: int = 4):
    """An interactive 3D scatter of the seeded points (OpenCV camera axes, y flipped to up)."""
    import plotly.graph_objects as go

    from models.geometry.cameras import unproject_depth

    d = depth[::stride, ::stride]
    Ks = np.asarray(K, float).copy()
    Ks[:2] /= stride
    xyz = unproject_depth(d.astype(np.float32), Ks)
    keep = d > 0
    p, c = xyz[keep], rgb[::stride, ::stride][keep]
    colors = [f"rgb({r},{g},{b})" for r, g, b in c]
    fig = go.Figure(go.Scatter3d(x=p[:, 0], y=p[:, 2], z=-p[:, 1], mode="markers",
                                 marker={"size": 1.5, "color": colors}))  # fmt: skip
    fig.update_layout(
        scene={
            "aspectmode": "data",
            "xaxis_title": "x (m)",
            "yaxis_title": "depth (m)",
            "zaxis_title": "up (m)",
        },  # fmt: skip
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        height=380,
        template="plotly_dark",
    )
    return fig


def render(shared: Shared) -> dict:
    with gr.Row():
        with gr.Column():
            # A file input, not gr.Image: Gradio would decode an image input before our handler
            # and answer a non-image with a generic error; load_photo explains what is wrong.
            photo = gr.File(label="Photo (JPEG, PNG, HEIC)", file_types=["image"], type="filepath",
                            elem_id="photo")  # fmt: skip
            preview = gr.Image(label="Preview", interactive=False, height=240,
                               elem_id="photo-preview")  # fmt: skip
            fov = gr.Number(
                0, label="Horizontal field of view, degrees (0 = from EXIF, or 60)", elem_id="fov"
            )  # the server checks 10..150
            use = gr.Button("Use this photo", variant="primary", elem_id="set-photo")
            if EXAMPLES.is_dir():
                gr.Examples(sorted(str(p) for p in EXAMPLES.glob("*.jpg"))[:6], photo)
        with gr.Column():
            depth = gr.Image(label="Estimated depth (near = warm)", interactive=False,
                             elem_id="depth-preview")  # fmt: skip
            cloud = gr.Plot(label="Seeded point cloud", elem_id="seed-cloud")
            info = gr.Markdown(elem_id="photo-info")
    return {
        "photo": photo,
        "preview": preview,
        "fov": fov,
        "use": use,
        "depth": depth,
        "cloud": cloud,
        "info": info,
    }


def show(studio: Studio, project_id: str, key: str):
    """Depth preview, point cloud and notes of the project's current photo."""
    ws = studio.world(project_id, key)
    f = ws.frames[0]
    rgb, d = load_rgb(studio.store, f), load_state(studio.store, f)["depth"]
    m = ws.meta
    notes = ws.photo.params.get("notes") or []
    text = (
        f"World seeded at {m['width']}×{m['height']}: field of view {m['hfov_deg']:.0f}°, "
        f"median depth {m['scene_depth']:.2f} m, depth by `{m['backends'].get('depth')}` "
        f"({m['scale_policy']})."
    )
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return depth_preview(d), point_cloud_figure(rgb, d, np.asarray(f.K)), text


def listen(shared: Shared, c: dict) -> None:
    s = shared.studio

    @friendly
    def use_photo(project_id: str, key: str, path: str | None, fov: float | None):
        s.set_photo(project_id, key, path, fov or None)
        return show(s, project_id, key)

    @friendly
    def show_upload(path: str | None):
        if not path:
            return None
        photo = load_photo(path)
        if photo.notes:
            gr.Info("; ".join(photo.notes))
        return photo.rgb

    c["photo"].change(show_upload, [c["photo"]], [c["preview"]], api_visibility="private")

    c["use"].click(
        use_photo,
        [shared.project_id, shared.key, c["photo"], c["fov"]],
        [c["depth"], c["cloud"], c["info"]],
        api_name="set_photo",
    )
