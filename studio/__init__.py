"""What people touch: the Gradio studio, the ``loci`` CLI, jobs, exports and evaluation.

Thread policy (set here, before anything imports torch). How torch's OpenMP threads wait
between the many small operations of a frame decides its speed, and no one policy wins both
ways. A 48-frame forward walk on the London street at 512 px, on this 2-core machine, one
process at a time, in one session:

============================  ==========  ================================
OpenMP waits                  idle        two busy processes beside it
============================  ==========  ================================
spinning (``ACTIVE``)         7.8 fps     1.4 fps
OpenMP's default (unset)      8.2 fps     1.2 fps (0.4 with a long spin)
sleeping (``PASSIVE``)        3.6 fps     2.8 fps
============================  ==========  ================================

Earlier, on the machine shared with other sessions (load 10-13), spinning collapsed to 0.1
against 3.2 frames/s. So: when the machine is busy as this package loads (other work used at
least half of its cores over the last 0.1 s), OpenMP waits passively; when it is idle, OpenMP's
default applies. (The load average would do, but it remembers the last minute: a run started
right after another one would count its predecessor.) A policy set in the environment is
left alone. The studio server (``app.py``) and job workers always wait passively: they live
long and share their cores by design. The check costs 0.1 s once per process, and nothing when
the environment already names a policy.
"""

import os
import time

BUSY_LOAD_PER_CORE = 0.5  # share of the cores in use from which threads wait passively


def choose_wait_policy(load_per_core: float | None) -> str | None:
    """``"PASSIVE"`` on a busy machine (or when the load cannot be read), else None
    (OpenMP's default: spin briefly, then sleep)."""
    if load_per_core is None or load_per_core >= BUSY_LOAD_PER_CORE:
        return "PASSIVE"
    return None


def _load_per_core(window: float = 0.1) -> float | None:
    """Share of all cores busy over ``window`` seconds (Linux ``/proc/stat``), else the
    one-minute load average per core, else None."""
    try:
        with open("/proc/stat") as f:
            a = [int(x) for x in f.readline().split()[1:]]
        time.sleep(window)
        with open("/proc/stat") as f:
            b = [int(x) for x in f.readline().split()[1:]]
        total = sum(b) - sum(a)
        idle = (b[3] + b[4]) - (a[3] + a[4])  # idle + iowait
        if total > 0:
            return 1.0 - idle / total
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):  # no load average on this platform
        return None


if "OMP_WAIT_POLICY" not in os.environ:
    _policy = choose_wait_policy(_load_per_core())
    if _policy is not None:
        os.environ["OMP_WAIT_POLICY"] = _policy
