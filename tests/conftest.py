"""Test-wide fixtures and hooks.

- Real services started once per test session (``tests/services.py``: PostgreSQL, moto's S3
  emulator). Defined here, not imported into each module, so that a session fixture is one
  fixture: one server for the whole run.
- When the real data is absent, the tests that need it skip with a reason that says where it
  comes from (instead of erroring on a missing file).
"""

from __future__ import annotations

import pytest

from tests.helpers import DATA, DATA_REASON
from tests.services import pg_server, pg_url, s3_server, s3_url

__all__ = ["pg_server", "pg_url", "s3_server", "s3_url"]


def pytest_report_header(config) -> str:
    return (
        f"real data: {DATA} ({'present' if DATA.is_dir() else 'ABSENT: the tests needing it skip'})"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure that names a path under the absent data folder (an exception, a one-line CLI
    error, a fixture that could not load a photo) is reported as a skip with the reason."""
    report = yield
    if report.failed and not DATA.is_dir():
        text = report.longreprtext + "".join(content for _, content in report.sections)
        if str(DATA) in text:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {DATA_REASON}")
    return report
