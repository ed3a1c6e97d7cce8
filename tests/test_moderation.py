"""The content filter and the per-writer cap: what keeps bad or lopsided data out of training."""

from __future__ import annotations

from storage import repository
from studio.learning.splits import build_split
from studio.trust.moderation import ContentFilter
from tests.drafts import seed_rated_drafts


def test_word_lists_flag_whole_words_in_english_and_substrings_in_chinese(tmp_path):
    content = ContentFilter.load()
    assert "porn" in content.check("A PORN site")
    assert content.check("She crushed a grape and drank the wine.") == ""  # 'rape' only as a whole word
    assert "强奸" in content.check("故事里有强奸的情节")
    assert content.check("江南春雨", "A calm sea") == ""

    extra = tmp_path / "words.txt"
    extra.write_text("# ours\nspoilers\n", encoding="utf-8")
    assert "spoilers" in ContentFilter.load(str(extra)).check("No Spoilers please")
    assert ContentFilter.load(enabled=False).check("porn") == ""


def test_a_flagged_draft_is_kept_marked_and_never_trained_on(studio):
    drafting = studio.drafts.write("fantasy", {"premise": "A story that is secretly porn."}, {"max_new_tokens": 6}, user="local")
    list(drafting)
    record = studio.drafts.get(drafting.draft_id, user="local")
    assert record["flagged"] and "porn" in record["flag_reason"]
    assert studio.drafts.list(user="local")[0].flagged
    assert "⚠ Flagged" in studio.drafts.export_markdown(drafting.draft_id, user="local")

    studio.drafts.rate(drafting.draft_id, 5, user="local")
    clean = seed_rated_drafts(studio, 8)
    with studio.sessions() as session:
        split = build_split(session)
        used = {e.draft_id for e in split.train + split.held_out}
        assert drafting.draft_id not in used and used == set(clean)
    exported = [row["completion"][0]["content"] for row in studio.drafts.export_dataset("kto")]
    assert len(exported) == 8 and record["text"] not in exported


def test_one_writer_cannot_fill_a_training_run(studio):
    seed_rated_drafts(studio, 20, user="prolific")
    seed_rated_drafts(studio, 5, user="quiet", start=100)
    with studio.sessions() as session:
        split = build_split(session, max_per_writer=6)
        trained = [e.user for e in split.train]  # the cap trims what trains; held-out drafts only judge
        assert trained.count("prolific") == 6 and [e.user for e in split.train + split.held_out].count("quiet") == 5
        assert len(build_split(session).train + build_split(session).held_out) == 25  # no cap: all
        assert len(repository.list_drafts(session)) == 25
