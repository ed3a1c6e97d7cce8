"""Repository functions for blind comparisons of model versions (see models.BlindComparison)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import BlindComparison, utcnow
from storage.preferences import record_preference
from storage.repository import NotFoundError, StorageError, get_draft


def add_comparison(session: Session, user: str, draft_a_id: int, draft_b_id: int,
                   version_a: str, version_b: str) -> BlindComparison:
    if version_a == version_b:
        raise StorageError("A blind comparison needs drafts from two different versions.")
    for draft_id in (draft_a_id, draft_b_id):
        get_draft(session, draft_id, user=user)  # the writer's own drafts only
    row = BlindComparison(user=user, draft_a_id=draft_a_id, draft_b_id=draft_b_id,
                          version_a=version_a, version_b=version_b)
    session.add(row)
    session.flush()
    return row


def get_comparison(session: Session, comparison_id: int, user: str) -> BlindComparison:
    row = session.get(BlindComparison, comparison_id)
    if row is None or row.user != user:
        raise NotFoundError(comparison_id, what="Comparison")
    return row


def decide(session: Session, comparison_id: int, user: str, side: str) -> BlindComparison:
    """Record the writer's pick of draft "A" or "B", once; the pick is also a preference
    (chosen over the other)."""
    row = get_comparison(session, comparison_id, user)
    if side not in ("A", "B"):
        raise StorageError(f"Pick A or B, not {side!r}.")
    chosen, other = (row.draft_a_id, row.draft_b_id) if side == "A" else (row.draft_b_id, row.draft_a_id)
    # A conditional update: two clicks at once cannot both count.
    claimed = session.execute(
        update(BlindComparison)
        .where(BlindComparison.id == row.id, BlindComparison.chosen_draft_id.is_(None))
        .values(chosen_draft_id=chosen, decided_at=utcnow())
    ).rowcount
    if not claimed:
        raise StorageError("You already picked in this comparison: start a new one.")
    record_preference(session, user, chosen, [other])
    session.refresh(row)
    return row


def awaiting_pick(session: Session, draft_id: int) -> bool:
    """Whether the draft is one side of a blind comparison its writer has not decided yet: until
    then nothing may say which version wrote it."""
    undecided = select(BlindComparison.id).where(
        BlindComparison.chosen_draft_id.is_(None),
        (BlindComparison.draft_a_id == draft_id) | (BlindComparison.draft_b_id == draft_id))
    return session.scalar(undecided.limit(1)) is not None


def tally(session: Session) -> Counter[tuple[str, str]]:
    """Decided comparisons counted as (winner version, loser version) -> picks, over all writers."""
    wins: Counter[tuple[str, str]] = Counter()
    decided = select(BlindComparison).where(BlindComparison.chosen_draft_id.is_not(None))
    for row in session.scalars(decided):
        a_won = row.chosen_draft_id == row.draft_a_id
        wins[(row.version_a, row.version_b) if a_won else (row.version_b, row.version_a)] += 1
    return wins
