"""The machine a report was measured on (every benchmark and evaluation report records it)."""

from __future__ import annotations

import os
import platform
import time

import torch


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d"),
    }
