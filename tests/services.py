"""Real services for the tests, started as local processes on free ports in temp dirs.

- :func:`postgres_server`: Debian's PostgreSQL 15 (``initdb`` + ``postgres``), run as an
  unprivileged user when the tests run as root (PostgreSQL refuses to run as root);
- :func:`s3_server`: moto's server mode, an *emulator* of the S3 API standing for AWS S3, MinIO,
  Cloudflare R2 and the like.

Pytest fixtures (registered once for every module by ``tests/conftest.py``): ``pg_server``
(session), ``pg_url`` (a fresh, empty database per test), ``s3_server`` (session) and ``s3_url``
(a fresh bucket per test). When
a service cannot start, the tests that need it skip with the reason; on a machine with the
packages installed (see README, "Scaling out") they run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("LOCI_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


@dataclass
class Service:
    """A started server process: its base URL and how to stop it."""

    url: str
    proc: subprocess.Popen
    folder: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> Service:
    """A throwaway PostgreSQL cluster (trust auth, fsync off) on a free local port.

    Returns the server URL without a database name (``postgresql+psycopg://loci@127.0.0.1:P``).
    """
    for tool in ("initdb", "postgres"):
        if not (PG_BIN / tool).is_file():
            raise RuntimeError(f"PostgreSQL is not installed ({PG_BIN / tool} is missing)")
    folder = Path(tempfile.mkdtemp(prefix="loci-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the `postgres` system user
        shutil.chown(folder, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run(
        [*run_as, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "loci",
         "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, cwd=folder,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [*run_as, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
    )  # fmt: skip
    try:
        _wait_port(port, proc, 30, "PostgreSQL")
        url = f"postgresql+psycopg://loci@127.0.0.1:{port}"
        _admin(url, "SELECT 1", retries=50)
    except Exception:
        proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Service(url, proc, folder)


def _admin(server_url: str, sql: str, retries: int = 1) -> None:
    import psycopg

    dsn = server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    for attempt in range(retries):
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql)
            return
        except psycopg.OperationalError:
            if attempt == retries - 1:
                raise
            time.sleep(0.1)


def new_pg_database(server_url: str) -> str:
    """A fresh empty database on the server; returns its SQLAlchemy URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(server_url, f"CREATE DATABASE {name}")
    return f"{server_url}/{name}"


def start_s3() -> Service:
    """moto's S3 emulator (``moto_server``) on a free local port; sets dummy AWS credentials."""
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("moto[server] is not installed") from exc
    folder = Path(tempfile.mkdtemp(prefix="loci-s3-"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
    )  # fmt: skip
    try:
        _wait_port(port, proc, 60, "moto's S3 server")
    except Exception:
        proc.kill()
        raise
    return Service(f"http://127.0.0.1:{port}", proc, folder)


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment an S3 client reads: dummy credentials and the emulator's endpoint."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def new_bucket(endpoint: str) -> str:
    """A fresh bucket on the emulator; returns ``s3://bucket/prefix``."""
    import boto3

    name = f"loci-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    )  # fmt: skip
    client.create_bucket(Bucket=name)
    return f"s3://{name}/artifacts"


# ---- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    env_url = os.environ.get("LOCI_TEST_PG_SERVER")  # an existing server: no process started
    if env_url:
        yield env_url
        return
    try:
        service = start_postgres()
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run these here"
        pytest.skip(f"cannot start PostgreSQL (Debian package postgresql 15): {exc}")
    yield service.url
    service.stop()


@pytest.fixture
def pg_url(pg_server: str) -> str:
    return new_pg_database(pg_server)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    try:
        service = start_s3()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"cannot start the S3 emulator (pip install 'moto[server]'): {exc}")
    old = {k: os.environ.get(k) for k in s3_env(service.url)}
    os.environ.update(s3_env(service.url))
    yield service.url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    service.stop()


@pytest.fixture
def s3_url(s3_server: str) -> str:
    return new_bucket(s3_server)
