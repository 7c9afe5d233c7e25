"""Where jobs run: the executor seam.

A job is a row in the shared database; an executor provides the *workers* that claim pending
jobs (``SELECT ... FOR UPDATE SKIP LOCKED``) and run them with :class:`~studio.executors.runner.
JobRunner`, which persists every finished frame before reporting it. Front-ends never hold a
generation in their own call stack: they create the job and stream it by following its rows
(:meth:`studio.jobs.GenerationJobs.follow`), so a closed page or a restarted front-end does not
stop it, and any number of front-ends can watch.

Two implementations behind one small :class:`Executor` protocol, found by name in
:data:`EXECUTORS` (heavy imports happen inside the factory):

- ``local`` (default): ``concurrent_jobs`` threads of the studio process, sharing its warm
  pipeline. Lift and export run in the caller's thread, as before.
- ``ray``: a pool of named, detached Ray actors (``loci-worker-N``), each holding a warm
  pipeline and its own service on the shared database and artifact store; lift and export run
  on an actor too. A killed actor is restarted by Ray and interrupts its previous instance's
  job at once; the front-end and every actor also interrupt jobs whose owner went silent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from studio.service import Studio

__all__ = ["EXECUTORS", "Executor", "build_executor"]


class Executor(Protocol):
    """Runs the jobs a studio creates."""

    name: str

    def submit(self, job_id: str) -> None:
        """A job is pending: have a worker claim it soon (workers also poll)."""

    def call(self, method: str, *args: Any) -> Any:
        """Run ``Studio.<method>_here(*args)`` on a worker and return its result (lift/export)."""

    def close(self) -> None:
        """Stop this process's workers (remote workers live on)."""


def _local(studio: Studio) -> Executor:
    from studio.executors.local import LocalExecutor

    return LocalExecutor(studio, studio.ctx.concurrent_jobs)


def _ray(studio: Studio) -> Executor:
    from studio.executors.ray_pool import RayExecutor

    return RayExecutor(studio)


def _inline(studio: Studio) -> Executor:
    from studio.executors.local import LocalExecutor

    return LocalExecutor(studio, 0)


#: name -> factory. "inline" has no worker threads: what a Ray actor's own service uses.
EXECUTORS: dict[str, Callable[[Studio], Executor]] = {
    "local": _local,
    "ray": _ray,
    "inline": _inline,
}


def build_executor(name: str, studio: Studio) -> Executor:
    """The executor ``name`` for ``studio`` (ValueError names the choices)."""
    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise ValueError(f"Unknown executor {name!r}; use one of {', '.join(EXECUTORS)}.") from None
    return factory(studio)
