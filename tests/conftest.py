"""Fixtures shared by the test modules: real services started once per test session
(``tests/services.py``: PostgreSQL, moto's S3 emulator). Defined here, not imported into each
module, so that a session fixture is one fixture: one server for the whole run."""

from __future__ import annotations

from tests.services import pg_server, pg_url, s3_server, s3_url

__all__ = ["pg_server", "pg_url", "s3_server", "s3_url"]
