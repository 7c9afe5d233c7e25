"""Test-wide settings: the hub is never contacted (``auto`` depth decides offline at once)."""

from __future__ import annotations

import os

# Tests must not download models, whatever network the machine has: auto depth then takes the
# offline layout prior, exactly as on an air-gapped install.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
