"""Repository functions for pairwise preferences (see models.Preference)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from storage.models import Draft, Preference
from storage.repository import StorageError, get_draft


def record_preference(session: Session, user: str, chosen_id: int, rejected_ids: list[int]) -> int:
    """Store "chosen over each rejected" for drafts of one prompt; return how many pairs are new."""
    if not rejected_ids or chosen_id in rejected_ids:
        raise StorageError("Pick one draft over at least one other draft.")
    chosen = get_draft(session, chosen_id, user=user)
    added = 0
    for rejected_id in dict.fromkeys(rejected_ids):
        rejected = get_draft(session, rejected_id, user=user)
        if rejected.prompt != chosen.prompt:
            raise StorageError(f"Drafts {chosen_id} and {rejected_id} answer different prompts: "
                               "a preference compares drafts of the same prompt.")
        try:
            with session.begin_nested():  # picking the same pair again changes nothing
                session.add(Preference(user=user, chosen_draft_id=chosen_id, rejected_draft_id=rejected_id))
                session.flush()
            added += 1
        except IntegrityError:
            pass
    return added


def list_preferences(session: Session, user: str | None = None) -> list[tuple[Draft, Draft]]:
    """(chosen, rejected) draft pairs, oldest first."""
    chosen, rejected = aliased(Draft), aliased(Draft)
    stmt = (select(chosen, rejected)
            .join(Preference, Preference.chosen_draft_id == chosen.id)
            .join(rejected, Preference.rejected_draft_id == rejected.id)
            .order_by(Preference.id))
    if user is not None:
        stmt = stmt.where(Preference.user == user)
    return [(c, r) for c, r in session.execute(stmt)]


def count_preferences_since(session: Session, since: datetime | None) -> int:
    """How many picks (pairs) were stored after `since`."""
    query = select(func.count()).select_from(Preference)
    if since is not None:
        query = query.where(Preference.created_at > since)
    return session.scalar(query) or 0
