"""What people touch: the Gradio studio, the ``loci`` CLI, jobs, exports and evaluation.

Thread policy (set here, before anything imports torch): OpenMP waits *passively*
(``OMP_WAIT_POLICY=PASSIVE``) unless the environment already says otherwise. With the default
(spinning) policy, torch's threads burn the cores they wait on, and a generation sharing two
cores with any other job collapses: 0.1 against 3.2 frames/s (median of 3 ``loci generate`` runs
each, 24 frames at 256 px, on a shared 2-core machine at load average 10-13; measured in one
run, alternating). The CLI, the studio and workers all import this package first. To measure
peak speed on an idle machine, set ``OMP_WAIT_POLICY=ACTIVE`` yourself.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
