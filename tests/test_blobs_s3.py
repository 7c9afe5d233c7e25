"""The artifact store on an S3-compatible bucket (moto's server mode, an emulator standing for
AWS S3 / MinIO / R2, started by the test as a real process), with the rows in PostgreSQL."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from storage.blobs import ArtifactStore, sha256_bytes
from storage.db import NotFound, open_database
from storage.errors import StorageError


@pytest.fixture
def store(s3_url: str, pg_url: str):
    db = open_database(pg_url, migrate=True)
    yield ArtifactStore(s3_url, db)
    db.dispose()


def test_put_get_dedupe_stream_and_verify(store: ArtifactStore, tmp_path: Path) -> None:
    assert not store.is_local and store.root is None
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one streamed chunk
    row = store.put_bytes(data, "application/x-test")
    assert row.sha256 == sha256_bytes(data) and row.size == len(data)
    assert store.put_bytes(data).sha256 == row.sha256  # stored once
    assert store.exists(row.sha256) and store.verify(row.sha256)
    assert store.read_bytes(row.sha256) == data
    with store.open(row.sha256) as handle:
        assert handle.read(10) == data[:10]
    copy = store.copy_to(row.sha256, tmp_path / "dl" / "file.bin")
    assert copy.read_bytes() == data and not list(copy.parent.glob(".*tmp"))
    with pytest.raises(StorageError, match="not on local disk"):
        store.path_of(row.sha256)
    # A presigned URL downloads straight from the bucket, under the name asked for.
    url = store.presigned_url(row.sha256, expires_s=60, filename="world.ply")
    assert url and "Signature=" in url and "Expires=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == data
        assert 'filename="world.ply"' in response.headers["Content-Disposition"]
    with pytest.raises(NotFound):
        store.open("0" * 64)


def test_failed_row_insert_leaves_no_object(store: ArtifactStore, monkeypatch) -> None:
    def boom(*_args, **_kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(store, "_insert_row", boom)
    with pytest.raises(RuntimeError):
        store.put_bytes(b"never stored")
    assert store._stored_size(sha256_bytes(b"never stored")) is None


def test_a_local_folder_has_no_presigned_url(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}", migrate=True)
    store = ArtifactStore(tmp_path / "artifacts", db)
    row = store.put_bytes(b"local")
    assert store.is_local and store.presigned_url(row.sha256) is None
    assert store.copy_to(row.sha256, tmp_path / "out.bin").read_bytes() == b"local"
    db.dispose()
