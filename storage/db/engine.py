"""Engine factory: :func:`open_database` turns any SQLAlchemy URL into a ready :class:`Database`.

SQLite (the embedded default) gets the settings a web app needs, on *every* pooled connection:

- ``journal_mode=WAL`` (readers never block the writer), ``synchronous=NORMAL``;
- ``busy_timeout=5000`` (a writer waits up to 5 s for the lock instead of failing at once);
- ``foreign_keys=ON`` (SQLite ignores foreign keys unless told, per connection);
- write transactions start with ``BEGIN IMMEDIATE`` so the write lock is taken up front. With the
  default deferred ``BEGIN`` two transactions that both read then write can deadlock, and SQLite
  answers one of them with "database is locked" without waiting. This is SQLAlchemy's documented
  pysqlite recipe: the driver's own transaction handling is switched off (``isolation_level=None``)
  and a ``begin`` event emits our BEGIN. Read transactions use a plain (deferred) ``BEGIN``.

WAL needs a local disk, not a network mount. Other databases (PostgreSQL) need none of this and
get a plain engine; nothing else in the code depends on the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "open_database"]

_WRITE_OPTION = "loci_write"
_MIGRATION_LOCK = 0x10C1  # PostgreSQL advisory lock id held while migrating
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _install_sqlite_listeners(engine: Engine) -> None:
    """Per-connection pragmas and our own BEGIN / BEGIN IMMEDIATE (the pysqlite recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing BEGIN itself (and from committing before DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """An engine plus session factories for reads and writes, and schema migration.

    ``read_session()`` / ``write_session()`` are context managers that commit on success and roll
    back on error. Objects returned stay usable after the session closes (``expire_on_commit`` is
    off); only their column attributes are read, there are no lazy relationships.
    """

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # Shares the pool and listeners; its transactions start with BEGIN IMMEDIATE on SQLite.
        self.write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        self._read = sessionmaker(bind=engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.write_engine, expire_on_commit=False)

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only (deferred BEGIN on SQLite)."""
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session whose transaction holds the write lock from its start (SQLite)."""
        with self._write() as session, session.begin():
            yield session

    def migrate(self) -> str | None:
        """Upgrade the schema to the newest revision (idempotent); returns the revision now in force.

        Runs inside one write transaction, so two processes starting at once take turns and the
        second finds the schema already current.
        """
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.write_engine.connect() as conn:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Two processes starting at once take turns (SQLite: BEGIN IMMEDIATE does it).
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return MigrationContext.configure(conn).get_current_revision()

    def current_revision(self) -> str | None:
        """The Alembic revision of the schema (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(url: str, *, migrate: bool = False, **engine_kwargs: Any) -> Database:
    """Create a :class:`Database` for any SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://``).

    For a SQLite file the parent folder is created. ``migrate=True`` also upgrades the schema.
    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if (
            parsed.database
            and parsed.database != ":memory:"
            and not parsed.database.startswith("file:")
        ):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **engine_kwargs)
        _install_sqlite_listeners(engine)
    else:
        engine_kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **engine_kwargs)
    database = Database(url, engine)
    if migrate:
        database.migrate()
    return database
