"""A process's hold on the training run it carries out: every write checks it still holds it.

A run is held by one process (its `worker`, host:pid). Other processes (the app's runner, any
replica, the command line) end a run whose heartbeat has gone silent for STALE_AFTER, or whose
process on this host is gone; from then on the run is theirs to record, not its old holder's.
So each write of the holder checks, in the same transaction, that it still holds the run
(registry.hold_run locks the row and renews the heartbeat), and a holder that lost it stops with
RunLost rather than flipping a failed run to succeeded or serving its version. While the run
works (a model loads, drafts are written, a trainer steps), a thread renews the heartbeat every
HEARTBEAT_SECONDS, so a slow phase that reports nothing is not taken for a dead one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

from sqlalchemy.orm import Session

from storage import registry
from storage.models import RunStatus, VersionStatus
from studio.logs import redact

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
# A run whose heartbeat is older than this is dead or hung, on any host (twelve missed beats; the
# hand-over from the runner to its child, which imports torch first, also fits well inside it).
STALE_AFTER = timedelta(minutes=2)


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


class RunLease:
    """This process's hold on run_id, taken by claim() or hand_over()."""

    def __init__(self, sessions, run_id: int, worker: str):
        self.sessions = sessions
        self.run_id = run_id
        self.worker = worker
        self.lost = ""  # why, once the heartbeat found the run no longer held
        self._stop = threading.Event()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction that holds only while this process holds the run (else RunLost)."""
        self.check()
        with self.sessions.begin() as session:
            registry.hold_run(session, self.run_id, self.worker)
            yield session

    def check(self) -> None:
        """Raise RunLost once the heartbeat has found the run ended by someone else."""
        if self.lost:
            raise registry.RunLost(self.lost)

    def record(self, session: Session, **columns) -> None:
        """Write the run's own columns (progress, message, its version) in a write() transaction."""
        registry.update_run(session, self.run_id, self.worker, **columns)

    def succeed(self, session: Session, message: str, outcome: str) -> None:
        """End the run as done, in the transaction that records its result."""
        registry.end_run(session, self.run_id, RunStatus.SUCCEEDED, message=message, outcome=outcome,
                         worker=self.worker)

    def fail(self, error: str, outcome: str = "failed") -> None:
        """End the run as failed, if this process still holds it (a lost run is someone else's record)."""
        fail_run(self.sessions, self.run_id, error, outcome, worker=self.worker)

    @contextmanager
    def kept(self) -> Iterator["RunLease"]:
        """Renew the heartbeat in a thread while the block runs."""
        beating = threading.Thread(target=self._beat, name=f"run-{self.run_id}-heartbeat", daemon=True)
        beating.start()
        try:
            yield self
        finally:
            self._stop.set()
            beating.join(timeout=HEARTBEAT_SECONDS + 30)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with self.sessions.begin() as session:
                    registry.hold_run(session, self.run_id, self.worker)
            except registry.RunLost as exc:
                self.lost = str(exc)
                log.warning("%s The run stops at its next step.", exc)
                return
            except Exception:  # a database hiccup: the next beat retries, well inside STALE_AFTER
                log.exception("Training run %s: the heartbeat could not be written", self.run_id)


def claim(sessions, run_id: int, claimed_by: str = "") -> RunLease | None:
    """Take a queued run for this process (or the run claimed_by, a runner, claimed for it);
    None when it is not there to take."""
    worker = worker_id()
    with sessions.begin() as session:
        if claimed_by:
            taken = registry.hand_over_run(session, run_id, claimed_by, worker, os.getpid())
        else:
            taken = registry.claim_run(session, run_id, worker, os.getpid())
    return RunLease(sessions, run_id, worker) if taken else None


def fail_run(sessions, run_id: int, error: str, outcome: str = "failed", *, worker: str | None = None,
             silent_since=None) -> bool:
    """End an open run as failed (see registry.end_run for worker and silent_since) and mark its
    candidate failed; the error is kept without passwords. False if it was not to be ended."""
    with sessions.begin() as session:
        ended = registry.end_run(session, run_id, RunStatus.FAILED, message="Failed.", error=redact(error),
                                 outcome=outcome, worker=worker, silent_since=silent_since)
        run = registry.get_run(session, run_id)
        if ended and run.version_id is not None:
            version = registry.get_version(session, run.version_id)
            if version.status == VersionStatus.TRAINING:
                registry.update_version(session, version.id, status=VersionStatus.FAILED)
    return ended
