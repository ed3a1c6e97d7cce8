"""Evidence the candidate cannot fool: the judge that teaches is not the judge that promotes, and the
gate's error rate is spent across runs, so a studio rated at random stays on its base."""

from __future__ import annotations

import random

import pytest

from storage import registry, repository
from storage.models import Draft
from studio.learning.dataset import Example, all_rated
from studio.learning.jobs import execute_run
from studio.learning.plan import NoConsistentPreference, halves, plan_run, share_of_alpha
from tests.drafts import seed_rated_drafts, short_dirge, short_song


def kto_config(studio, **overrides):
    return studio.versions.training_config(**{"method": "kto", "epochs": 1, "max_length": 128, "batch_size": 4,
                                              "judge_samples": 0, "gate_samples": 4, **overrides})


def run(studio, **overrides) -> dict:
    run_id, _ = studio.versions.train("cli", user="local")
    return execute_run(studio.sessions, studio.settings, kto_config(studio, **overrides), run_id)


def rate(studio, stars: dict[int, int]) -> None:
    with studio.sessions.begin() as session:
        for draft_id, value in stars.items():
            repository.rate_draft(session, draft_id, value, user="local")


def test_the_shares_of_alpha_add_up_to_alpha_and_shrink_test_by_test():
    shares = [share_of_alpha(0.05, k) for k in range(1, 10_001)]
    assert shares[:3] == pytest.approx([0.025, 0.05 / 6, 0.05 / 12])
    assert sum(shares) < 0.05 and sum(shares) == pytest.approx(0.05, rel=1e-3)


def test_half_of_the_liked_and_half_of_the_disliked_drafts_examine_and_each_keeps_its_half():
    """A coin per draft could leave 2 of 11 liked drafts to teach; side by side, 5 examine and 6 teach.
    Drafts rated later join the split without moving anyone already in it (but an odd one out, which
    may now have a partner)."""
    def drafts(first: int, last: int, stars: int) -> dict[int, tuple[Example, bool]]:
        return {i: (Example(i, "", "", "", stars, "local", "t", created=f"2026-01-01T00:{i % 60:02d}"), stars > 3)
                for i in range(first, last)}

    rated = drafts(0, 11, 5) | drafts(11, 51, 1)
    examining = halves(rated)
    assert len(examining & set(range(11))) == 5 and len(examining - set(range(11))) == 20
    later = halves(rated | drafts(51, 60, 5) | drafts(60, 90, 1))
    assert examining <= later and len((later - examining) & set(rated)) <= 1 and len(later) == 20 // 2 + 70 // 2


def test_ratings_only_the_teaching_half_agrees_with_cannot_promote(studio):
    """The writer likes songs and dislikes dirges among the drafts that would teach, but among those kept
    to examine, a draft's words have nothing to do with its stars: a judge fitted on the teaching half
    would be sure of itself and teach songs, but the examiner, fitted on the other half, finds nothing
    to rank the held-out ratings by, and nothing trains."""
    ids = seed_rated_drafts(studio, 40, text=short_song) + seed_rated_drafts(studio, 40, start=40, text=short_dirge)
    songs = set(ids[:40])
    rate(studio, {i: 5 if i in songs else 1 for i in ids})
    with studio.sessions() as session:
        examining = plan_run(session, kto_config(studio)).examining
    coin = random.Random(11)
    with studio.sessions.begin() as session:  # same stars, same halves; the examining drafts' words by a coin
        for draft_id in examining:
            session.get(Draft, draft_id).text = coin.choice([short_song, short_dirge])(1000 + draft_id)
    with pytest.raises(NoConsistentPreference, match="Nothing to learn yet"):
        run(studio)
    assert [v["name"] for v in studio.versions.list()] == ["base"]
    # The same ratings everywhere are learned and examined: the examiner is trusted and the run trains.
    with studio.sessions.begin() as session:
        for draft_id in examining:
            session.get(Draft, draft_id).text = (short_song if draft_id in songs else short_dirge)(1000 + draft_id)
    summary = run(studio)
    # Not quite 1: the tiny model's random word vectors give the judge a few kinds of words that mean nothing.
    assert summary["judge_accuracy"] >= 0.9 and summary["judge_p"] <= summary["judge_alpha"], summary
    assert summary["examining"] > 0 and summary["decision"] in ("promoted", "rejected")


def test_every_stopped_or_rejected_run_spends_a_share_and_a_promotion_starts_afresh(studio):
    with studio.sessions() as session:
        assert registry.tests_since_promotion(session) == 0
    liked = seed_rated_drafts(studio, 30, text=short_song)
    disliked = seed_rated_drafts(studio, 30, start=30, text=short_dirge)
    rng = random.Random(2)
    rate(studio, {i: rng.choice([5, 1]) for i in liked + disliked})  # stars that say nothing
    with pytest.raises(NoConsistentPreference, match=r"p <= 0\.025, the share of 0\.05 left for test 1 since"):
        run(studio)
    with pytest.raises(NoConsistentPreference, match=r"p <= 0\.0083, the share of 0\.05 left for test 2 since"):
        run(studio)
    with studio.sessions() as session:
        assert [r.outcome for r in registry.list_runs(session)] == ["no_preference", "no_preference"]
        assert registry.tests_since_promotion(session) == 2
    with studio.sessions.begin() as session:  # a run that promoted ends the family: the next test is the first
        session.add(registry.TrainingRun(status="succeeded", trigger="cli", outcome="promoted"))
    with studio.sessions() as session:
        assert registry.tests_since_promotion(session) == 0


def test_a_studio_rated_at_random_stays_on_its_base_run_after_run(studio):
    """Eight rounds of 24 drafts (songs and dirges alike), each rated by a coin, each followed by a run:
    every run stops before training or is rejected, and the base is served throughout."""
    rng = random.Random(8)
    outcomes = []
    for round_ in range(8):
        ids = seed_rated_drafts(studio, 12, start=24 * round_, text=short_song) + seed_rated_drafts(
            studio, 12, start=24 * round_ + 12, text=short_dirge)
        rate(studio, {i: rng.choice([5, 1]) for i in ids})
        try:
            outcomes.append(run(studio)["decision"])
        except NoConsistentPreference:
            outcomes.append("no_preference")
    assert "promoted" not in outcomes, outcomes
    assert studio.pool.load().version == "base"
    with studio.sessions() as session:
        assert registry.tests_since_promotion(session) == sum(o in ("no_preference", "rejected") for o in outcomes) >= 6
