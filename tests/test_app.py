"""The studio app starts, and generating through its API streams frames and writes a world."""

from __future__ import annotations

import pytest

gradio_client = pytest.importorskip("gradio_client")

from storage.bundle import read_bundle  # noqa: E402
from studio.app import StudioContext, build_app  # noqa: E402
from tests.helpers import PHOTOS  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("studio")
    app = build_app(StudioContext(data_dir=data, width=128))
    app.queue().launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=None,
        allowed_paths=[str(data)],
    )
    yield app, data
    app.close()


def test_generate_through_the_api(server, tmp_path):
    app, data = server
    client = gradio_client.Client(app.local_url, download_files=str(tmp_path), verbose=False)
    job = client.submit(
        gradio_client.handle_file(str(PHOTOS / "interior_office_03_dsine.png")),
        "orbit",
        4,
        True,
        api_name="/generate",
    )
    outputs = list(job)  # every streamed update, then the final one
    job.result()
    statuses = [o[1] for o in outputs]
    assert len(outputs) >= 4, statuses
    assert statuses[-1].startswith("done: 4 frames")
    worlds = list((data / "worlds").iterdir())
    assert len(worlds) == 1
    bundle = read_bundle(worlds[0])
    assert bundle.indices == [0, 1, 2, 3]
    assert (worlds[0] / "video.mp4").stat().st_size > 0


def test_bad_input_is_a_readable_error(server):
    app, _ = server
    client = gradio_client.Client(app.local_url, verbose=False)
    with pytest.raises(Exception, match="Upload a photo"):
        client.predict(None, "orbit", 4, True, api_name="/generate")
