"""Scheduled copies of the SQLite database into DATA_DIR/backups while the app runs.

On Spaces the data dir sits on persistent storage, and a copy there survives a database file
damaged by a crash mid-write. `python -m studio backup` takes one copy by hand.
"""

from __future__ import annotations

import logging
import threading

from storage import StorageError
from storage.backup import sqlite_path, timestamped_backup
from studio.config import Settings

log = logging.getLogger(__name__)


def start_backups(settings: Settings) -> threading.Thread | None:
    """Copy the database every settings.backup_every hours; None when off or not SQLite."""
    if settings.backup_every <= 0:
        return None
    try:
        sqlite_path(settings.database_url)
    except StorageError:
        log.warning("Scheduled backups are for SQLite; back up this database with its own tools.")
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.backup_every * 3600):
            try:
                log.info("Database backed up to %s",
                         timestamped_backup(settings.database_url, settings.data_path / "backups"))
            except (OSError, StorageError) as exc:  # a failed copy must not stop the next one
                log.error("Database backup failed: %s", exc)

    thread = threading.Thread(target=loop, name="database-backups", daemon=True)
    thread.start()
    return thread
