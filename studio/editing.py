"""The writer's own edits to a draft: each save is a revision, and any revision can come back.

The draft row always holds the newest text (what History shows, exports and training use);
draft_revisions keeps every earlier state, so undo reaches any of them.
"""

from __future__ import annotations

from typing import Any

from storage import repository, revisions

from .errors import StudioError
from .export import word_count


def edit_draft(studio, draft_id: int, text: str, *, user: str | None = None) -> bool:
    """Save the writer's text as the draft's newest revision; False when nothing changed."""
    user = user or studio.settings.user
    if len(text) > revisions.MAX_DRAFT_CHARS:
        raise StudioError(f"A draft may be at most {revisions.MAX_DRAFT_CHARS:,} characters.")
    with studio.sessions.begin() as session:
        draft = repository.get_draft(session, draft_id, user=user)
        if text == draft.text:
            return False
        repository.update_draft(session, draft_id, text=text, **studio.content_filter.flags(text, draft.prompt))
        revisions.add_revision(session, draft_id, text, "edited")
    return True


def list_revisions(studio, draft_id: int, *, user: str | None = None) -> list[dict[str, Any]]:
    with studio.sessions() as session:
        repository.get_draft(session, draft_id, user=user or studio.settings.user)
        return [{"id": r.id, "reason": r.reason, "created_at": r.created_at.isoformat(),
                 "words": word_count(r.text), "text": r.text} for r in revisions.list_revisions(session, draft_id)]


def restore_revision(studio, draft_id: int, revision_id: int, *, user: str | None = None) -> str:
    """Make an earlier revision the draft's text again (itself recorded as a new revision)."""
    user = user or studio.settings.user
    with studio.sessions.begin() as session:
        old = revisions.get_revision(session, draft_id, revision_id, user=user)
        draft = repository.get_draft(session, draft_id, user=user)
        repository.update_draft(session, draft_id, text=old.text,
                                **studio.content_filter.flags(old.text, draft.prompt))
        revisions.add_revision(session, draft_id, old.text, "restored")
        return old.text
