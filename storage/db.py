"""Engine and session setup, and bringing the schema up to date.

Typical use::

    Session = open_database("sqlite:///studio-data/studio.db")
    with Session.begin() as session:   # commits on success, rolls back on error
        draft = add_draft(session, ...)

``Session()`` is for reading, ``Session.begin()`` for writing. On SQLite a
read neither takes nor waits for the database's single write lock (WAL: it
sees the last commit), and a write holds that lock until it ends (see
``_make_sqlite_engine``), so keep writes short and do slow work before them.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.repository import StorageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
READ_ONLY = "studio_read_only"  # an execution option: this connection's transactions only read


def _json_dumps(value: Any) -> str:
    # Keep Chinese (and any non-ASCII) text readable in the database file
    # instead of \\uXXXX escapes; it round-trips the same either way.
    return json.dumps(value, ensure_ascii=False)


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``, tuned for SQLite files or PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed)
    # A server may drop idle connections; test each one before use.
    return create_engine(parsed, pool_pre_ping=True, json_serializer=_json_dumps)


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _make_sqlite_engine(url: URL) -> Engine:
    in_memory = _is_memory(url)
    database = url.database or ""
    if not in_memory and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

    # timeout: how long sqlite3 waits for another connection's lock.
    engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=_json_dumps)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 driver (before 3.12's autocommit=False) only starts
        # a transaction before INSERT/UPDATE/DELETE. That makes SAVEPOINT
        # commit on RELEASE and lets DDL autocommit, so take BEGIN over
        # ourselves (the recipe from SQLAlchemy's SQLite docs).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                # Faster commits, and readers outside our transactions
                # (backups, the sqlite3 shell) neither block nor are blocked.
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # SQLite ignores foreign keys (and ON DELETE CASCADE) unless asked.
            cursor.execute("PRAGMA foreign_keys=ON")
            # A rating the page confirmed must survive a power cut: NORMAL (with
            # WAL) may lose the last commits, FULL syncs the log at each one.
            # Measured here: 0.25 ms a commit against 0.02 ms, next to drafts
            # that take seconds to write.
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            # A read: a deferred BEGIN takes no lock, and in WAL mode it never
            # waits for a writer. query_only makes a write here fail loudly
            # rather than race for the lock from a stale snapshot.
            connection.exec_driver_sql("PRAGMA query_only=ON")
            connection.exec_driver_sql("BEGIN")
            return
        # A write: IMMEDIATE takes the write lock up front. With a plain
        # (deferred) BEGIN a transaction that reads and then writes cannot
        # wait for a concurrent writer: SQLite fails it at once with
        # "database is locked" (its snapshot is stale), whatever
        # busy_timeout says. IMMEDIATE makes it wait its turn instead.
        connection.exec_driver_sql("PRAGMA query_only=OFF")
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _alembic_config(connection: Any) -> Config:
    # No alembic.ini: everything Alembic needs is set here.
    cfg = Config()
    # ConfigParser treats % as interpolation; escape it in the path.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    # env.py runs the migrations on this connection (Alembic cookbook:
    # "Sharing a Connection across one or more programmatic migration commands").
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to the newest schema (or to revision); a no-op when it is there.

    Everything runs in one transaction: on SQLite and PostgreSQL a failed
    migration leaves the database as it was.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
        return
    with engine.connect() as connection:
        # Batch migrations rebuild a SQLite table by copying it and dropping the old one; with
        # foreign keys on, that DROP would cascade and delete every rating. Turn them off around
        # the migration (outside any transaction, as SQLite requires) and check them before commit.
        raw = connection.connection.dbapi_connection
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                command.upgrade(_alembic_config(connection), revision)
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StorageError(f"The migration left rows pointing at missing rows: {broken[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None if never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class Sessions(sessionmaker):
    """A session factory whose sessions read (``sessions()``) unless a write is asked for
    (``with sessions.begin() as session``: commits on success, rolls back on error).

    On SQLite, readers (an open Training tab polling, the History list) then never queue behind
    the write lock, and writers never wait for them. Elsewhere both are ordinary sessions.
    """

    def __init__(self, engine: Engine):
        # expire_on_commit=False: returned drafts stay readable after the
        # ``with Session.begin()`` block has committed and closed.
        super().__init__(engine, expire_on_commit=False)
        self._reads = engine.execution_options(**{READ_ONLY: True})
        self.on_commit: Callable[[float], None] | None = None  # told each commit's seconds (the metrics)

    def __call__(self, **local_kw: Any) -> Session:
        return super().__call__(**{"bind": self._reads, **local_kw})

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with super().__call__() as session:
            with session.begin():
                yield session
                committing = time.perf_counter()  # the block is done: leaving the with commits
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - committing)


def open_database(url: str) -> Sessions:
    """Connect, migrate to the newest schema and return a session factory."""
    engine = make_engine(url)
    migrate(engine)
    return Sessions(engine)
