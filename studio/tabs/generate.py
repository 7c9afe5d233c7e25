"""Generate tab: run the newest planned path as a job and stream it in as it is made.

Every frame is stored before it is shown, so Cancel (or a closed page, or a crash) keeps every
finished frame. The walkthrough streams as short video chunks, the map grows with the world, a
small 3D view grows as each chunk of frames is lifted (a cheap preview lift), and a progress bar
gives frames done and the time left, estimated from the frames of the last few seconds (a
slowdown under load shows at once, not averaged away). The painter and depth backends are
selectable when this install has more than one, with a prompt box for painters that take one.
"""

from __future__ import annotations

import html
import time
from collections import deque

import gradio as gr
import numpy as np

from studio.service import GenerationUpdate, Studio
from studio.tabs.common import Shared, friendly
from studio.tabs.trajectory import draw
from studio.web.components import world_view
from studio.web.scene import preview_spz_b64, scene_payload
from studio.world_store import load_rgb, load_state

#: Generation-like events share one group. They only create the job and stream its rows (the
#: executor's workers do the work and bound it), so many can follow at once; a second Generate
#: in a busy project is refused at once by the database instead of waiting in Gradio's queue.
CONCURRENCY_ID = "generation"
PREVIEW_STRIDE = 8  # pixels between preview splats (about 3k per 512x384 frame)
FOLLOWERS = 16


class RecentRate:
    """Time left from the frames of the recent past: the rate over the last ``window`` frames
    (at least two chunks for painters that deliver several frames at once)."""

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.marks: deque[tuple[int, float]] = deque()

    def add(self, done: int, t: float) -> None:
        self.marks.append((done, t))
        while len(self.marks) > 2 and self.marks[-1][0] - self.marks[1][0] >= self.window:
            self.marks.popleft()

    def eta(self, remaining: int) -> float | None:
        """Seconds for ``remaining`` frames at the recent rate (None until two marks)."""
        if len(self.marks) < 2:
            return None
        (d0, t0), (d1, t1) = self.marks[0], self.marks[-1]
        if d1 <= d0 or t1 <= t0:
            return None
        return remaining * (t1 - t0) / (d1 - d0)


def progress_html(u: GenerationUpdate | None, note: str = "", eta: float | None = None) -> str:
    if u is None:
        return f"<div id='loci-progress' data-done='0' data-total='0'>{html.escape(note)}</div>"
    eta = u.eta_s if eta is None else eta
    left = f" · about {eta:.0f} s left" if eta and u.status == "running" else ""
    return (
        f"<div id='loci-progress' data-done='{u.frames_done}' data-total='{u.total}' "
        f"data-status='{u.status}'><progress value='{u.frames_done}' max='{u.total}' "
        f"style='width:100%'></progress><div>{u.frames_done}/{u.total} frames · "
        f"{u.elapsed_s:.1f} s{left} · {html.escape(u.status)}</div></div>"
    )


def status_text(u: GenerationUpdate) -> str:
    if u.status == "running" and u.event is not None:
        e = u.event
        return (
            f"frame {u.frames_done}/{u.total} (world frame {e.index}) · memory coverage "
            f"{e.memory_coverage:.0%} · retrieved {e.retrieved}"
        )
    return f"{u.status}: {u.frames_done}/{u.total} frames in {u.elapsed_s:.1f} s. {u.message}"


def backend_choices(studio: Studio) -> dict:
    """What the Generate tab offers: {"synthesis": [painters that can run here, the studio's
    own first], "depth": [likewise], "prompt": [painters taking a prompt], "unavailable":
    [(painter, why)], "default": {kind: name}}."""
    from studio.backends import list_models

    painters = studio.painters()
    default = {"synthesis": studio.ctx.synthesis, "depth": studio.ctx.depth}
    ready = [p["backend"] for p in painters if p["ready"]]
    depth = [r["backend"] for r in list_models() if r["kind"] == "depth"
             and r["weights"] != "missing" and r["backend"] != "file"]  # fmt: skip

    def first(names: list[str], d: str) -> list[str]:
        return sorted(names, key=lambda n: n != d) or [d]

    return {
        "synthesis": first(ready, default["synthesis"]),
        "depth": first(depth, default["depth"]),
        "prompt": [p["backend"] for p in painters if p["prompt"]],
        "unavailable": [(p["backend"], p["why"]) for p in painters if not p["ready"]],
        "default": default,
    }


def render(shared: Shared) -> dict:
    choices = backend_choices(shared.studio)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            memory = gr.Checkbox(True, label="Spatial memory (off = the forgetting ablation)",
                                 elem_id="memory")  # fmt: skip
            painter = gr.Dropdown(choices["synthesis"], value=choices["synthesis"][0],
                                  label="Painter (fills what memory has not seen)",
                                  visible=len(choices["synthesis"]) > 1,
                                  elem_id="painter")  # fmt: skip
            depth = gr.Dropdown(choices["depth"], value=choices["depth"][0],
                                label="Depth of new frames", visible=len(choices["depth"]) > 1,
                                elem_id="depth-backend")  # fmt: skip
            prompt = gr.Textbox(label="Prompt (what to paint into the unseen)", max_lines=2,
                                visible=choices["synthesis"][0] in choices["prompt"],
                                elem_id="prompt")  # fmt: skip
            backends = gr.Markdown(_backends_line(choices), elem_id="backends-in-use")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                watch = gr.Button("Watch", elem_id="watch")
            progress = gr.HTML(progress_html(None), elem_id="progress", min_height=56)
            status = gr.Textbox(label="Status", interactive=False, elem_id="status")
            live_map = gr.Image(label="Map so far", interactive=False, elem_id="live-map",
                                height=300)  # fmt: skip
        with gr.Column(scale=2, min_width=320):
            frame = gr.Image(label="Latest frame", interactive=False, height=360,
                             elem_id="latest-frame")  # fmt: skip
            with gr.Row():
                with gr.Column(min_width=260):
                    gr.Markdown("**The world growing in 3D** (a quick preview lift per chunk)")
                    live = world_view(compact=True, elem_id="live-view")
                with gr.Column(min_width=260):
                    video = gr.Video(label="Walkthrough (streams as it is made)",
                                     streaming=True, autoplay=True, elem_id="walkthrough")  # fmt: skip
    return {"memory": memory, "painter": painter, "depth": depth, "prompt": prompt,
            "backends": backends, "go": go, "cancel": cancel, "progress": progress,
            "status": status, "map": live_map, "frame": frame, "video": video, "live": live,
            "watch": watch, "choices": choices}  # fmt: skip


def _backends_line(choices: dict) -> str:
    d = choices["default"]
    text = f"Backends: painter `{d['synthesis']}`, depth `{d['depth']}`"
    if len(choices["synthesis"]) == 1 and len(choices["depth"]) == 1:
        text += " (the only ones that can run here)"
    if choices["unavailable"]:
        text += ". Not here: " + "; ".join(f"`{b}` ({why})" for b, why in choices["unavailable"])
    return text + "."


def _frame_tuple(rgb: np.ndarray, depth: np.ndarray, K, c2w) -> tuple:
    return rgb, np.asarray(depth, np.float32), np.asarray(K, float), np.asarray(c2w, float)


class LiveWorld:
    """The Generate tab's 3D preview: the world so far, one cheap lift per chunk of frames."""

    def __init__(self, studio: Studio, pid: str, key: str) -> None:
        ws = studio.world(pid, key)
        self.meta = ws.meta
        self.cameras = [(np.asarray(f.K), np.asarray(f.c2w)) for f in ws.frames]
        pick = np.unique(np.linspace(0, len(ws.frames) - 1, min(8, len(ws.frames))).astype(int))
        seen = [ws.frames[i] for i in pick]
        self.pending = [
            _frame_tuple(load_rgb(studio.store, f), load_state(studio.store, f)["depth"], f.K,
                         f.c2w) for f in seen
        ]  # fmt: skip
        self.next_id = 0

    def add(self, u: GenerationUpdate) -> None:
        e = u.event
        self.cameras.append((e.camera.K, e.camera.c2w))
        self.pending.append(_frame_tuple(e.rgb, e.depth, e.camera.K, e.camera.c2w))

    def flush(self, reset: bool = False):
        """A view update with the frames added since the last one lifted (or gr.skip())."""
        if not self.pending:
            return gr.skip()
        chunk = {"id": self.next_id, "spz": preview_spz_b64(self.pending, PREVIEW_STRIDE)}
        self.next_id += 1
        self.pending = []
        scene = scene_payload(self.meta, self.cameras, chunks=[chunk])
        scene["reset_chunks"] = reset
        return gr.HTML(scene=scene, live=True)


def stream(studio: Studio, pid: str, key: str, updates, live: LiveWorld | None = None):
    """(frame, progress, status, video chunk, map, 3D view) tuples for a stream of updates."""
    rate = RecentRate()
    t_start = time.perf_counter()
    for u in updates:
        new_map, view = gr.skip(), gr.skip()
        text = status_text(u)
        if u.status == "pending":  # no worker free yet: say where it stands, time from now on
            ahead, running = studio.queue_position(u.job_id)
            text = (f"Waiting for a free worker: {ahead} generation(s) ahead of this one, "
                    f"{running} running.")  # fmt: skip
            rate, t_start = RecentRate(), time.perf_counter()
        elif not rate.marks:  # the first frame of this stream (a watched job has earlier ones)
            rate.add(u.frames_done - 1, t_start)
        if u.event is not None and live is not None:
            live.add(u)
        if u.chunk is not None or u.status != "running":
            new_map = draw(studio, studio.world(pid, key), None, None)
            if live is not None:
                view = live.flush()
        rate.add(u.frames_done, time.perf_counter())
        yield (
            u.event.rgb if u.event is not None else gr.skip(),
            progress_html(u, eta=rate.eta(u.total - u.frames_done)),
            text,
            str(u.chunk) if u.chunk is not None else gr.skip(),
            new_map,
            view,
        )


def listen(shared: Shared, c: dict) -> None:
    s = shared.studio
    ids = [shared.project_id, shared.key]
    outs = [c["frame"], c["progress"], c["status"], c["video"], c["map"], c["live"]]
    prompt_painters = set(c["choices"]["prompt"])

    @friendly
    def generate(pid: str, key: str, use_memory: bool, painter: str | None = None,
                 depth: str | None = None, prompt: str | None = None):  # fmt: skip
        s.require_edit(pid, key)  # before any work: a view-only link is refused at once
        chosen = {k: v for k, v in (("synthesis", painter), ("depth", depth)) if v}
        if prompt and (painter or s.ctx.synthesis) in prompt_painters:
            chosen["prompt"] = str(prompt).strip()
        gen = s.generate(pid, key, None, bool(use_memory), backends=chosen or None)
        live = LiveWorld(s, pid, key)
        yield (gr.skip(), progress_html(None, "starting…"), "starting…", gr.skip(), gr.skip(),
               live.flush(reset=True))  # fmt: skip
        yield from stream(s, pid, key, gen, live)

    c["go"].click(generate, [*ids, c["memory"], c["painter"], c["depth"], c["prompt"]], outs,
                  api_name="generate", concurrency_id=CONCURRENCY_ID,
                  concurrency_limit=FOLLOWERS, trigger_mode="once",
                  show_progress_on=[c["progress"]])  # fmt: skip

    c["painter"].change(lambda p: gr.update(visible=p in prompt_painters), [c["painter"]],
                        [c["prompt"]], api_visibility="private")  # fmt: skip

    @friendly
    def watch(pid: str, key: str):
        """Stream the generation already running in this project (started elsewhere)."""
        updates = s.watch(pid, key)
        live = LiveWorld(s, pid, key)
        yield (gr.skip(), progress_html(None, "following…"), "following…", gr.skip(), gr.skip(),
               live.flush(reset=True))  # fmt: skip
        yield from stream(s, pid, key, updates, live)

    c["watch"].click(watch, ids, outs, api_name="watch", concurrency_id=CONCURRENCY_ID,
                     concurrency_limit=FOLLOWERS, show_progress_on=[c["progress"]])  # fmt: skip

    @friendly
    def cancel(pid: str, key: str):
        n = s.cancel(pid, key)
        return "Cancelling: finished frames are kept." if n else "Nothing is running."

    # Its own unlimited slot: a cancel must never wait behind the generation it cancels.
    c["cancel"].click(cancel, ids, [c["status"]], api_name="cancel", concurrency_limit=None)
