"""A run that fails, dies or is declared dead leaves training open for the next one, and a run
that lost its hold writes nothing more: names are unique for good, any replica or command line
ends a dead run, and a run declared dead can neither record success nor serve its version."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from storage import registry
from storage.registry import RunLost
from studio.learning import lease as lease_module
from studio.learning.jobs import execute_run, recover
from studio.learning.lease import fail_run
from tests.drafts import seed_rated_drafts
from tests.test_training import fast_config
from tests.waiting import wait_for


def _run(studio, **overrides) -> dict:
    run_id, _ = studio.versions.train("cli", user="local")
    return execute_run(studio.sessions, studio.settings, fast_config(studio, **overrides), run_id)


def _versions(studio) -> dict[str, str]:
    return {v["name"]: v["status"] for v in studio.versions.list()}


def test_a_run_that_failed_before_saving_its_adapter_does_not_block_the_next(studio, monkeypatch):
    """Out of memory mid-training leaves v1 failed with no adapter; the next run is v2, not a clash
    with v1's name, and the base is still the base."""
    from studio.learning import pipeline as run_module

    seed_rated_drafts(studio, 12)
    trainer = run_module.train_adapter

    def out_of_memory(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(run_module, "train_adapter", out_of_memory)
    with pytest.raises(MemoryError):
        _run(studio)
    assert _versions(studio) == {"base": "promoted", "v1": "failed"}
    assert "MemoryError: out of memory" in studio.versions.runs()[0]["error"]

    monkeypatch.setattr(run_module, "train_adapter", trainer)
    summary = _run(studio)
    assert summary["version"] == "v2" and summary["decision"] == "undecided", summary  # liked drafts alone
    assert _versions(studio)["v1"] == "failed" and studio.pool.load().version == "base"
    with studio.sessions.begin() as session:  # v1, without an adapter too, is not taken for the base
        assert registry.ensure_base_version(session, studio.settings.model).name == "base"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _held_by(studio, run_id: int, worker: str, silent_for: timedelta) -> None:
    with studio.sessions.begin() as session:
        assert registry.claim_run(session, run_id, worker, 1)
        registry.get_run(session, run_id).heartbeat_at = datetime.now(timezone.utc) - silent_for


def test_a_run_left_by_a_dead_command_line_is_ended_when_training_is_asked_for_again(studio):
    """`python -m studio train` killed: its run no longer holds the one open slot, for the command
    line, the Train button or the auto-trigger alike, without an app restart."""
    first, _ = studio.versions.train("cli", user="local")
    _held_by(studio, first, f"{socket.gethostname()}:{_dead_pid()}", timedelta(seconds=1))
    second, created = studio.versions.train("cli", user="local")
    assert created and second != first
    run = next(r for r in studio.versions.runs() if r["id"] == first)
    assert run["status"] == "failed" and "stopped unexpectedly" in run["error"]


def test_any_replica_ends_a_run_whose_heartbeat_fell_silent_and_leaves_a_beating_one(studio):
    """On another host the PID tells nothing: the heartbeat does. The runner of any replica looks."""
    run_id, _ = studio.versions.train("cli", user="local")
    _held_by(studio, run_id, "elsewhere:4242", timedelta(seconds=30))
    studio.jobs._tick()
    assert studio.versions.runs()[0]["status"] == "running"  # beating 30 s ago: alive
    with studio.sessions.begin() as session:
        registry.get_run(session, run_id).heartbeat_at -= lease_module.STALE_AFTER
    studio.jobs._tick()
    run = studio.versions.runs()[0]
    assert run["status"] == "failed" and "silent for 2 minutes" in run["error"]


def test_a_run_declared_dead_cannot_record_success_or_serve_its_version(studio, monkeypatch):
    """The run is declared dead (another replica saw it silent) while it trains: it stops at its
    next write, and neither its version nor a success is recorded."""
    from studio.learning import pipeline as run_module

    seed_rated_drafts(studio, 12)
    trainer = run_module.train_adapter

    def train_then_declared_dead(*args, **kwargs):
        trained = trainer(*args, **kwargs)
        with studio.sessions() as session:
            run_id = registry.open_run(session).id
        assert fail_run(studio.sessions, run_id, "declared dead by another replica",
                        silent_since=datetime.now(timezone.utc) + timedelta(seconds=1))
        return trained

    monkeypatch.setattr(run_module, "train_adapter", train_then_declared_dead)
    with pytest.raises(RunLost, match="no longer this process's"):
        _run(studio)
    run = studio.versions.runs()[0]
    assert (run["status"], run["error"]) == ("failed", "declared dead by another replica")
    assert _versions(studio) == {"base": "promoted", "v1": "failed"}
    assert studio.pool.load().version == "base"


def test_a_slow_phase_that_reports_nothing_keeps_its_heartbeat(studio, monkeypatch):
    """Loading a large model reports no progress: the heartbeat thread beats on meanwhile."""
    from studio.learning import pipeline as run_module

    monkeypatch.setattr(lease_module, "HEARTBEAT_SECONDS", 0.05)
    seed_rated_drafts(studio, 12)
    loader, beats = run_module.load_model, []

    def slow_load(*args, **kwargs):
        def heartbeat():
            with studio.sessions() as session:
                return registry.open_run(session).heartbeat_at

        before = heartbeat()
        beats.append(wait_for(lambda: heartbeat() > before, seconds=10))
        return loader(*args, **kwargs)

    monkeypatch.setattr(run_module, "load_model", slow_load)
    _run(studio)
    assert beats and all(beats)


def test_a_half_written_adapter_of_another_replicas_live_save_is_kept(studio):
    adapters = studio.settings.data_path / "adapters"
    live, abandoned = adapters / ".staging-live", adapters / ".staging-abandoned"
    for folder in (live, abandoned):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 3600
    for path in (abandoned / "adapter_model.safetensors", abandoned):
        os.utime(path, (old, old))
    recover(studio.sessions, studio.settings.data_path)
    assert live.exists() and not abandoned.exists()


def test_a_draft_left_writing_by_another_replica_is_marked_interrupted_without_a_restart(studio):
    from app import mark_interrupted_drafts
    from storage import repository
    from storage.models import DraftStatus

    try:
        mark_interrupted_drafts(studio, every=0.05)  # this replica started before the other's stream died
        quiet = datetime.now(timezone.utc) - timedelta(minutes=5)
        with studio.sessions.begin() as session:  # a stream of another replica that died mid-draft
            draft_id = repository.add_draft(
                session, template_id="fantasy", template_name="Fantasy", fields={}, prompt="p", model_input="p",
                settings={}, seed=1, model_name="m", model_version="base", text="Once upon", user="local",
                status=DraftStatus.WRITING, created_at=quiet, updated_at=quiet).id
        assert wait_for(lambda: studio.drafts.get(draft_id, user="local")["status"] == "interrupted", seconds=10)
    finally:
        studio.close()


def test_the_database_password_is_not_kept_in_a_failed_runs_error(studio):
    run_id, _ = studio.versions.train("cli", user="local")
    fail_run(studio.sessions, run_id, "OperationalError: could not connect to "
                                      "postgresql+psycopg://studio:s3cret-pw@db.internal/studio")
    error = studio.versions.runs()[0]["error"]
    assert "s3cret-pw" not in error and "postgresql+psycopg://studio:***@db.internal/studio" in error
