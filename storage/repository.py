"""Reading and writing drafts and ratings.

Every function takes an open Session and leaves committing to the caller::

    with session_factory.begin() as session:
        rate_draft(session, draft_id, 4)

Errors caused by bad input are StorageError subclasses whose message can be
shown to the writer as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import Draft, DraftStatus, Rating, utcnow

EXCERPT_CHARS = 120
MAX_COMMENT_CHARS = 2000
MIN_STARS, MAX_STARS = 1, 5

# Columns update_draft may change; the id and creation time are fixed.
_UPDATABLE = frozenset(attr.key for attr in Draft.__mapper__.column_attrs) - {
    "id",
    "created_at",
}


class StorageError(Exception):
    """Bad input to the storage layer; the message is meant for the writer."""


class NotFoundError(StorageError):
    def __init__(self, key: object, what: str = "Draft") -> None:
        self.key = key
        super().__init__(f"{what} {key} does not exist.")


class InvalidRatingError(StorageError):
    pass


@dataclass(frozen=True)
class DraftSummary:
    """One line of the drafts list: enough to show it without loading the text."""

    id: int
    created_at: datetime
    template_id: str
    template_name: str
    excerpt: str
    stars: int | None
    comment: str
    new_tokens: int
    stopped: bool
    model_version: str
    flagged: bool = False


def add_draft(session: Session, **columns: Any) -> Draft:
    """Add a draft and flush, so its id is set."""
    draft = Draft(**columns)
    session.add(draft)
    session.flush()
    return draft


def get_draft(session: Session, draft_id: int, user: str | None = None) -> Draft:
    """The draft, or NotFoundError; with ``user``, only that user's drafts count."""
    # Ids may arrive from the UI; anything but an int cannot name a draft.
    if isinstance(draft_id, bool) or not isinstance(draft_id, int):
        raise NotFoundError(draft_id)
    draft = session.get(Draft, draft_id)
    # Someone else's draft reads as missing, so ids do not reveal other users' drafts.
    if draft is None or (user is not None and draft.user != user):
        raise NotFoundError(draft_id)
    return draft


def update_draft(session: Session, draft_id: int, **columns: Any) -> Draft:
    """Change columns of a draft (e.g. after Continue) and flush."""
    unknown = set(columns) - _UPDATABLE
    if unknown:
        # A typo would otherwise just set a plain attribute and be lost.
        raise TypeError(f"update_draft() cannot set {', '.join(sorted(unknown))}")
    draft = get_draft(session, draft_id)
    for name, value in columns.items():
        setattr(draft, name, value)
    session.flush()
    return draft


def _check_rating(stars: object, comment: object) -> None:
    # bool is an int subclass, but True is not "1 star".
    if (
        isinstance(stars, bool)
        or not isinstance(stars, int)
        or not MIN_STARS <= stars <= MAX_STARS
    ):
        raise InvalidRatingError(
            f"A rating must be a whole number of stars from {MIN_STARS} to {MAX_STARS}, "
            f"not {stars!r}."
        )
    if not isinstance(comment, str):
        raise InvalidRatingError("A rating comment must be text.")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidRatingError(
            f"A rating comment can be at most {MAX_COMMENT_CHARS} characters; "
            f"this one has {len(comment)}."
        )


def rate_draft(
    session: Session,
    draft_id: int,
    stars: int,
    comment: str = "",
    user: str = "local",
) -> Rating:
    """Give ``stars`` to a draft, replacing ``user``'s earlier rating of it."""
    if comment is None:
        comment = ""
    _check_rating(stars, comment)
    get_draft(session, draft_id)

    rating = get_rating(session, draft_id, user)
    if rating is None:
        try:
            # The savepoint lets a failed insert be undone without losing
            # the caller's transaction.
            with session.begin_nested():
                rating = Rating(draft_id=draft_id, user=user, stars=stars, comment=comment)
                session.add(rating)
                session.flush()
            return rating
        except IntegrityError:
            # Another session rated this draft for this user between our
            # read and our insert; uq_rating_draft_user kept it to one row,
            # which we now update.
            rating = get_rating(session, draft_id, user)
            if rating is None:
                get_draft(session, draft_id)  # deleted meanwhile -> NotFoundError
                raise

    rating.stars = stars
    rating.comment = comment
    rating.updated_at = utcnow()
    session.flush()
    return rating


def get_rating(session: Session, draft_id: int, user: str = "local") -> Rating | None:
    return session.scalars(
        select(Rating).where(Rating.draft_id == draft_id, Rating.user == user)
    ).one_or_none()


def list_drafts(
    session: Session,
    *,
    user: str | None = None,
    template_id: str | None = None,
    min_stars: int | None = None,
    unrated_only: bool = False,
    limit: int = 200,
) -> list[DraftSummary]:
    """Drafts newest first, each with the stars its own author gave it."""
    if limit < 1:
        raise StorageError("The drafts list needs a positive limit.")

    stmt = (
        select(
            Draft.id,
            Draft.created_at,
            Draft.template_id,
            Draft.template_name,
            # Cut in SQL so long drafts are not loaded just for a preview.
            func.substr(Draft.text, 1, EXCERPT_CHARS).label("excerpt"),
            Rating.stars,
            Rating.comment,
            Draft.new_tokens,
            Draft.stopped,
            Draft.model_version,
            Draft.flagged,
        )
        .select_from(Draft)
        .outerjoin(Rating, and_(Rating.draft_id == Draft.id, Rating.user == Draft.user))
        # id breaks ties between drafts created in the same instant.
        .order_by(Draft.created_at.desc(), Draft.id.desc())
        .limit(limit)
    )
    if user is not None:
        stmt = stmt.where(Draft.user == user)
    if template_id is not None:
        stmt = stmt.where(Draft.template_id == template_id)
    if min_stars is not None:
        stmt = stmt.where(Rating.stars >= min_stars)
    if unrated_only:
        stmt = stmt.where(Rating.id.is_(None))

    return [
        DraftSummary(
            id=row.id,
            created_at=row.created_at,
            template_id=row.template_id,
            template_name=row.template_name,
            excerpt=_one_line(row.excerpt or ""),
            stars=row.stars,
            comment=row.comment or "",
            new_tokens=row.new_tokens,
            stopped=row.stopped,
            model_version=row.model_version,
            flagged=row.flagged,
        )
        for row in session.execute(stmt)
    ]


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def list_rated_drafts(session: Session, *, user: str | None = None) -> list[tuple[Draft, Rating]]:
    """Every draft its own author rated, with that rating, oldest first (the training data).

    Only the author's rating counts, as in list_drafts; ordering by id keeps exports and
    dataset splits stable from one run to the next.
    """
    stmt = (
        select(Draft, Rating)
        .join(Rating, and_(Rating.draft_id == Draft.id, Rating.user == Draft.user))
        .where(Draft.status != DraftStatus.WRITING)  # a draft still streaming is not data yet
        .order_by(Draft.id)
    )
    if user is not None:
        stmt = stmt.where(Draft.user == user)
    return [(draft, rating) for draft, rating in session.execute(stmt)]
