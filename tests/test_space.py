"""The repository starts as a Hugging Face Space as it is, and ships what the browser needs.

A Space installs ``requirements.txt`` (and the Debian packages in ``packages.txt``), runs
``app.py`` from the repository root with ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` set, and
reads ``sdk_version`` from README's header. The example photos and the vendored three.js + Spark
bundle live in the repository with their licences, and the studio serves its own JavaScript.
"""

from __future__ import annotations

import gzip
import re
import sys

import pytest
import tomllib

from tests.helpers import ROOT


def _requirement_lines(text: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_txt_matches_the_core_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = sorted(project["dependencies"])
    reqs = sorted(_requirement_lines((ROOT / "requirements.txt").read_text()))
    assert reqs == core, "requirements.txt must list exactly pyproject's [project] dependencies"
    assert "ffmpeg" in _requirement_lines((ROOT / "packages.txt").read_text())


def test_readme_header_names_a_gradio_version_the_project_accepts():
    from packaging.specifiers import SpecifierSet

    header = (ROOT / "README.md").read_text().split("---")[1]
    meta = dict(ln.split(":", 1) for ln in header.strip().splitlines())
    assert meta["sdk"].strip() == "gradio" and meta["app_file"].strip() == "app.py"
    version = meta["sdk_version"].strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if _name(d) == "gradio")
    assert version in SpecifierSet(spec[len("gradio") :]), (version, spec)


@pytest.mark.parametrize(
    ("env", "host", "port"),
    [
        ({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}, "0.0.0.0", 7861),
        ({"SPACE_ID": "someone/loci"}, "0.0.0.0", 7860),
        ({"LOCI_HOST": "10.0.0.5", "LOCI_PORT": "9000"}, "10.0.0.5", 9000),
        ({}, "127.0.0.1", 7860),
    ],
)
def test_app_binds_the_host_and_port_it_is_given(monkeypatch, tmp_path, env, host, port):
    import gradio as gr

    for k in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "SPACE_ID", "LOCI_HOST", "LOCI_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("app", None)
    import app

    app.main(["--data-dir", str(tmp_path / "data"), "--width", "64"])
    assert (seen["server_name"], seen["server_port"]) == (host, port)
    routes = seen["app_kwargs"]["routes"]
    assert any(getattr(r, "path", "") == "/loci/web" for r in routes)


def test_example_photos_ship_with_their_licences():
    from storage.formats.images import load_photo

    folder = ROOT / "examples"
    photos = sorted(folder.glob("*.jpg"))
    licences = (folder / "LICENSES.md").read_text()
    assert len(photos) >= 3
    for p in photos:
        assert f"`{p.name}`" in licences, f"{p.name} has no licence line"
        assert p.stat().st_size < 300_000  # small: they live in git
        photo = load_photo(p)
        assert min(photo.width, photo.height) >= 400
    assert "CC BY 4.0" in licences and "Unsplash License" in licences


def test_example_thumbnails_are_made_once(tmp_path):
    from studio.tabs.photo import example_thumbnails

    first = example_thumbnails(tmp_path)
    assert len(first) >= 3
    stamp = [(tmp_path / "examples" / t.split("/")[-1]).stat().st_mtime_ns for t, _ in first]
    again = example_thumbnails(tmp_path)
    assert again == first
    assert stamp == [(tmp_path / "examples" / t.split("/")[-1]).stat().st_mtime_ns
                     for t, _ in again]  # fmt: skip


def test_vendored_viewer_is_pinned_licensed_and_served_compressed():
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from studio.web.routes import ASSETS, asset_path, routes

    vendor = ASSETS / "vendor"
    versions = (vendor / "VERSIONS.txt").read_text()
    assert "three@0.187.0\tMIT" in versions and "@sparkjsdev/spark@2.2.0\tMIT" in versions
    for line in versions.splitlines():
        assert (vendor / line.split("\t")[2]).read_text().startswith("MIT License") or (
            "Permission is hereby granted" in (vendor / line.split("\t")[2]).read_text()
        )
    bundle = vendor / "loci3d.js"
    assert 1_000_000 < bundle.stat().st_size < 5_000_000
    package = (ROOT / "studio" / "web" / "vendor" / "package.json").read_text()
    assert '"three": "0.187.0"' in package and '"@sparkjsdev/spark": "2.2.0"' in package

    client = TestClient(Starlette(routes=routes()))
    url = "/" + asset_path("vendor/loci3d.js")
    r = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert r.headers.get("content-encoding") == "gzip" and r.content == bundle.read_bytes()
    raw = client.get(url, headers={"Accept-Encoding": "identity"})
    assert raw.content == bundle.read_bytes()
    assert client.get("/loci/web/../../service.py").status_code == 404
    assert len(gzip.compress(bundle.read_bytes())) < 1_500_000
