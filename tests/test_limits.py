"""One writer cannot starve the others: a cap on the drafts they stream at once, and both limits
checked before a prompt is rendered or a model loaded; an edit's content filter runs outside the
write lock and revisions are capped; loading a version to compare holds no new draft up."""

from __future__ import annotations

import threading

import pytest

from studio.errors import GenerationError
from tests.test_blind import add_version
from tests.waiting import wait_for


def _open(drafting):
    """A draft streaming: its first chunk read, the rest not yet (the writer's tab is reading it)."""
    chunks = iter(drafting)
    next(chunks)
    return chunks


def test_a_writer_streams_at_most_their_share_at_once_and_others_still_write(settings):
    from studio.core.studio import Studio

    settings.streams_per_writer = 2
    studio = Studio(settings)
    held = [_open(studio.drafts.write("fantasy", {}, {"max_new_tokens": 50}, user="alice")) for _ in range(2)]
    with pytest.raises(GenerationError, match="a writer may have 2 at once"):
        studio.drafts.write("fantasy", {}, {"max_new_tokens": 50}, user="alice")
    with pytest.raises(GenerationError, match="a writer may have 2 at once"):
        studio.drafts.candidates("fantasy", {}, {"max_new_tokens": 5}, count=2, user="alice")
    assert "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 5}, user="bob"))  # others are not held up
    for chunks in held:  # alice's drafts finish: her slots come back
        list(chunks)
    assert "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 5}, user="alice"))


def test_a_writer_over_a_limit_is_refused_before_anything_is_rendered_or_loaded(settings, monkeypatch):
    """A writer's template renders in a process of its own, and a blind round loads a model: a writer
    over the rate limit must cost neither (on 5b3b0f3 each came first)."""
    from studio.core.studio import Studio

    settings.rate_limit = 1
    studio = Studio(settings)
    add_version(studio)
    assert "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="alice"))

    def costly(*args, **kwargs):
        raise AssertionError("rendered or loaded for a writer over the limit")

    monkeypatch.setattr(studio.drafts, "prompt", costly)
    monkeypatch.setattr(studio.pool, "load_version", costly)
    for attempt in (lambda: studio.drafts.write("fantasy", {}, user="alice"),
                    lambda: studio.drafts.candidates("fantasy", {}, count=3, user="alice"),
                    lambda: studio.blind.start("fantasy", {}, user="alice")):
        with pytest.raises(GenerationError, match="in the last minute"):
            attempt()


def test_loading_the_version_to_compare_holds_no_new_draft_up(studio, monkeypatch):
    """The other version of a blind round loads (seconds, on a real model) while writers go on."""
    add_version(studio)
    load, loading, done = studio.pool._load, threading.Event(), threading.Event()

    def slow_load(version, progress):
        if version[1] == "v1":
            loading.set()
            done.wait(60)
        return load(version, progress)

    monkeypatch.setattr(studio.pool, "_load", slow_load)
    studio.pool.load()
    other = threading.Thread(target=studio.pool.load_version, args=("v1",))
    other.start()
    try:
        assert loading.wait(30)
        written = []
        writer = threading.Thread(target=lambda: written.append(
            "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="bob"))))
        writer.start()
        assert wait_for(lambda: written, seconds=30), "a new draft waited for the other version's load"
    finally:
        done.set()
        other.join()
        writer.join()


def test_an_edit_is_filtered_before_the_write_lock_and_revisions_are_capped(studio, monkeypatch):
    """A classifier takes a while: run inside the write transaction it would hold every other writer's
    save meanwhile (on 5b3b0f3 it did). Each save keeps a revision of up to 200 KB: capped."""
    from contextlib import contextmanager

    from storage import revisions

    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local")
    list(drafting)
    draft_id = drafting.draft_id
    writing, filtered_while_writing = [0], []
    begin, flags = studio.sessions.begin, type(studio.content_filter).flags

    @contextmanager
    def counted_begin():
        writing[0] += 1
        try:
            with begin() as session:
                yield session
        finally:
            writing[0] -= 1

    def noting_flags(content_filter, text, prompt):
        filtered_while_writing.append(writing[0] > 0)
        return flags(content_filter, text, prompt)

    monkeypatch.setattr(studio.sessions, "begin", counted_begin)
    monkeypatch.setattr(type(studio.content_filter), "flags", noting_flags)
    monkeypatch.setattr(revisions, "MAX_REVISIONS", 5)
    for n in range(8):
        studio.revisions.edit(draft_id, f"version {n}", user="local")
    assert filtered_while_writing and not any(filtered_while_writing)
    kept = studio.revisions.list(draft_id, user="local")
    assert kept[0]["reason"] == "written" and kept[-1]["text"] == "version 7"  # the first and the newest stay
    assert [r["text"] for r in kept[1:]] == [f"version {n}" for n in range(4, 8)] and len(kept) == 5
