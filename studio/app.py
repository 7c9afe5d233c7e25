"""The studio's Gradio app (first cut: one page that generates and streams a world).

Thin on purpose: handlers validate, call ``models`` / ``storage``, and raise ``gr.Error`` with the
same plain messages the CLI prints. The full studio (projects, history, share links) builds on
this in its own issue.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from models.pipeline import PipelineConfig, WorldPipeline
from models.trajectory import PRESET_NAMES, make_preset
from storage.bundle import BundleWriter
from storage.images import load_photo
from storage.video import VideoStream
from studio.cli import USER_ERRORS

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"


@dataclass
class StudioContext:
    """What the app needs from its environment: where worlds are written."""

    data_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "loci-studio")
    width: int = 512


def generate_world(
    ctx: StudioContext, photo_path: str | None, path: str, frames: int, use_memory: bool
):
    """Generator handler: yields (frame image, status text, video, bundle folder) as it goes."""
    if not photo_path:
        raise gr.Error("Upload a photo first (JPEG or PNG).")
    if path not in PRESET_NAMES:
        raise gr.Error(f"Unknown camera path {path!r}.")
    frames = int(frames)
    if not 2 <= frames <= 600:
        raise gr.Error("Choose between 2 and 600 frames.")
    try:
        photo = load_photo(photo_path)
        pipe = WorldPipeline(config=PipelineConfig(width=ctx.width, use_memory=use_memory))
        world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
        traj = make_preset(
            path, world.cameras[0], frames, up=world.up, scene_depth=world.scene_depth
        )
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from e
    out = ctx.data_dir / "worlds" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    with (
        BundleWriter(out) as bundle,
        VideoStream(bundle.path("video.mp4"), world.width, world.height) as video,
    ):
        events = [world.seed_event]
        for event in itertools.chain(events, pipe.explore(world, traj.cameras[1:])):
            bundle.write_frame(
                event.index, event.rgb, event.depth, event.source_mask, event.record()
            )
            video.write(event.rgb)
            status = (
                f"frame {event.index + 1}/{frames} - memory coverage "
                f"{event.memory_coverage:.0%} - {time.perf_counter() - t0:.1f} s"
            )
            yield event.rgb, status, None
        bundle.write_json("trajectory.json", traj.resized(world.width, world.height).to_dict())
        bundle.finish(world.meta())
    yield (
        event.rgb,
        f"done: {frames} frames in {time.perf_counter() - t0:.1f} s",
        str(out / "video.mp4"),
    )


def build_app(ctx: StudioContext | None = None) -> gr.Blocks:
    ctx = ctx or StudioContext()
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="Loci studio") as app:
        gr.Markdown("# Loci\nOne photo and a camera path become an explorable 3D world.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(
                    type="filepath", label="Photo", sources=["upload"], elem_id="photo"
                )
                path = gr.Dropdown(
                    list(PRESET_NAMES), value="forward", label="Camera path", elem_id="camera-path"
                )
                frames = gr.Slider(2, 120, value=24, step=1, label="Frames", elem_id="frames")
                memory = gr.Checkbox(value=True, label="Spatial memory", elem_id="memory")
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                if EXAMPLES.is_dir():
                    gr.Examples(sorted(str(p) for p in EXAMPLES.glob("*.jpg"))[:4], photo)
            with gr.Column():
                frame = gr.Image(
                    label="Latest frame", interactive=False, height=360, elem_id="latest-frame"
                )
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                video = gr.Video(label="Walkthrough", elem_id="walkthrough")
        go.click(
            lambda *a: (yield from generate_world(ctx, *a)),
            [photo, path, frames, memory],
            [frame, status, video],
            api_name="generate",
        )
    return app
