"""Database tables: drafts, the writers' ratings of them, model versions and training runs.

Every change here needs a matching Alembic migration in
``storage/migrations/versions``; ``tests/test_storage.py`` compares the two
and fails on any drift.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone type: SQLAlchemy stores the wall-clock digits and
    hands back naive datetimes. So values are converted to UTC on the way in
    and get UTC attached on the way out. PostgreSQL keeps the zone itself
    (``timestamptz``); converting to UTC there only normalises the display zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value could be local time or UTC; guessing would silently
            # shift timestamps by hours, so refuse it.
            raise ValueError(f"Timestamps must be timezone-aware, got naive {value!r}.")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# Deterministic constraint names: Alembic's batch mode (how SQLite does
# ALTER TABLE) can only drop or alter constraints that have names.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
    }


class DraftStatus(StrEnum):
    """A draft's row is created while it streams and saved every few seconds, so a crash loses at
    most those seconds; the next start marks a draft whose stream died as interrupted."""

    WRITING = "writing"
    DONE = "done"
    INTERRUPTED = "interrupted"


class Draft(Base):
    """One generated piece of writing, with everything needed to reproduce it."""

    __tablename__ = "drafts"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    user: Mapped[str] = mapped_column(String(200), default="local", index=True)

    template_id: Mapped[str] = mapped_column(String(100), index=True)
    template_name: Mapped[str] = mapped_column(String(200))
    # Field name -> the value the writer typed into the template form.
    fields: Mapped[dict[str, Any]] = mapped_column()
    # The template rendered with the fields.
    prompt: Mapped[str] = mapped_column(Text)
    # Exactly what the model saw (prompt after the chat template), so a
    # draft can be reproduced even if templates change later.
    model_input: Mapped[str] = mapped_column(Text)

    settings: Mapped[dict[str, Any]] = mapped_column()  # sampler settings
    seed: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(500))
    model_version: Mapped[str] = mapped_column(String(100))

    text: Mapped[str] = mapped_column(Text)
    new_tokens: Mapped[int] = mapped_column(default=0)
    # Double spelled out: SQLAlchemy 2.1 maps ``float`` to Double, 2.0 to
    # Float; being explicit keeps the model and migration 0001 in step.
    first_token_seconds: Mapped[float | None] = mapped_column(Double)
    generation_seconds: Mapped[float | None] = mapped_column(Double)
    # True when the writer pressed Stop or the stream was cancelled.
    stopped: Mapped[bool] = mapped_column(default=False)
    # True when the model ended it (end-of-text): not stopped, nor cut at the token limit. Only such
    # a draft teaches where to end; one being written or interrupted has not ended.
    ended: Mapped[bool] = mapped_column(default=False, server_default=false())
    # How many times Continue extended this draft.
    continuations: Mapped[int] = mapped_column(default=0)
    # Marked by the content filter: shown with a warning, never used as training data.
    flagged: Mapped[bool] = mapped_column(default=False, server_default=false())
    flag_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(20), default=DraftStatus.DONE, server_default=DraftStatus.DONE.value)

    # passive_deletes: the database's ON DELETE CASCADE removes the ratings,
    # so deleting a draft does not first load them all.
    ratings: Mapped[list[Rating]] = relationship(
        back_populates="draft", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Draft(id={self.id!r}, template_id={self.template_id!r}, user={self.user!r})"


class Rating(Base):
    """A writer's stars for a draft; one per (draft, user), re-rating updates it."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("draft_id", "user", name="uq_rating_draft_user"),
        # Named through the convention: ck_ratings_stars_range.
        CheckConstraint("stars BETWEEN 1 AND 5", name="stars_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    draft_id: Mapped[int] = mapped_column(
        ForeignKey("drafts.id", ondelete="CASCADE"), index=True
    )
    user: Mapped[str] = mapped_column(String(200), default="local")
    stars: Mapped[int] = mapped_column()
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    draft: Mapped[Draft] = relationship(back_populates="ratings")

    def __repr__(self) -> str:
        return f"Rating(draft_id={self.draft_id!r}, user={self.user!r}, stars={self.stars!r})"


class VersionStatus(StrEnum):
    """Where a model version stands. Exactly one version is active (is_active) at any time."""

    TRAINING = "training"
    REJECTED = "rejected"
    PROMOTED = "promoted"
    RETIRED = "retired"
    FAILED = "failed"


class RunStatus(StrEnum):
    """Where a training run stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Versions that have weights to write with.
WRITABLE_VERSION_STATUSES = frozenset({VersionStatus.PROMOTED, VersionStatus.REJECTED, VersionStatus.RETIRED})


OPEN_RUN = "status IN ('queued', 'running')"
# Indexes on an expression, which Alembic cannot compare with what the database reflects (it
# reads PostgreSQL's rewritten form as another index): migrations create them by hand.
EXPRESSION_INDEXES = frozenset({"uq_training_runs_one_open"})


def compared_by_alembic(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's include_object: everything but the expression indexes."""
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def _status_check(statuses: type[StrEnum]) -> CheckConstraint:
    # Built from the enum so the two cannot drift; named through the convention: ck_<table>_status.
    # Adding a member needs a migration that replaces the constraint (tests compare the two).
    allowed = ", ".join(f"'{status.value}'" for status in statuses)
    return CheckConstraint(f"status IN ({allowed})", name="status")


class ModelVersion(Base):
    """A model the studio can serve: the base model, or a LoRA fine-tune of it."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # The database itself guarantees at most one active version.
        Index("uq_model_versions_one_active", "is_active", unique=True,
              sqlite_where=text("is_active"), postgresql_where=text("is_active")),
        _status_check(VersionStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)  # "base", "v1", "v2", ...
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    base_model: Mapped[str] = mapped_column(String(500))  # what --model named when it was made
    adapter_path: Mapped[str | None] = mapped_column(String(1000))  # None for the base itself
    # A VersionStatus, mapped as str: rows read back as plain text, which equals the members.
    status: Mapped[str] = mapped_column(String(20))
    is_active: Mapped[bool] = mapped_column(default=False)
    train_draft_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    held_out_draft_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loss_curve: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Held-out figures: mean negative log-likelihood per target token and perplexity,
    # for this version and for the version that was active, and the decision.
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"ModelVersion(name={self.name!r}, status={self.status!r}, active={self.is_active!r})"


class TrainingRun(Base):
    """One fine-tuning job, from queued to finished; its state survives restarts."""

    __tablename__ = "training_runs"
    __table_args__ = (
        _status_check(RunStatus),
        # At most one run queued or running, whoever asks: two app processes on one PostgreSQL
        # database that both check, see none, and insert, leave the second insert failing here.
        Index("uq_training_runs_one_open", text(f"({OPEN_RUN})"), unique=True,
              sqlite_where=text(OPEN_RUN), postgresql_where=text(OPEN_RUN)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.QUEUED, index=True)  # a RunStatus
    trigger: Mapped[str] = mapped_column(String(20))  # auto, button or cli
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    progress: Mapped[float] = mapped_column(Double, default=0.0)  # 0..1
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    # How it ended: the gate's decision, nothing_to_learn (too few or inconsistent ratings), or failed;
    # None while it runs (and for runs from before this column: read from status and version).
    outcome: Mapped[str | None] = mapped_column(String(20))
    # Which process holds the run, so a restart can tell a live run from a dead one.
    worker: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    def __repr__(self) -> str:
        return f"TrainingRun(id={self.id!r}, status={self.status!r})"


class UserTemplate(Base):
    """A genre template a writer made in the page: private until an admin publishes it."""

    __tablename__ = "user_templates"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_user_templates_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)  # the TOML text, as in prompts/*.toml
    published: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Preference(Base):
    """A writer's pick between drafts of the same prompt: this one (chosen) over that one."""

    __tablename__ = "preferences"
    __table_args__ = (
        UniqueConstraint("user", "chosen_draft_id", "rejected_draft_id", name="uq_preferences_pair"),
        CheckConstraint("chosen_draft_id <> rejected_draft_id", name="distinct_drafts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    chosen_draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"), index=True)
    rejected_draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DraftRevision(Base):
    """One state of a draft's text: as written, continued, edited by the writer, or restored."""

    __tablename__ = "draft_revisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(20))  # written, continued, edited or restored
    # The model version that wrote this state (written, continued); empty for the writer's own.
    model_version: Mapped[str] = mapped_column(String(100), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlindComparison(Base):
    """Two drafts of one prompt, from two model versions, shown to the writer without saying which
    is which; chosen_draft_id is the writer's pick (None until they pick)."""

    __tablename__ = "blind_comparisons"
    __table_args__ = (
        CheckConstraint("version_a <> version_b", name="two_versions"),
        CheckConstraint("chosen_draft_id IS NULL OR chosen_draft_id IN (draft_a_id, draft_b_id)",
                        name="chosen_is_shown"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    draft_a_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"))
    draft_b_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"))
    # Draft rows record their version too, but Continue may change it: the comparison keeps its own.
    version_a: Mapped[str] = mapped_column(String(100))
    version_b: Mapped[str] = mapped_column(String(100))
    chosen_draft_id: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()
