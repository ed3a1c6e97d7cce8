"""Copies of the database taken while the studio runs.

SQLite's online backup API copies a consistent snapshot page by page while writers carry on
(WAL mode lets them). PostgreSQL has its own tools for this: pg_dump.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.repository import StorageError


def sqlite_path(url: str) -> Path:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise StorageError("Backups here are for SQLite files; back up PostgreSQL with pg_dump.")
    return Path(parsed.database)


def backup_sqlite(url: str, target: Path) -> Path:
    """Copy the database at url to target (written beside it first, then renamed into place)."""
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise StorageError(f"There is no database at {source_path} to back up.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".backup-", suffix=".db", delete=False) as tmp:
        staging = Path(tmp.name)
    try:
        source = sqlite3.connect(source_path, timeout=30)
        copy = sqlite3.connect(staging)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def timestamped_backup(url: str, folder: Path, keep: int = 7) -> Path:
    """A backup named by the time in folder; only the newest `keep` are kept."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = backup_sqlite(url, folder / f"studio-{stamp}.db")
    for old in sorted(folder.glob("studio-*.db"))[:-keep]:
        old.unlink(missing_ok=True)
    return target
