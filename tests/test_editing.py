"""The writer's edits: every save a revision, any revision restorable, and only one's own drafts."""

from __future__ import annotations

import pytest

from storage import NotFoundError


def test_edits_are_kept_as_revisions_and_any_one_comes_back(studio):
    drafting = studio.drafts.write("poetry", {}, {"max_new_tokens": 6}, user="local")
    list(drafting)
    draft_id, written = drafting.draft_id, drafting.text
    assert studio.revisions.edit(draft_id, "The tide came in, and so did the words.", user="local")
    assert not studio.revisions.edit(draft_id, "The tide came in, and so did the words.", user="local")  # unchanged: no revision
    assert studio.revisions.edit(draft_id, "The tide came in.", user="local")
    history = studio.revisions.list(draft_id, user="local")
    assert [r["reason"] for r in history] == ["written", "edited", "edited"]
    assert studio.drafts.get(draft_id, user="local")["text"] == "The tide came in."  # History, export and training see this

    assert studio.revisions.restore(draft_id, history[0]["id"], user="local") == written
    assert studio.drafts.get(draft_id, user="local")["text"] == written
    assert [r["reason"] for r in studio.revisions.list(draft_id, user="local")][-1] == "restored"

    more = studio.drafts.continue_draft(draft_id, 4, user="local")
    list(more)
    assert studio.revisions.list(draft_id, user="local")[-1]["reason"] == "continued"


def test_edits_are_checked_by_the_content_filter_and_only_by_the_author(studio):
    drafting = studio.drafts.write("poetry", {}, {"max_new_tokens": 4}, user="local")
    list(drafting)
    studio.revisions.edit(drafting.draft_id, "a story about porn", user="local")
    assert studio.drafts.get(drafting.draft_id, user="local")["flagged"]
    with pytest.raises(NotFoundError):
        studio.revisions.edit(drafting.draft_id, "mine now", user="mallory")
    with pytest.raises(NotFoundError):
        studio.revisions.list(drafting.draft_id, user="mallory")
