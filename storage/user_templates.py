"""Repository functions for writers' own templates (see models.UserTemplate)."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import UserTemplate
from storage.repository import NotFoundError, StorageError

MAX_SOURCE_CHARS = 20_000


def visible_templates(session: Session, user: str) -> list[UserTemplate]:
    """The writer's own templates and everyone's published ones, oldest first."""
    return list(session.scalars(
        select(UserTemplate).where(or_(UserTemplate.owner == user, UserTemplate.published)).order_by(UserTemplate.id)
    ))


def waiting_for_review(session: Session) -> list[UserTemplate]:
    """Every template not published (new, or edited since it was), oldest first: an admin's queue."""
    return list(session.scalars(select(UserTemplate).where(~UserTemplate.published).order_by(UserTemplate.id)))


def get_visible(session: Session, template_id: int, user: str) -> UserTemplate:
    row = session.get(UserTemplate, template_id)
    if row is None or not (row.owner == user or row.published):
        raise NotFoundError(template_id, "Template")
    return row


def save_template(session: Session, owner: str, name: str, source: str, template_id: int | None = None) -> UserTemplate:
    """Create a template, or replace the source of one the writer owns. An edit of a published
    template makes it private again: what others use was reviewed, so a change is reviewed too."""
    if len(source) > MAX_SOURCE_CHARS:
        raise StorageError(f"A template may be at most {MAX_SOURCE_CHARS:,} characters; this one has {len(source):,}.")
    if template_id is None:
        row = UserTemplate(owner=owner, name=name, source=source, published=False)
        session.add(row)
    else:
        row = get_visible(session, template_id, owner)
        if row.owner != owner:
            raise StorageError("Only its author can change a template.")
        if (row.name, row.source) != (name, source):
            row.published = False
        row.name, row.source = name, source
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise StorageError(f"You already have a template named {name!r}.") from None
    return row


def delete_template(session: Session, template_id: int, owner: str) -> None:
    row = get_visible(session, template_id, owner)
    if row.owner != owner:
        raise StorageError("Only its author can delete a template.")
    session.delete(row)
    session.flush()


def publish(session: Session, template_id: int, reviewed_source: str) -> UserTemplate:
    """Publish the template as it was reviewed: only if its source is still reviewed_source, so an
    edit saved after the reviewer read it never goes live unread."""
    row = session.scalar(select(UserTemplate).where(UserTemplate.id == template_id).with_for_update())
    if row is None:
        raise NotFoundError(template_id, "Template")
    if row.source != reviewed_source:
        raise StorageError(f"{row.name!r} as saved is not the text you are publishing: its author changed it "
                           "since you opened it, or you changed it in the editor. Open it again, read it, then "
                           "publish.")
    row.published = True
    session.flush()
    return row


def unpublish(session: Session, template_id: int) -> UserTemplate:
    row = session.get(UserTemplate, template_id)
    if row is None:
        raise NotFoundError(template_id, "Template")
    row.published = False
    session.flush()
    return row
