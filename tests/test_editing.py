"""The writer's edits: every save a revision, any revision restorable, and only one's own drafts."""

from __future__ import annotations

import pytest

from storage import NotFoundError
from studio.editing import edit_draft, list_revisions, restore_revision


def test_edits_are_kept_as_revisions_and_any_one_comes_back(studio):
    drafting = studio.write("poetry", {}, {"max_new_tokens": 6})
    list(drafting)
    draft_id, written = drafting.draft_id, drafting.text
    assert edit_draft(studio, draft_id, "The tide came in, and so did the words.")
    assert not edit_draft(studio, draft_id, "The tide came in, and so did the words.")  # unchanged: no revision
    assert edit_draft(studio, draft_id, "The tide came in.")
    history = list_revisions(studio, draft_id)
    assert [r["reason"] for r in history] == ["written", "edited", "edited"]
    assert studio.draft(draft_id)["text"] == "The tide came in."  # History, export and training see this

    assert restore_revision(studio, draft_id, history[0]["id"]) == written
    assert studio.draft(draft_id)["text"] == written
    assert [r["reason"] for r in list_revisions(studio, draft_id)][-1] == "restored"

    more = studio.continue_draft(draft_id, 4)
    list(more)
    assert list_revisions(studio, draft_id)[-1]["reason"] == "continued"


def test_edits_are_checked_by_the_content_filter_and_only_by_the_author(studio):
    drafting = studio.write("poetry", {}, {"max_new_tokens": 4})
    list(drafting)
    edit_draft(studio, drafting.draft_id, "a story about porn")
    assert studio.draft(drafting.draft_id)["flagged"]
    with pytest.raises(NotFoundError):
        edit_draft(studio, drafting.draft_id, "mine now", user="mallory")
    with pytest.raises(NotFoundError):
        list_revisions(studio, drafting.draft_id, user="mallory")
