"""Fixtures shared by the test modules: an offline hub and a tiny random SD inpainting model."""

from __future__ import annotations

from pathlib import Path

import pytest


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
