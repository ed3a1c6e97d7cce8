"""Studio use cases against a real SQLite database and a tiny model: what the writer would see."""

from __future__ import annotations

import pytest

from storage import InvalidRatingError, NotFoundError, repository
from studio.core.studio import Studio
from studio.errors import GenerationError, TemplateError


def _write(studio: Studio, template="fantasy", fields=None, **sampler):
    drafting = studio.drafts.write(template, fields or {}, {"max_new_tokens": 12, "seed": 5, **sampler}, user="local")
    chunks = list(drafting)
    return drafting, chunks


def _count(studio: Studio) -> int:
    with studio.sessions() as s:
        return len(repository.list_drafts(s, limit=10_000))


def test_a_finished_draft_is_saved_with_everything_needed_to_replay_it(studio):
    drafting, chunks = _write(studio, fields={"tone": "cosy"}, temperature=0.7)
    record = studio.drafts.get(drafting.draft_id, user="local")
    assert record["text"] == "".join(chunks) == drafting.text
    assert record["template_id"] == "fantasy" and record["template_name"] == "Fantasy tale"
    assert record["fields"]["tone"] == "cosy" and record["fields"]["hero"]  # defaults filled in
    assert "cosy tone" in record["prompt"]
    assert record["settings"]["temperature"] == 0.7 and record["settings"]["max_new_tokens"] == 12
    assert record["seed"] == 5 and record["settings"]["seed"] == 5
    assert record["model_name"] == studio.settings.model and record["model_version"] == "base"
    assert record["new_tokens"] == 12 and record["stopped"] is False
    assert record["first_token_seconds"] > 0 and record["generation_seconds"] > 0
    with studio.sessions() as s:
        row = repository.get_draft(s, drafting.draft_id)
        assert row.model_input.startswith("<|im_start|>system\n") and record["prompt"] in row.model_input


def test_replaying_a_draft_with_its_seed_writes_the_same_text(studio):
    first, _ = _write(studio, seed=11)
    again, _ = _write(studio, seed=11)
    assert first.text == again.text and first.draft_id != again.draft_id


def test_a_stopped_draft_is_kept_and_marked_stopped(studio):
    drafting = studio.drafts.write("mystery", {}, {"max_new_tokens": 1500}, key="tab-1", user="local")
    for n, _ in enumerate(drafting):
        if n == 2:
            assert studio.drafts.stop("tab-1")
    record = studio.drafts.get(drafting.draft_id, user="local")
    assert record["stopped"] is True and record["text"] == drafting.text
    assert record["new_tokens"] < 100
    assert len(studio.drafts.active) == 0 and not studio.drafts.stop("tab-1")


def test_a_closed_tab_s_draft_is_listed_by_the_time_its_stream_is_no_longer_active(studio, monkeypatch):
    # A closed tab drops its iterator; whoever then sees no active stream must find the draft saved.
    drafting = studio.drafts.write("mystery", {}, {"max_new_tokens": 1500}, key="tab-2", user="local")
    chunks = iter(drafting)
    next(chunks)
    listed_when_inactive = []
    remove = studio.drafts.active.remove

    def remove_and_look(key, stream):
        remove(key, stream)
        listed_when_inactive.append(len(studio.drafts.list(user="local")))

    monkeypatch.setattr(studio.drafts.active, "remove", remove_and_look)
    chunks.close()
    assert listed_when_inactive == [1] and len(studio.drafts.active) == 0


def test_a_draft_is_saved_as_it_streams_and_finished_in_the_same_row(studio, monkeypatch):
    from storage import revisions
    from studio.serving import drafting as drafting_module

    monkeypatch.setattr(drafting_module, "CHECKPOINT_SECONDS", 0.0)  # save at every chunk
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 12, "seed": 5}, user="local")
    chunks = iter(drafting)
    next(chunks), next(chunks)
    partial = studio.drafts.get(drafting.draft_id, user="local")
    assert partial["status"] == "writing" and partial["text"] and drafting.text.startswith(partial["text"])
    assert studio.drafts.mark_interrupted() == []  # a stream saving right now is alive, not interrupted
    rest = list(chunks)
    record = studio.drafts.get(drafting.draft_id, user="local")
    assert (record["status"], record["text"], record["new_tokens"]) == ("done", drafting.text, 12) and rest
    assert _count(studio) == 1
    with studio.sessions() as session:
        assert [r.reason for r in revisions.list_revisions(session, drafting.draft_id)] == ["written"]


def test_a_draft_left_writing_by_a_dead_process_is_kept_as_interrupted_and_not_trained_on(studio, monkeypatch):
    from studio.learning.dataset import all_rated
    from studio.serving import drafting as drafting_module

    monkeypatch.setattr(drafting_module, "CHECKPOINT_SECONDS", 0.0)
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 12, "seed": 5}, user="local")
    chunks = iter(drafting)
    next(chunks), next(chunks)  # the process "dies" here: the iterator is never finished
    draft_id = drafting.draft_id
    studio.drafts.rate(draft_id, 5, user="local")
    with studio.sessions() as session:
        assert draft_id not in [e.draft_id for e in all_rated(session)]  # still streaming: not data yet
    assert studio.drafts.mark_interrupted(quiet_seconds=0) == [draft_id]
    record = studio.drafts.get(draft_id, user="local")
    assert record["status"] == "interrupted" and record["stopped"] and record["text"]
    with studio.sessions() as session:
        assert draft_id in [e.draft_id for e in all_rated(session)]


def test_continue_extends_the_same_draft(studio):
    drafting, _ = _write(studio)
    before = studio.drafts.get(drafting.draft_id, user="local")
    more = studio.drafts.continue_draft(drafting.draft_id, 8, user="local")
    new_text = "".join(more)
    after = studio.drafts.get(drafting.draft_id, user="local")
    assert more.draft_id == drafting.draft_id
    assert after["text"] == before["text"] + new_text and new_text
    assert after["new_tokens"] == before["new_tokens"] + 8
    assert after["continuations"] == 1
    assert _count(studio) == 1


def test_an_edit_saved_while_continue_streams_is_kept_and_each_revision_names_its_writer(studio):
    drafting, _ = _write(studio)
    more = studio.drafts.continue_draft(drafting.draft_id, 12, user="local")
    stream = iter(more)
    next(stream)  # the continuation is under way...
    edited = "A line the writer typed meanwhile."
    assert studio.revisions.edit(drafting.draft_id, edited, user="local")  # ...when the box's edit is saved
    list(stream)
    continuation = more.text[len(drafting.text):]
    after = studio.drafts.get(drafting.draft_id, user="local")
    assert after["text"] == edited + continuation and continuation  # the edit is kept, the new words follow it
    history = studio.revisions.list(drafting.draft_id, user="local")
    assert [(r["reason"], r["model_version"]) for r in history] == [
        ("written", "base"), ("edited", ""), ("continued", "base")]


@pytest.mark.parametrize("template, fields, sampler, error, message", [
    ("westerns", {}, {}, TemplateError, "Unknown template 'westerns'"),
    ("fantasy", {"premise": ""}, {}, TemplateError, "“Premise” is required"),
    ("fantasy", {"premise": "x" * 401}, {}, TemplateError, "limit is 400"),
    ("fantasy", {}, {"max_new_tokens": 100000}, GenerationError, "max_new_tokens must be between"),
    ("fantasy", {}, {"max_new_tokens": 2040}, GenerationError, "context"),
    ("fantasy", {}, {"temperature": -1}, GenerationError, "temperature"),
])
def test_bad_input_is_refused_before_any_text_and_writes_no_row(studio, template, fields, sampler, error, message):
    with pytest.raises(error, match=message):
        studio.drafts.write(template, fields, sampler, user="local")
    assert _count(studio) == 0


def test_rating_then_re_rating_keeps_one_rating_with_the_latest_stars(studio):
    drafting, _ = _write(studio)
    studio.drafts.rate(drafting.draft_id, 3, "meh", user="local")
    studio.drafts.rate(drafting.draft_id, 5, "grew on me", user="local")
    record = studio.drafts.get(drafting.draft_id, user="local")
    assert (record["stars"], record["comment"]) == (5, "grew on me")
    with studio.sessions() as s:
        assert len(repository.get_draft(s, drafting.draft_id).ratings) == 1


def test_bad_ratings_get_clear_errors_and_change_nothing(studio):
    drafting, _ = _write(studio)
    with pytest.raises(InvalidRatingError, match="from 1 to 5, not 6"):
        studio.drafts.rate(drafting.draft_id, 6, user="local")
    with pytest.raises(NotFoundError, match="Draft 999 does not exist"):
        studio.drafts.rate(999, 4, user="local")
    assert studio.drafts.get(drafting.draft_id, user="local")["stars"] is None


def test_history_filters_by_template_and_rating(studio):
    story, _ = _write(studio, "fantasy")
    poem, _ = _write(studio, "poetry")
    studio.drafts.rate(story.draft_id, 5, user="local")
    studio.drafts.rate(poem.draft_id, 2, user="local")
    unrated, _ = _write(studio, "poetry")
    assert [d.id for d in studio.drafts.list(user="local")] == [unrated.draft_id, poem.draft_id, story.draft_id]
    assert [d.id for d in studio.drafts.list(template_id="poetry", user="local")] == [unrated.draft_id, poem.draft_id]
    assert [d.id for d in studio.drafts.list(min_stars=4, user="local")] == [story.draft_id]
    assert [d.id for d in studio.drafts.list(unrated_only=True, user="local")] == [unrated.draft_id]
    with pytest.raises(TemplateError):
        studio.drafts.list(template_id="westerns", user="local")


def test_drafts_survive_a_restart(settings):
    first = Studio(settings)
    drafting, _ = _write(first)
    first.drafts.rate(drafting.draft_id, 4, user="local")
    reopened = Studio(settings)
    assert reopened.drafts.get(drafting.draft_id, user="local")["stars"] == 4
    assert reopened.drafts.get(drafting.draft_id, user="local")["text"] == drafting.text


def test_markdown_export_has_the_text_the_rating_and_how_it_was_made(studio):
    drafting, _ = _write(studio, "chinese_poem", {"subject": "秋月"})
    studio.drafts.rate(drafting.draft_id, 4, "好", user="local")
    markdown = studio.drafts.export_markdown(drafting.draft_id, user="local")
    assert markdown.startswith(f"# 中文诗歌 — draft {drafting.draft_id}\n")
    assert drafting.text.strip() in markdown
    assert "★★★★☆ (4/5)" in markdown and "- Comment: 好" in markdown
    assert "seed 5" in markdown and "**subject**: 秋月" in markdown


def test_the_studio_runs_on_postgresql(postgres_url, tiny_model_dir, tmp_path):
    from studio.config import Settings

    studio = Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path), db=postgres_url))
    drafting, _ = _write(studio, "chinese_fable")
    studio.drafts.rate(drafting.draft_id, 5, "很好", user="local")
    studio.drafts.rate(drafting.draft_id, 4, "好", user="local")
    reopened = Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path), db=postgres_url))
    record = reopened.drafts.get(drafting.draft_id, user="local")
    assert (record["stars"], record["comment"], record["text"]) == (4, "好", drafting.text)
    assert [d.id for d in reopened.drafts.list(min_stars=4, user="local")] == [drafting.draft_id]


def test_a_writer_starting_too_many_drafts_is_told_to_wait(settings):
    settings.rate_limit = 2
    studio = Studio(settings)
    for _ in range(2):
        _write(studio)
    with pytest.raises(GenerationError, match="started 2 drafts in the last minute, and a writer may start 2: wait"):
        studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local")
    list(studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="someone-else"))  # per writer
    assert _count(studio) == 3


def test_the_rate_limit_window_slides():
    from studio.trust.limits import RateLimit

    now = [0.0]
    limit = RateLimit(1, clock=lambda: now[0])
    limit.check("a")
    with pytest.raises(GenerationError):
        limit.check("a")
    now[0] = 60.0
    limit.check("a")  # a minute later it is allowed again


def test_word_counts_treat_each_chinese_character_as_a_word():
    from studio.core.export import word_count

    assert word_count("The cartographer's map — redrawn, twice.") == 5
    assert word_count("江南春雨") == 4
    assert word_count("Rain 江南 falls") == 4
    assert word_count("") == 0


def test_an_open_read_never_holds_up_a_writers_rating(studio):
    """An open Training tab or History list reads; a writer's rating must not wait for it."""
    import threading

    drafting, _ = _write(studio)
    rated = threading.Event()

    def rate() -> None:
        studio.drafts.rate(drafting.draft_id, 4, user="local")
        rated.set()

    with studio.sessions() as session:  # a read, mid-transaction
        assert repository.list_drafts(session, limit=10)
        writer = threading.Thread(target=rate)
        writer.start()
        assert rated.wait(10), "the rating waited for a reader to finish"
    writer.join()
    assert studio.drafts.get(drafting.draft_id, user="local")["stars"] == 4


def test_a_write_in_a_reading_session_fails_loudly_instead_of_racing_for_the_lock(studio):
    from sqlalchemy.exc import OperationalError

    drafting, _ = _write(studio)
    with studio.sessions() as session, pytest.raises(OperationalError, match="readonly"):
        repository.update_draft(session, drafting.draft_id, text="lost")
    assert studio.drafts.get(drafting.draft_id, user="local")["text"] == drafting.text
