"""Photo tab: upload (or pick an example), set the field of view, see the depth and the points.

Using a photo seeds the project's world: frame 0 with its estimated depth joins memory. The
photo as the world keeps it (resized to the working size), its depth and the seeded point cloud
show what the rest of the studio will build on, before anything is generated. Example photos
ship in ``examples/`` with their licences.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from storage.formats.images import load_photo
from studio.service import Studio
from studio.tabs.common import Shared, friendly
from studio.world_store import load_rgb, load_state

# Example photos ship with the repository (examples/LICENSES.md); $LOCI_EXAMPLES overrides.
EXAMPLES = Path(os.environ.get("LOCI_EXAMPLES") or Path(__file__).resolve().parents[2] / "examples")
THUMB_WIDTH = 200


def example_thumbnails(cache_dir: Path) -> list[tuple[str, str]]:
    """(thumbnail path, example path) of every example photo; thumbnails are made once, on
    first use, into ``cache_dir/examples`` (the photos themselves can be a few hundred KB)."""
    if not EXAMPLES.is_dir():
        return []
    out = []
    for p in sorted(EXAMPLES.glob("*.jpg")) + sorted(EXAMPLES.glob("*.png")):
        thumb = cache_dir / "examples" / f"{p.stem}-{THUMB_WIDTH}.jpg"
        if not thumb.is_file() or thumb.stat().st_mtime < p.stat().st_mtime:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                continue
            h, w = img.shape[:2]
            small = cv2.resize(img, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))),
                               interpolation=cv2.INTER_AREA)  # fmt: skip
            thumb.parent.mkdir(parents=True, exist_ok=True)
            tmp = thumb.with_name(f".{thumb.name}.{os.getpid()}.tmp.jpg")
            cv2.imwrite(str(tmp), small, [cv2.IMWRITE_JPEG_QUALITY, 85])
            os.replace(tmp, thumb)
        out.append((str(thumb), str(p)))
    return out


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
            thumbs = example_thumbnails(shared.studio.ctx.cache_dir)
            examples = gr.Gallery([t for t, _ in thumbs], label="Examples (click one to use it)",
                                  columns=4, height=150, allow_preview=False, object_fit="cover",
                                  visible=bool(thumbs), elem_id="examples")  # fmt: skip
        with gr.Column():
            with gr.Row():
                frame0 = gr.Image(label="The photo as the world sees it (frame 0)",
                                  interactive=False, elem_id="frame0-preview")  # fmt: skip
                depth = gr.Image(label="Estimated depth (near = warm)", interactive=False,
                                 elem_id="depth-preview")  # fmt: skip
            cloud = gr.Plot(label="Seeded point cloud", elem_id="seed-cloud")
            info = gr.Markdown(elem_id="photo-info")
    return {
        "photo": photo,
        "preview": preview,
        "fov": fov,
        "use": use,
        "examples": examples,
        "example_paths": [p for _, p in thumbs],
        "frame0": frame0,
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
    return depth_preview(d), point_cloud_figure(rgb, d, np.asarray(f.K)), text, rgb


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
        [c["depth"], c["cloud"], c["info"], c["frame0"]],
        api_name="set_photo",
    )

    paths = c["example_paths"]

    def pick_example(evt: gr.SelectData):
        return paths[evt.index] if 0 <= evt.index < len(paths) else gr.skip()

    c["examples"].select(pick_example, None, [c["photo"]], api_visibility="private")
