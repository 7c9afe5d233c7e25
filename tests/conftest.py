"""Fixtures shared by the test modules: real services started once per test session
(``tests/services.py``: PostgreSQL, moto's S3 emulator). Defined here, not imported into each
module, so that a session fixture is one fixture: one server for the whole run.

And one test-wide setting: the hub is never contacted (``auto`` depth decides offline at once).
"""

from __future__ import annotations

import os

from tests.services import pg_server, pg_url, s3_server, s3_url

# Tests must not download models, whatever network the machine has: auto depth then takes the
# offline layout prior, exactly as on an air-gapped install.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["pg_server", "pg_url", "s3_server", "s3_url"]
