"""``loci bench --executor ray``: what running jobs on Ray actors costs and brings.

Every figure is measured in one run, on one machine, against the local executor as the
baseline:

- **per-frame time** of one generation (submit -> last frame streamed back, divided by its
  frames), local threads vs one Ray actor, median over repeats, and the Ray overhead per frame;
- **job start latency**: submit -> first frame streamed;
- **throughput** (frames/min) of two generations in two projects at once, with 1 and 2 workers
  (local threads, and Ray actors with one CPU each);
- **peak memory of the front-end** (RSS of this process, sampled while streaming) with 4
  generations streaming at once: with Ray the models live in the actors, not the front-end.

The state is a temp SQLite database and artifact folder (both executors on this machine), or
``--database-url`` / ``--artifacts`` (e.g. PostgreSQL and a bucket).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studio.evaluation.bench import PHOTO

__all__ = ["format_executor_report", "run_executor_bench"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@contextmanager
def _peak_rss() -> Any:
    """Samples this process's RSS every 20 ms; yields a dict that gets ``peak_mb``."""
    out = {"before_mb": _rss_mb(), "peak_mb": _rss_mb()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            out["peak_mb"] = max(out["peak_mb"], _rss_mb())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()


class _Bench:
    def __init__(self, root: Path, width: int, frames: int, database_url: str | None,
                 artifacts: str | None) -> None:  # fmt: skip
        self.root, self.width, self.frames = root, width, frames
        self.database_url = database_url or f"sqlite:///{root / 'loci.db'}"
        self.artifacts = artifacts or str(root / "artifacts")

    def studio(self, executor: str, workers: int) -> Any:
        from studio.context import StudioContext
        from studio.service import Studio

        ctx = StudioContext(
            data_dir=self.root / f"front-{executor}-{workers}", database_url=self.database_url,
            artifacts=self.artifacts, width=self.width, executor=executor,
            concurrent_jobs=workers, ray_workers=workers, poll_s=0.02,
            instance=f"bench-{executor}-{workers}",
        )  # fmt: skip
        return Studio(ctx)

    def projects(self, studio: Any, n: int) -> list[tuple[str, str]]:
        out = []
        for i in range(n):
            pid, _, key = studio.create_project(f"bench {i}")
            studio.set_photo(pid, key, str(PHOTO))
            out.append((pid, key))
        return out

    def generate(self, studio: Any, projects: list[tuple[str, str]]) -> dict[str, float]:
        """Generate ``frames`` in each project at once; returns wall and first-frame times."""
        for pid, key in projects:
            studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit",
                                                        frames=self.frames + 1, start="photo"))  # fmt: skip
        firsts: list[float] = []
        errors: list[BaseException] = []
        t0 = time.perf_counter()

        def follow(pid: str, key: str) -> None:
            try:
                for u in studio.generate(pid, key):
                    if u.frames_done == 1 and u.status == "running":
                        firsts.append(time.perf_counter() - t0)
                if u.status != "done":
                    raise RuntimeError(f"a benchmark generation ended {u.status}: {u.message}")
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=follow, args=p) for p in projects]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return {"wall_s": time.perf_counter() - t0, "first_frame_s": statistics.median(firsts)}


def run_executor_bench(
    executor: str = "ray", *, repeats: int = 3, frames: int = 16, width: int = 256,
    database_url: str | None = None, artifacts: str | None = None, ray_address: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The suite above; returns the report (medians, ratios, raw samples)."""
    if executor != "ray":
        raise ValueError("the executor benchmark compares --executor ray with local")
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, num_cpus=None if ray_address else 2,
                 namespace="loci", include_dashboard=False, log_to_driver=False)  # fmt: skip
    report: dict[str, Any] = {"frames": frames, "width": width, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="loci-bench-exec-") as tmp:
        b = _Bench(Path(tmp), width, frames, database_url, artifacts)
        per_frame: dict[str, list[float]] = {"local": [], "ray": []}
        starts: dict[str, list[float]] = {"local": [], "ray": []}
        throughput: dict[str, float] = {}
        memory: dict[str, dict[str, float]] = {}
        for name in ("local", "ray"):
            for workers in (1, 2):
                studio = b.studio(name, workers)
                try:
                    if workers == 1:
                        (project,) = b.projects(studio, 1)
                        b.generate(studio, [project])  # warm-up: models and code paths loaded
                        for _ in range(repeats):
                            r = b.generate(studio, [project])
                            per_frame[name].append(r["wall_s"] / frames)
                            starts[name].append(r["first_frame_s"])
                    pair = b.projects(studio, 2)
                    walls = [b.generate(studio, pair)["wall_s"] for _ in range(repeats)]
                    throughput[f"{name}_{workers}"] = 2 * frames * 60 / statistics.median(walls)
                    if workers == 2:
                        four = b.projects(studio, 4)
                        with _peak_rss() as rss:
                            b.generate(studio, four)
                        memory[name] = rss
                finally:
                    if name == "ray":
                        studio.executor.shutdown_workers()
                    studio.close()
        med = {k: statistics.median(v) for k, v in per_frame.items()}
        report["per_frame_s"] = {**med, "samples": per_frame}
        report["ray_overhead_per_frame_s"] = med["ray"] - med["local"]
        report["ray_vs_local_ratio"] = med["ray"] / med["local"]
        report["first_frame_s"] = {k: statistics.median(v) for k, v in starts.items()}
        report["frames_per_min"] = throughput
        report["frontend_rss_4_streams_mb"] = memory
    return report


def format_executor_report(r: dict[str, Any]) -> str:
    pf, fpm, mem = r["per_frame_s"], r["frames_per_min"], r["frontend_rss_4_streams_mb"]
    lines = [
        f"executor bench: {r['frames']} frames at {r['width']} px, median of {r['repeats']}",
        f"per frame, one generation: local {pf['local'] * 1e3:.1f} ms, ray {pf['ray'] * 1e3:.1f} ms"
        f" (overhead {r['ray_overhead_per_frame_s'] * 1e3:+.1f} ms, ratio "
        f"{r['ray_vs_local_ratio']:.2f})",
        f"submit -> first frame: local {r['first_frame_s']['local']:.2f} s, "
        f"ray {r['first_frame_s']['ray']:.2f} s",
        "two generations at once, frames/min: "
        + ", ".join(f"{k.replace('_', ' x')} {v:.0f}" for k, v in fpm.items()),
    ]
    for name, m in mem.items():
        lines.append(
            f"front-end RSS with 4 streams ({name}): peak {m['peak_mb']:.0f} MB "
            f"(before {m['before_mb']:.0f} MB)"
        )
    return "\n".join(lines)
