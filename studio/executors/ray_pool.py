"""The ``ray`` executor: a pool of Ray actors (:class:`~studio.executors.ray_worker.LociWorker`)
holding warm pipelines, on a Ray cluster (``--ray-address auto`` or ``ray://head:10001``) or on a
Ray started in this process (no address).

The actors are named ``loci-worker-0..N-1`` in the ``loci`` namespace and *detached*: a
front-end that restarts finds the same actors (``get_if_exists``) and their running jobs go on.
Each takes ``num_gpus=1`` when the cluster has GPUs, one CPU otherwise; Ray restarts a killed
actor (``max_restarts=-1``), and the new instance interrupts its predecessor's job at once.
``ctx.ray_lift_workers`` adds a pool of CPU actors (``loci-lift-N``) for lift and export, which
need no GPU, so they never wait behind a generation.

Front-ends never wait on an actor for a generation: they create the job row and follow it;
:meth:`RayExecutor.submit` only wakes the actors (they also poll). Lift and export are calls on
one actor (round robin) whose result is a database id or a stored file's hash.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from studio.errors import StudioError

if TYPE_CHECKING:
    from studio.service import Studio

__all__ = ["NAMESPACE", "RayExecutor", "worker_names"]

NAMESPACE = "loci"
log = logging.getLogger("loci.ray")


def worker_names(n: int, kind: str = "worker") -> list[str]:
    return [f"loci-{kind}-{i}" for i in range(n)]


class RayExecutor:
    """``ctx.ray_workers`` detached actors on the Ray cluster at ``ctx.ray_address``."""

    name = "ray"

    def __init__(self, studio: Studio) -> None:
        try:
            import ray
        except ImportError as exc:
            raise StudioError(
                "--executor ray needs Ray: pip install 'loci[scale]' (or use --executor local)."
            ) from exc
        from studio.executors.ray_worker import LociWorker

        self.studio = studio
        ctx = studio.ctx
        if not ray.is_initialized():
            ray.init(address=ctx.ray_address, namespace=NAMESPACE, ignore_reinit_error=True)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        settings = ctx.to_dict()
        settings.update(database_url=ctx.db_url, artifacts=ctx.artifacts_url)
        if ctx.db_url.startswith("sqlite") or "://" not in ctx.artifacts_url:
            log.warning("Ray workers share SQLite and a local folder only on this machine; use "
                        "PostgreSQL and an S3 bucket for a cluster (README, 'Scaling out').")  # fmt: skip
        actor = ray.remote(LociWorker)

        def start(name: str, gpus: int, serve: bool) -> Any:
            return actor.options(
                name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                max_restarts=-1, max_task_retries=0, num_cpus=0 if gpus else 1, num_gpus=gpus,
                max_concurrency=4,
            ).remote(type(studio), settings, name, serve)  # fmt: skip

        # A pool per kind of work: generation actors (a GPU each when there are GPUs) claim
        # generation jobs; lift/export go to the CPU pool when there is one, else to them.
        self.actors = [start(n, gpus, True) for n in worker_names(ctx.ray_workers)]
        self.lift_actors = [start(n, 0, False) for n in worker_names(ctx.ray_lift_workers, "lift")]
        self._calls = self.lift_actors or self.actors
        self._next = itertools.cycle(range(len(self._calls)))
        self._ray = ray

    def submit(self, job_id: str) -> None:
        for a in self.actors:
            a.wake.remote()

    def call(self, method: str, *args: Any) -> Any:
        from studio.errors import user_facing

        actor = self._calls[next(self._next)]
        status, value, message = self._ray.get(actor.call.remote(method, *args))
        if status == "ok":
            return value
        kinds = {cls.__name__: cls for cls in user_facing()}
        raise kinds.get(value, StudioError)(message)

    def workers(self) -> list[dict[str, Any]]:
        """Each actor's :meth:`LociWorker.info` (waits until they are up)."""
        return self._ray.get([a.info.remote() for a in self.actors + self.lift_actors])

    def close(self) -> None:
        """Nothing to stop here: the actors are detached and outlive this front-end."""

    def shutdown_workers(self) -> None:
        """Stop and remove the actors (their running jobs end "interrupted")."""
        for a in self.actors + self.lift_actors:
            try:
                self._ray.get(a.stop.remote(), timeout=120)
            except Exception:  # noqa: BLE001 - already dead: kill it anyway
                pass
            self._ray.kill(a, no_restart=True)
