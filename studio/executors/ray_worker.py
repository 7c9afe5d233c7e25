"""The Ray actor that runs Loci jobs: a warm pipeline and its own service on the shared state.

Each actor (``loci-worker-N``, named and detached in the ``loci`` namespace, so front-ends come
and go while it works) builds a :class:`studio.service.Studio` on the cluster's database and
artifact store, loads its backends once (models stay loaded between jobs), and runs the pull
loop of :class:`~studio.executors.runner.JobRunner` in a background thread: it claims pending
generation jobs itself (``FOR UPDATE SKIP LOCKED``), so no front-end has to be alive for a
generation to go on.

Its stable name is its job owner name: when Ray restarts a killed actor, the new instance
interrupts the job its previous instance was running at once (the job keeps every finished
frame and can be resumed on any worker). Lift and export run here too, through :meth:`call`.

This module imports no Ray: :mod:`studio.executors.ray_pool` wraps the class with
``ray.remote`` at run time, so it stays importable (and testable) without Ray installed.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["LociWorker"]


class LociWorker:
    """A job worker process. ``studio_cls``: the service class (:class:`studio.service.Studio`,
    passed in so this module does not import it); ``settings``: :meth:`StudioContext.to_dict` of
    the front-end (its database URL and artifact store, backends, limits); ``name``: the actor's
    stable name; ``serve``: claim generation jobs (False for a lift/export-only actor)."""

    def __init__(
        self, studio_cls: type, settings: dict[str, Any], name: str, serve: bool = True
    ) -> None:
        # Several workers share a machine's cores: a busy-waiting OpenMP collapses throughput.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from studio.context import StudioContext
        from studio.executors.runner import JobRunner

        values = dict(settings)
        # Rebuildable files (bundles, videos in the making) stay on the worker's own disk.
        values["data_dir"] = Path(tempfile.gettempdir()) / f"loci-{name}"
        values.update(instance=name, executor="local")
        ctx = StudioContext(**values)
        self.name = name
        self.studio = studio_cls(ctx, executor="inline")  # interrupts its previous instance's job
        if serve:
            self.studio.pipeline()  # load the backends now: the first job starts warm
        self.runner = JobRunner(self.studio, self.studio.owner)
        self._wake = threading.Event()
        self._loop = threading.Thread(
            target=self.runner.serve, args=(self.runner.stopping, self._wake), daemon=True
        )
        if serve:
            self._loop.start()

    def wake(self) -> None:
        """A job is pending: claim it now rather than at the next poll."""
        self._wake.set()

    def info(self) -> dict[str, Any]:
        """Who this worker is: name, pid, host, nonce, and jobs it interrupted at start-up."""
        owner = self.studio.owner
        return {"name": self.name, "pid": os.getpid(), "host": owner.host, "nonce": owner.nonce,
                "interrupted_at_start": [j.id for j in self.studio.interrupted_at_start]}  # fmt: skip

    def call(self, method: str, *args: Any) -> tuple[str, Any, str]:
        """``Studio.<method>_here(*args)``: ``("ok", result, "")``, or ``("error", kind,
        message)`` for the errors a person is meant to read (re-raised by the front-end)."""
        from studio.errors import user_facing

        try:
            return "ok", getattr(self.studio, f"{method}_here")(*args), ""
        except user_facing() as exc:
            return "error", type(exc).__name__, str(exc)

    def stop(self) -> None:
        """Finish the current frame, leave the job interrupted, stop claiming."""
        self.runner.stopping.set()
        self._wake.set()
        if self._loop.is_alive():
            self._loop.join(timeout=120)
