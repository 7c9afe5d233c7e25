"""Generate tab: run the newest planned path as a job and stream it in as it is made.

Every frame is stored before it is shown, so Cancel (or a closed page, or a crash) keeps every
finished frame. The walkthrough streams as short video chunks, the map grows with the world,
and a progress bar gives frames done and the time left.
"""

from __future__ import annotations

import html

import gradio as gr

from studio.service import GenerationUpdate, Studio
from studio.tabs.common import Shared, friendly
from studio.tabs.trajectory import draw

#: Generation-like events share one group. They only create the job and stream its rows (the
#: executor's workers do the work and bound it), so many can follow at once; a second Generate
#: in a busy project is refused at once by the database instead of waiting in Gradio's queue.
CONCURRENCY_ID = "generation"
FOLLOWERS = 16


def progress_html(u: GenerationUpdate | None, note: str = "") -> str:
    if u is None:
        return f"<div id='loci-progress' data-done='0' data-total='0'>{html.escape(note)}</div>"
    eta = f" · about {u.eta_s:.0f} s left" if u.eta_s and u.status == "running" else ""
    return (
        f"<div id='loci-progress' data-done='{u.frames_done}' data-total='{u.total}' "
        f"data-status='{u.status}'><progress value='{u.frames_done}' max='{u.total}' "
        f"style='width:100%'></progress><div>{u.frames_done}/{u.total} frames · "
        f"{u.elapsed_s:.1f} s{eta} · {html.escape(u.status)}</div></div>"
    )


def status_text(u: GenerationUpdate) -> str:
    if u.status == "running" and u.event is not None:
        e = u.event
        return (
            f"frame {u.frames_done}/{u.total} (world frame {e.index}) · memory coverage "
            f"{e.memory_coverage:.0%} · retrieved {e.retrieved}"
        )
    return f"{u.status}: {u.frames_done}/{u.total} frames in {u.elapsed_s:.1f} s. {u.message}"


def render(shared: Shared) -> dict:
    with gr.Row():
        with gr.Column(scale=1):
            memory = gr.Checkbox(True, label="Spatial memory (off = the forgetting ablation)",
                                 elem_id="memory")  # fmt: skip
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                watch = gr.Button("Watch", elem_id="watch")
            progress = gr.HTML(progress_html(None), elem_id="progress")
            status = gr.Textbox(label="Status", interactive=False, elem_id="status")
            live_map = gr.Image(label="Map so far", interactive=False, elem_id="live-map",
                                height=320)  # fmt: skip
        with gr.Column(scale=2):
            frame = gr.Image(label="Latest frame", interactive=False, height=384,
                             elem_id="latest-frame")  # fmt: skip
            video = gr.Video(label="Walkthrough (streams as it is made)", streaming=True,
                             autoplay=True, elem_id="walkthrough")  # fmt: skip
    return {"memory": memory, "go": go, "cancel": cancel, "watch": watch, "progress": progress,
            "status": status, "map": live_map, "frame": frame, "video": video}  # fmt: skip


def stream(studio: Studio, pid: str, key: str, updates):
    """(frame, progress, status, video chunk, map) tuples for a stream of updates."""
    for u in updates:
        new_map = gr.skip()
        if u.chunk is not None or u.status != "running":
            new_map = draw(studio, studio.world(pid, key), None, None)[0]
        yield (
            u.event.rgb if u.event is not None else gr.skip(),
            progress_html(u),
            status_text(u),
            str(u.chunk) if u.chunk is not None else gr.skip(),
            new_map,
        )


def listen(shared: Shared, c: dict) -> None:
    s = shared.studio
    ids = [shared.project_id, shared.key]
    outs = [c["frame"], c["progress"], c["status"], c["video"], c["map"]]

    @friendly
    def generate(pid: str, key: str, use_memory: bool):
        yield gr.skip(), progress_html(None, "starting…"), "starting…", gr.skip(), gr.skip()
        yield from stream(s, pid, key, s.generate(pid, key, None, bool(use_memory)))

    c["go"].click(generate, [*ids, c["memory"]], outs, api_name="generate",
                  concurrency_id=CONCURRENCY_ID, concurrency_limit=FOLLOWERS, trigger_mode="once")  # fmt: skip

    @friendly
    def watch(pid: str, key: str):
        """Stream the generation already running in this project (started elsewhere)."""
        yield from stream(s, pid, key, s.watch(pid, key))

    c["watch"].click(watch, ids, outs, api_name="watch", concurrency_id=CONCURRENCY_ID,
                     concurrency_limit=FOLLOWERS)  # fmt: skip

    @friendly
    def cancel(pid: str, key: str):
        n = s.cancel(pid, key)
        return "Cancelling: finished frames are kept." if n else "Nothing is running."

    # Its own unlimited slot: a cancel must never wait behind the generation it cancels.
    c["cancel"].click(cancel, ids, [c["status"]], api_name="cancel", concurrency_limit=None)
