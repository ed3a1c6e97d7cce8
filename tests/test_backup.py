"""Backups of the database, taken while the studio is writing to it."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from storage import StorageError
from storage.backup import backup_sqlite, timestamped_backup
from studio.__main__ import main
from tests.drafts import seed_rated_drafts


def _ratings(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM ratings").fetchone()[0]


def test_a_backup_taken_during_writes_is_a_consistent_copy(studio, tmp_path):
    seed_rated_drafts(studio, 10)
    done = threading.Event()

    def keep_writing():
        seed_rated_drafts(studio, 30, start=100)
        done.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    copy = backup_sqlite(studio.settings.database_url, tmp_path / "copy.db")
    writer.join()
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Every rating in the copy belongs to a draft in the copy: a snapshot, not a torn read.
        assert db.execute("SELECT count(*) FROM ratings WHERE draft_id NOT IN (SELECT id FROM drafts)").fetchone() == (0,)
    assert 10 <= _ratings(copy) <= 40 and done.is_set()


def test_timestamped_backups_keep_the_newest_few(studio, tmp_path):
    for _ in range(4):
        timestamped_backup(studio.settings.database_url, tmp_path / "backups", keep=2)
    assert len(list((tmp_path / "backups").glob("studio-*.db"))) <= 2


def test_the_backup_command_and_its_errors(settings, capsys, tmp_path):
    from studio.core.studio import Studio

    studio = Studio(settings)
    seed_rated_drafts(studio, 3)
    assert main(["backup", "--data-dir", settings.data_dir, "--model", settings.model,
                 "-o", str(tmp_path / "b.db")]) == 0
    assert _ratings(tmp_path / "b.db") == 3
    with pytest.raises(StorageError, match="pg_dump"):
        backup_sqlite("postgresql+psycopg://u@localhost/db", tmp_path / "x.db")
