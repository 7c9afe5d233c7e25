"""The ``local`` executor: worker threads inside the studio process (the embedded default).

``slots`` threads each run the pull loop of :class:`~studio.executors.runner.JobRunner` on the
studio's own service, so they share its warm pipeline and its database and store. ``submit``
wakes them at once (no polling delay in-process). With ``slots = 0`` nothing runs in the
background: a Ray actor's service uses that, because the actor runs its own loop.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from studio.executors.runner import JobRunner

if TYPE_CHECKING:
    from studio.service import Studio

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """``slots`` worker threads claiming generation jobs; lift/export run in the caller's thread."""

    name = "local"

    def __init__(self, studio: Studio, slots: int) -> None:
        self.studio = studio
        self.runner = JobRunner(studio, studio.owner)
        self._stop = self.runner.stopping
        self._wakes = [threading.Event() for _ in range(slots)]
        self._threads = [
            threading.Thread(
                target=self.runner.serve, args=(self._stop, wake), name=f"loci-job-{i}", daemon=True
            )  # fmt: skip
            for i, wake in enumerate(self._wakes)
        ]
        for t in self._threads:
            t.start()

    def submit(self, job_id: str) -> None:
        for wake in self._wakes:
            wake.set()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.studio, f"{method}_here")(*args)

    def close(self) -> None:
        self._stop.set()
        for wake in self._wakes:
            wake.set()
        for t in self._threads:
            t.join(timeout=60)
