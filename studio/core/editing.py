"""The writer's own edits to a draft: each save is a revision, and any revision can come back.

The draft row always holds the newest text (what History shows, exports and training use);
draft_revisions keeps its earlier states, so undo reaches them: the first, the newest and, between
them, the most recent ones up to revisions.MAX_REVISIONS in all.
"""

from __future__ import annotations

from typing import Any

from storage import comparisons, repository, revisions
from studio.core.records import BLIND
from studio.errors import StudioError
from studio.text import word_count
from studio.trust.moderation import ContentFilter


class Revisions:
    def __init__(self, sessions, content_filter: ContentFilter):
        self.sessions = sessions
        self.content_filter = content_filter

    def edit(self, draft_id: int, text: str, *, user: str) -> bool:
        """Save the writer's text as the draft's newest revision; False when nothing changed."""
        if len(text) > revisions.MAX_DRAFT_CHARS:
            raise StudioError(f"A draft may be at most {revisions.MAX_DRAFT_CHARS:,} characters.")
        with self.sessions() as session:
            prompt = repository.get_draft(session, draft_id, user=user).prompt
        flags = self.content_filter.flags(text, prompt)  # a classifier takes a while: not inside the write lock
        with self.sessions.begin() as session:
            if text == repository.get_draft(session, draft_id, user=user).text:
                return False
            repository.update_draft(session, draft_id, text=text, **flags)
            revisions.add_revision(session, draft_id, text, "edited")
        return True

    def list(self, draft_id: int, *, user: str) -> list[dict[str, Any]]:
        with self.sessions() as session:
            repository.get_draft(session, draft_id, user=user)
            blind = comparisons.awaiting_pick(session, draft_id)
            return [{"id": r.id, "reason": r.reason, "model_version": BLIND if blind else r.model_version,
                     "created_at": r.created_at.isoformat(),
                     "words": word_count(r.text), "text": r.text} for r in revisions.list_revisions(session, draft_id)]

    def restore(self, draft_id: int, revision_id: int, *, user: str) -> str:
        """Make an earlier revision the draft's text again (itself recorded as a new revision)."""
        with self.sessions.begin() as session:
            old = revisions.get_revision(session, draft_id, revision_id, user=user)
            draft = repository.get_draft(session, draft_id, user=user)
            repository.update_draft(session, draft_id, text=old.text,
                                    **self.content_filter.flags(old.text, draft.prompt))
            revisions.add_revision(session, draft_id, old.text, "restored")
            return old.text
