"""Repository functions for draft revisions (see models.DraftRevision)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import DraftRevision
from storage.repository import NotFoundError, get_draft

MAX_DRAFT_CHARS = 200_000


# Each save of an edit is a revision of up to MAX_DRAFT_CHARS: without a cap, a writer's (or a
# script's) every keystroke would grow the database without end.
MAX_REVISIONS = 50


def add_revision(session: Session, draft_id: int, text: str, reason: str, model_version: str = "") -> DraftRevision:
    """Keep text as the draft's newest revision; past MAX_REVISIONS, the oldest one after the first
    goes (the first, as written, and the newest stay)."""
    revision = DraftRevision(draft_id=draft_id, text=text, reason=reason, model_version=model_version)
    session.add(revision)
    session.flush()
    ids = list(session.scalars(select(DraftRevision.id).where(DraftRevision.draft_id == draft_id)
                               .order_by(DraftRevision.id)))
    if len(ids) > MAX_REVISIONS:
        session.execute(delete(DraftRevision).where(DraftRevision.id.in_(ids[1:len(ids) - MAX_REVISIONS + 1])))
    return revision


def list_revisions(session: Session, draft_id: int) -> list[DraftRevision]:
    """Oldest first."""
    return list(session.scalars(select(DraftRevision).where(DraftRevision.draft_id == draft_id)
                                .order_by(DraftRevision.id)))


def get_revision(session: Session, draft_id: int, revision_id: int, user: str | None = None) -> DraftRevision:
    get_draft(session, draft_id, user=user)  # the writer must own the draft
    revision = session.get(DraftRevision, revision_id)
    if revision is None or revision.draft_id != draft_id:
        raise NotFoundError(revision_id, "Revision")
    return revision
