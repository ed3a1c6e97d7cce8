"""The model version registry and the training-run queue, as repository functions.

Functions take a Session and do not commit; callers wrap them in ``with factory.begin()``.
Run state lives here (not in a process's memory), so a restart loses no queued run, and a
run is claimed with one conditional UPDATE, so two processes never run the same one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import ModelVersion, Rating, RunStatus, TrainingRun, VersionStatus
from storage.repository import NotFoundError, StorageError


class RegistryError(StorageError):
    """A version or run cannot do what was asked (shown to the user)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- versions ----------------------------------------------------------------------------


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.is_active))


def get_version(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFoundError(version_id, "Model version")
    return version


def get_version_by_name(session: Session, name: str) -> ModelVersion:
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        raise NotFoundError(name, "Model version")
    return version


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def ensure_base_version(session: Session, base_model: str) -> ModelVersion:
    """The version row of the base model itself; made active when no version of it is.

    Versions are fine-tunes of one base model: when the studio starts on another --model,
    that model's base version becomes the active one (the old fine-tunes stay recorded).
    """
    # The base has no parent; a candidate whose run died before its adapter was saved has no path either.
    base = session.scalar(select(ModelVersion).where(ModelVersion.base_model == base_model,
                                                     ModelVersion.parent_id.is_(None),
                                                     ModelVersion.adapter_path.is_(None)))
    if base is None:
        taken = session.scalar(select(func.count()).where(ModelVersion.name.like("base%")))
        base = ModelVersion(name="base" if not taken else f"base-{taken + 1}", base_model=base_model,
                            status=VersionStatus.PROMOTED, train_draft_ids=[], held_out_draft_ids=[],
                            hyperparameters={}, loss_curve=[], gate={})
        session.add(base)
        session.flush()
    active = active_version(session)
    if active is None or active.base_model != base_model:
        activate(session, base.id)
    return base


def assigned_drafts(session: Session) -> tuple[set[int], set[int]]:
    """The drafts some version trained on, and those some version was judged on (held out): each
    keeps its side for good. A draft on both (a version from before held-out drafts were fixed)
    counts as trained on: it can no longer judge fairly."""
    trained, held = set(), set()
    for train_ids, held_ids in session.execute(select(ModelVersion.train_draft_ids, ModelVersion.held_out_draft_ids)):
        trained.update(train_ids or [])
        held.update(held_ids or [])
    return trained, held - trained


def lineage_trained(session: Session) -> set[int]:
    """The drafts the serving version and the versions it was trained from trained on: what a run that
    starts from the serving version's adapter has already learned."""
    ids: set[int] = set()
    version = active_version(session)
    while version is not None:
        ids.update(version.train_draft_ids or [])
        version = session.get(ModelVersion, version.parent_id) if version.parent_id is not None else None
    return ids


def next_version_name(session: Session) -> str:
    """v1, v2, ...: one past the highest ever given, so a run that failed before saving its adapter
    (its row kept, as the record of what happened) never hands its name to the next run."""
    numbers = [int(name[1:]) for name in session.scalars(select(ModelVersion.name).where(ModelVersion.name.like("v%")))
               if name[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1}"


def add_version(session: Session, **columns: Any) -> ModelVersion:
    version = ModelVersion(**columns)
    session.add(version)
    session.flush()
    return version


def _assign(row: ModelVersion | TrainingRun, columns: dict[str, Any]) -> None:
    # A typo in a column name must fail loudly, not set an attribute that is never saved.
    for name, value in columns.items():
        if name not in type(row).__table__.columns:
            raise TypeError(f"{type(row).__name__} has no column {name!r}")
        setattr(row, name, value)


def update_version(session: Session, version_id: int, **columns: Any) -> ModelVersion:
    version = get_version(session, version_id)
    _assign(version, columns)
    session.flush()
    return version


def activate(session: Session, version_id: int) -> ModelVersion:
    """Make this version the one that serves; the previously active one is retired."""
    version = get_version(session, version_id)
    if version.status in (VersionStatus.TRAINING, VersionStatus.FAILED):
        raise RegistryError(f"Version {version.name} is {version.status} and cannot serve.")
    current = active_version(session)
    if current is not None and current.id != version.id:
        current.is_active = False
        current.status = VersionStatus.RETIRED
        session.flush()  # the one-active index must see the old row inactive first
    version.is_active = True
    version.status = VersionStatus.PROMOTED
    session.flush()
    return version


# -- training runs --------------------------------------------------------------------------


def get_run(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFoundError(run_id, "Training run")
    return run


def open_run(session: Session) -> TrainingRun | None:
    """The queued or running run, if any (there is at most one at a time)."""
    open_statuses = (RunStatus.QUEUED, RunStatus.RUNNING)
    return session.scalar(select(TrainingRun).where(TrainingRun.status.in_(open_statuses)).order_by(TrainingRun.id))


def enqueue_run(session: Session, trigger: str) -> tuple[TrainingRun, bool]:
    """Queue a run unless one is already queued or running: (the run, whether it is new)."""
    existing = open_run(session)
    if existing is not None:
        return existing, False
    run = TrainingRun(trigger=trigger, status=RunStatus.QUEUED, progress=0.0, message="Waiting to start…",
                      error="", worker="")
    try:
        with session.begin_nested():  # a savepoint: the refused insert leaves the transaction usable
            session.add(run)
    except IntegrityError:  # another process queued one since we looked: the schema allows one open run
        existing = open_run(session)
        if existing is None:
            raise
        return existing, False
    return run, True


def claim_run(session: Session, run_id: int, worker: str, pid: int) -> bool:
    """Atomically move a queued run to running for this worker; False if someone else has it."""
    now = _now()
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED)
        .values(status=RunStatus.RUNNING, worker=worker, pid=pid, started_at=now, heartbeat_at=now,
                message="Starting…")
    )
    return result.rowcount == 1


def hand_over_run(session: Session, run_id: int, claimed_by: str, worker: str, pid: int) -> bool:
    """Atomically give a run claimed_by holds (a runner that claimed it before starting a process
    for it) to that process; False if it is no longer that runner's to give."""
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.RUNNING, TrainingRun.worker == claimed_by)
        .values(worker=worker, pid=pid, heartbeat_at=_now()))
    return result.rowcount == 1


class RunLost(RegistryError):
    """The process that was carrying out a run no longer holds it: it fell silent for too long and
    was ended as dead, or another process holds it now. It must stop, and write nothing more."""


def _locked_run(session: Session, run_id: int) -> TrainingRun:
    """The run's row, locked until this transaction ends (PostgreSQL; a SQLite write holds the whole
    database), so what is checked here still holds when the transaction writes."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
    if run is None:
        raise NotFoundError(run_id, "Training run")
    return run


def hold_run(session: Session, run_id: int, worker: str) -> TrainingRun:
    """The run, while worker holds it (running, in its name): its heartbeat renewed and its row
    locked for the rest of the transaction. RunLost if worker no longer holds it."""
    run = _locked_run(session, run_id)
    if run.status != RunStatus.RUNNING or run.worker != worker:
        holder = f", held by {run.worker}" if run.status == RunStatus.RUNNING else ""
        raise RunLost(f"Training run {run_id} is no longer this process's to carry out: it is {run.status}{holder}.")
    run.heartbeat_at = _now()
    session.flush()
    return run


def update_run(session: Session, run_id: int, worker: str, **columns: Any) -> TrainingRun:
    """Record a run's progress, by the process that holds it (RunLost if it no longer does)."""
    run = hold_run(session, run_id, worker)
    _assign(run, columns)
    session.flush()
    return run


def end_run(session: Session, run_id: int, status: RunStatus, *, message: str = "", error: str = "",
            outcome: str = "", worker: str | None = None, silent_since: datetime | None = None) -> bool:
    """End an open (queued or running) run: by its holder (worker: only while it still holds it), or
    by anyone who found it dead (silent_since: only if its heartbeat is no newer, so a run that beat
    meanwhile is left alone). False, and nothing written, when it is not to be ended."""
    run = _locked_run(session, run_id)
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return False
    if worker is not None and (run.status != RunStatus.RUNNING or run.worker != worker):
        return False
    if silent_since is not None and run.heartbeat_at is not None and run.heartbeat_at > silent_since:
        return False
    _assign(run, {"status": status, "message": message, "error": error, "finished_at": _now(),
                  "progress": 1.0 if status == RunStatus.SUCCEEDED else run.progress,
                  "outcome": outcome or str(status)})
    session.flush()
    return True


def running_runs(session: Session) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)))


def list_runs(session: Session, limit: int = 20) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def last_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(1))


# Runs that tested the ratings for a consistent preference and did not promote: a run that failed
# counts too, since it may have got that far.
TESTED_OUTCOMES = ("rejected", "no_preference", "failed")


def tests_since_promotion(session: Session) -> int:
    """How many ended runs since the last one that promoted (or ever) tested the ratings and did not
    promote: the gate spends its error rate over them (learning/plan.py)."""
    last = session.scalar(select(func.max(TrainingRun.id)).where(TrainingRun.outcome == "promoted")) or 0
    return session.scalar(select(func.count()).select_from(TrainingRun)
                          .where(TrainingRun.id > last, TrainingRun.outcome.in_(TESTED_OUTCOMES))) or 0


def count_high_ratings_since(session: Session, min_stars: int, since: datetime | None,
                             max_low_stars: int = 0) -> int:
    """How many ratings at or above min_stars (or, with max_low_stars, at or below it: the disliked
    drafts that teach too) were given or changed after `since`."""
    query = select(func.count()).select_from(Rating).where((Rating.stars >= min_stars) | (Rating.stars <= max_low_stars))
    if since is not None:
        query = query.where(Rating.updated_at > since)
    return session.scalar(query) or 0


# -- what the metrics read -----------------------------------------------------------------

def run_outcomes(session: Session) -> dict[str, int]:
    """Ended runs by how they ended; runs from before outcomes were recorded count by status."""
    rows = session.execute(select(TrainingRun.outcome, TrainingRun.status, func.count())
                           .where(TrainingRun.status.in_([RunStatus.SUCCEEDED, RunStatus.FAILED]))
                           .group_by(TrainingRun.outcome, TrainingRun.status))
    counts: dict[str, int] = {}
    for outcome, status, count in rows:
        counts[outcome or status] = counts.get(outcome or status, 0) + count
    return counts


def gate_decisions(session: Session) -> dict[str, int]:
    """The gate's decisions on every trained version (promoted, rejected, undecided)."""
    counts: dict[str, int] = {}
    for gate in session.scalars(select(ModelVersion.gate).where(ModelVersion.parent_id.is_not(None))):
        if gate and gate.get("decision"):
            counts[gate["decision"]] = counts.get(gate["decision"], 0) + 1
    return counts
