"""Test-wide fixtures and hooks.

- Real services started once per test session (``tests/services.py``: PostgreSQL, moto's S3
  emulator). Defined here, not imported into each module, so that a session fixture is one
  fixture: one server for the whole run.
- When the real data is absent, the tests that need it skip with a reason that says where it
  comes from (instead of erroring on a missing file).
- An offline hub, a tiny random SD inpainting model, and training samples from the real TUM
  sequence (the training tests).
- The hub is never contacted (``auto`` depth decides offline at once).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers import DATA, DATA_REASON
from tests.services import pg_server, pg_url, s3_server, s3_url

# Tests must not download models, whatever network the machine has: auto depth then takes the
# offline layout prior, exactly as on an air-gapped install.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Gradio's uploads go to a folder of this run's own. The shared <tmp>/gradio keeps files from
# earlier runs: an upload of the same photo reuses its content-addressed file with the old
# mtime, and a studio's temp-file cleanup could delete it between upload and use.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="loci-tests-gradio-"))

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


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE=1 for the module; the model cache is emptied afterwards."""
    from models.manager import MANAGER

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    MANAGER.clear()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, offline) -> Path:
    """A tiny random SD inpainting pipeline saved to a folder (``tests.helpers``)."""
    from tests.helpers import build_tiny_inpaint

    return build_tiny_inpaint(tmp_path_factory.mktemp("sdi") / "tiny-sd-inpaint")


@pytest.fixture(scope="module")
def tum_samples(tmp_path_factory) -> Path:
    """Training samples from the real TUM sequence at 64 px (frame 0's sensor depth, ``layout``
    depth for the rest), with the sequence's first frame stored as the reference."""
    from models.depth import create_depth_backend
    from storage.train.shards import SampleStore
    from tests.helpers import TUM

    if not TUM.is_dir():
        pytest.skip("shared TUM sequence not present")
    from models.train.samples import SampleBuilder, SampleConfig
    from storage.train.footage import read_footage
    from studio.cli.train import footage_frames

    out = tmp_path_factory.mktemp("train") / "data"
    config = SampleConfig(width=64)
    store = SampleStore(out, {"width": 64, "height": 48, "config": config.to_dict()}, 8)
    builder = SampleBuilder(config, create_depth_backend("layout"))
    for step in builder.build("tum", footage_frames(read_footage(TUM))):
        if step.order == 0:
            store.save_reference("tum", step.rgb)  # the video painter's reference image
        if step.sample is not None:
            store.add(step.sample.arrays(), step.sample.info())
    store.finish()
    return out
