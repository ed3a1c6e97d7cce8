"""Learning from every rating (KTO) and the ranking gate, on tiny models: what writers like is learned
and promoted, shuffled ratings are not, held-out drafts never train, too few held out cannot decide."""

from __future__ import annotations

import random

import pytest

from storage import registry, repository
from studio.learning.dataset import all_rated
from studio.learning.splits import held_out, held_out_key
from studio.learning.jobs import execute_run
from studio.learning.plan import NoConsistentPreference, plan_run
from studio.learning.judge import Judge
from studio.learning.samples import fluency, judge_picks, sample_requests, write_drafts
from studio.ui.training import before_after
from studio.serving.generation import model_input
from studio.text import finished
from tests.drafts import DIRGE_WORDS, WORDS, dirge, seed_rated_drafts, short_dirge, short_song, song


def kto_config(studio, **overrides):
    """Ratings only unless a test asks for the judge's picks: the verse model's every step counts. Few
    gate samples: the tests that judge what a version writes ask for more (LEARNS_SONGS)."""
    return studio.versions.training_config(**{"method": "kto", "epochs": 3, "learning_rate": 5e-3, "max_length": 128,
                                              "batch_size": 4, "judge_samples": 0, "gate_samples": 4, **overrides})


# How the verse model learns a taste for songs, far from every guard: over LoRA seeds 0-7 (a seed
# stands in for another machine's rounding), the promoted version wrote 75-100% songs of new prompts
# against the base's 28%, the gate's sign test gave p <= 0.002, the base read its samples 1.08-1.27x
# as perplexing as its own (guard: 2x), and their variety was 0.75-0.99 of the base's. Shorter or fiercer runs (3 epochs at 5e-3, beta 0.1)
# wrote verses half in one vocabulary, half in the other, that the base found up to 2.7x as
# perplexing: on or past the guard, depending on the seed.
# Songs use half the words of songs and dirges together, so a version that writes only songs has
# about 0.64 of the base's variety by construction: this world's variety guard is 0.5 (a collapse
# into one text falls near 0.05), not the 0.93 meant for a taste of a few words in real drafts.
LEARNS_SONGS = {"epochs": 6, "learning_rate": 2e-3, "kto_beta": 0.5, "min_diversity": 0.5, "gate_samples": 24}


def train(studio, **overrides) -> dict:
    run_id, _ = studio.versions.train("cli", user="local")
    return execute_run(studio.sessions, studio.settings, kto_config(studio, **overrides), run_id)


def songs_and_dirges(studio, n: int, start: int = 0) -> tuple[list[int], list[int]]:
    """The writer likes songs (5 stars) and passes over dirges (1 star): same shape, other words."""
    liked = seed_rated_drafts(studio, n, stars=5, start=start, text=short_song)
    disliked = seed_rated_drafts(studio, n, stars=1, start=start + n, text=short_dirge)
    return liked, disliked


@pytest.fixture
def verse_studio(tmp_path, verse_model_dir):
    """A studio whose model writes songs and dirges alike, as a base model writes many kinds of draft."""
    from studio.config import Settings
    from studio.core.studio import Studio

    return Studio(Settings(model=str(verse_model_dir), data_dir=str(tmp_path / "data")))


def test_a_planted_preference_is_learned_ranked_and_promoted(verse_studio):
    studio = verse_studio
    songs_and_dirges(studio, 30)
    base_songs = song_share(studio)
    summary = train(studio, **LEARNS_SONGS)
    assert summary["method"] == "kto" and summary["decision"] == "promoted", summary["reason"]
    assert summary["reason"].startswith("Promoted: a judge learned from ratings it never trained on"), summary["reason"]
    assert studio.pool.load().version == summary["version"]
    assert "ranks" in studio.versions.runs()[0]["message"]
    # What writers notice: the served version writes songs far more often than the base did (on new
    # prompts, over eight seeds: 75-100% against 28%).
    served_songs = song_share(studio)
    assert served_songs >= base_songs + 0.2, (served_songs, base_songs)
    # Why: a judge the held-out ratings trust, and a candidate whose likelihoods rank them as well
    # (both measured 1.0 over eight seeds); the base ties every pair with itself.
    figures = {k: summary[k] for k in ("judge_accuracy", "candidate_accuracy", "serving_accuracy", "low")}
    assert summary["judge_accuracy"] > 0.75 and summary["candidate_accuracy"] > 0.75, figures
    assert summary["serving_accuracy"] == 0.5 and summary["low"] > 0, figures
    assert summary["train_liked"] > 0 and summary["train_disliked"] > 0


def song_share(studio, prompts: int = 4, each: int = 8) -> float:
    """The share of the serving version's drafts (of prompts no rating used) in the songs' words."""
    loaded = studio.pool.load()
    requests = [{"prompt": f"Write song number {n} about the sea.", "template_id": "poetry",
                 "model_input": model_input(loaded, f"Write song number {n} about the sea."),
                 "sampler": {"seed": n, "temperature": 0.8, "max_new_tokens": 40}} for n in range(200, 200 + prompts)]
    drafts = [t for group in write_drafts(loaded.model, loaded.tokenizer, requests, prompts * each, chat=True)
              for t, _ in group]
    return sum(song_words(t) > 0 for t in drafts) / len(drafts)


def song_words(text: str) -> int:
    """How many more of the songs' words than the dirges' a text has."""
    words = text.replace(".", " ").split()
    return sum(w in WORDS["noun"] + WORDS["adj"] for w in words) - sum(w in DIRGE_WORDS["noun"] + DIRGE_WORDS["adj"]
                                                                       for w in words)


def rated_songs_judge_and_model(studio):
    """30 songs liked and 30 dirges passed over; a judge fitted on those ratings; the studio's model."""
    songs_and_dirges(studio, 30)
    with studio.sessions() as session:
        judge = Judge.fit(all_rated(session), lambda e: e.stars >= 4)
    return judge, studio.pool.load()


def song_request(loaded, number: int, seed: int, tokens: int = 40) -> dict:
    prompt = f"Write song number {number} about the sea."
    return {"prompt": prompt, "template_id": "poetry", "model_input": model_input(loaded, prompt),
            "sampler": {"seed": seed, "temperature": 0.7, "max_new_tokens": tokens}}


def test_the_judge_picks_the_serving_versions_songs_to_learn_from_and_its_dirges_to_avoid(verse_studio):
    """A base that writes songs and dirges alike: of its own drafts, what the judge learned from
    the ratings labels songs liked and dirges disliked, as many of each."""
    judge, loaded = rated_songs_judge_and_model(verse_studio)
    request = song_request(loaded, 90, seed=5)
    picks = judge_picks(loaded.model, loaded.tokenizer, [request], 64, judge.scores, chat=loaded.is_chat)
    songs = [song_words(e.completion) for e in picks if e.stars == 5]
    dirges = [song_words(e.completion) for e in picks if e.stars == 1]
    assert len(songs) == len(dirges) >= 5
    assert max(dirges) < 0 < min(songs), (songs, dirges)  # measured on six prompts: 22-30 each, every one clear
    assert {e.context for e in picks} == {request["model_input"]} and len({e.completion for e in picks}) == len(picks)


def test_a_teacher_short_of_liked_drafts_has_the_model_write_more_until_it_has_enough(verse_studio):
    """A taste the model shows now and then gives few picks from one batch, too few to learn from:
    the model writes more, from seeds no batch used, until the teacher has the liked drafts it
    wants, and never more than the run allows."""
    judge, loaded = rated_songs_judge_and_model(verse_studio)
    request = song_request(loaded, 92, seed=9)

    def liked(wanted: int, most: int) -> set[str]:
        picks = judge_picks(loaded.model, loaded.tokenizer, [request], 8, judge.scores, chat=True,
                            liked_wanted=wanted, most=most)
        return {e.completion for e in picks if e.stars == 5}

    one_batch, enough, capped = liked(0, 64), liked(10, 64), liked(1000, 16)
    assert len(one_batch) < 10 <= len(enough), (len(one_batch), len(enough))
    assert one_batch < capped <= enough  # the first batch's seeds, then new ones
    assert len(capped) <= 16 // 2  # as many disliked as liked, of 16 drafts at most


@pytest.mark.parametrize("batching", ["on", "off"])
def test_a_draft_cut_at_the_token_limit_is_saved_as_not_ended_and_trains_no_ending(tmp_path, verse_model_dir, batching):
    """The verse model ends its drafts after two verses: a draft given room ends by itself; one cut
    at the token limit has not ended, though nobody stopped it, and never teaches an end there."""
    from studio.config import Settings
    from studio.core.studio import Studio
    from studio.learning.dataset import tokenize_example

    studio = Studio(Settings(model=str(verse_model_dir), data_dir=str(tmp_path / "data"), batching=batching))
    fields = {"subject": "Write song number 91 about the sea."}
    for tokens in (60, 7):
        drafting = studio.drafts.write("poetry", fields, {"max_new_tokens": tokens, "seed": 5}, user="local")
        list(drafting)
        studio.drafts.rate(drafting.draft_id, 5, user="local")
    with studio.sessions() as session:
        room, cut = sorted(all_rated(session), key=lambda e: len(e.completion), reverse=True)
    assert room.ended and not cut.ended
    assert studio.drafts.get(cut.draft_id, user="local")["stopped"] is False
    tokenizer = studio.pool.load().tokenizer
    assert tokenize_example(tokenizer, room)["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in tokenize_example(tokenizer, cut)["labels"]


def test_a_pick_cut_at_the_token_limit_trains_whole_and_is_never_taught_as_an_ending(verse_studio, tmp_path):
    """TRL ends every completion with end-of-text: a liked pick the token limit cut mid-verse would
    teach the model to stop there. Picks know whether they ended; one that was cut trains whole (what
    the writer liked may be in its last words) and without the end-of-text, as TRL's trainer reads it."""
    import copy

    from studio.learning.finetune import kto_rows, kto_trainer

    studio = verse_studio
    judge, loaded = rated_songs_judge_and_model(studio)

    def picks(tokens: int) -> list:
        return judge_picks(loaded.model, loaded.tokenizer, [song_request(loaded, 91, 5, tokens)], 32, judge.scores,
                           chat=loaded.is_chat)

    whole, cut = picks(60), picks(7)  # the verse model ends after two verses; 7 tokens is half of one
    assert whole and all(e.ended for e in whole)
    assert cut and not any(e.ended for e in cut) and any(e.stars >= 4 for e in cut)
    rows = kto_rows(loaded.tokenizer, whole + cut, lambda e: e.stars >= 4)
    trainer = kto_trainer(copy.deepcopy(loaded.model), loaded.tokenizer, rows, kto_config(studio).resolved("kto"),
                          tmp_path, lambda *_: None, [])
    eos, trained = loaded.tokenizer.eos_token_id, list(trainer.train_dataset)
    assert [row["completion_ids"][-1] == eos for row in trained] == [e.ended for e in whole + cut]
    for e, row in zip(cut, trained[len(whole):]):
        assert loaded.tokenizer.decode(row["completion_ids"]).strip() == e.completion.strip()


def test_the_judges_picks_pass_the_content_filter_as_writers_drafts_do(verse_studio):
    """The model's own drafts train too: a flagged one must not (on 5b3b0f3 none was checked)."""
    from studio.trust.moderation import ContentFilter

    judge, loaded = rated_songs_judge_and_model(verse_studio)
    request = song_request(loaded, 90, seed=5)
    blocked = ContentFilter(("lantern", "grave"))  # a word of each kind, as if on the blocklist

    def picks(allowed=None):
        return judge_picks(loaded.model, loaded.tokenizer, [request], 64, judge.scores, chat=True, allowed=allowed)

    assert any(blocked.check(e.completion) for e in picks())  # without the filter, some would train
    screened = picks(blocked.allows)
    assert screened and not any(blocked.check(e.completion) for e in screened)


def test_the_next_run_builds_on_and_must_beat_the_version_being_served(verse_studio):
    studio = verse_studio
    songs_and_dirges(studio, 30)
    first = train(studio, **LEARNS_SONGS)
    assert first["decision"] == "promoted", first["reason"]
    songs_and_dirges(studio, 10, start=60)
    second = train(studio, **LEARNS_SONGS)
    assert second["against"] == first["version"]  # the serving fine-tune, not the base
    versions = {v["name"]: v for v in studio.versions.list()}
    assert versions[second["version"]]["parent_id"] == versions[first["version"]]["id"]


@pytest.mark.parametrize("warm_start", [True, False])
def test_a_run_starts_from_what_the_served_version_learned_unless_told_not_to(verse_studio, warm_start):
    """A second run too short to learn anything itself writes where it started: as the served version
    (which learned songs) from its adapter, or as the base from a new LoRA."""
    studio = verse_studio
    songs_and_dirges(studio, 30)
    first = train(studio, **LEARNS_SONGS)
    assert first["decision"] == "promoted", first["reason"]
    songs_and_dirges(studio, 10, start=60)
    second = train(studio, **{**LEARNS_SONGS, "epochs": 1, "learning_rate": 1e-9, "warm_start": warm_start})
    assert second["against"] == first["version"]
    started = {v["name"]: v for v in studio.versions.list()}[second["version"]]["hyperparameters"]["start_adapter"]
    shares = second["candidate_liked"], second["serving_liked"]
    if warm_start:  # the served version writes songs 75-100% of the time, the base 28% (see LEARNS_SONGS)
        assert started.endswith(first["version"]) and shares[0] >= shares[1] - 0.1, shares
    else:
        assert started is None and shares[0] <= shares[1] - 0.3, shares


def test_a_draft_the_served_version_trained_on_never_fits_the_examiner(verse_studio):
    """A candidate starting from the served version's adapter knows its drafts: an examiner that learned
    from them too could pass the candidate on their noise."""
    studio = verse_studio
    songs_and_dirges(studio, 30)
    first = train(studio, **LEARNS_SONGS)
    assert first["decision"] == "promoted", first["reason"]
    with studio.sessions() as session:
        examining = plan_run(session, kto_config(studio)).examining
    assert examining
    with studio.sessions.begin() as session:  # as if the served version had trained on half of them
        served = registry.active_version(session)
        served.train_draft_ids = [*served.train_draft_ids, *examining[::2]]
    with studio.sessions() as session:
        now = plan_run(session, kto_config(studio)).examining
    assert now and not set(now) & set(examining[::2]), (now, examining)


def test_the_gate_writes_each_prompt_again_with_the_writers_own_token_limit(studio):
    """A prompt whose draft was given 400 tokens is sampled with 400: cut shorter, both versions'
    samples would read as cut, and a judge that learned that writers like drafts that end would favour
    whichever version ends sooner."""
    from storage.models import Draft

    liked, _ = songs_and_dirges(studio, 4)
    with studio.sessions.begin() as session:
        for draft_id, limit in zip(liked, (400, 60)):
            session.get(Draft, draft_id).settings = {"max_new_tokens": limit}
    with studio.sessions() as session:
        requests = sample_requests(session, liked[:2])
    assert sorted(r["sampler"]["max_new_tokens"] for r in requests) == [60, 400]


def test_the_base_model_finds_word_salad_harder_to_read_than_verses(verse_model_dir):
    """The fluency guard's measure: the same words, shuffled, read far less naturally."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(verse_model_dir), AutoModelForCausalLM.from_pretrained(
        verse_model_dir)
    prompt = "Write song number 3 about the sea."
    request = {"prompt": prompt, "template_id": "poetry", "model_input": tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)}
    verses = [" ".join(song(i).split(". ")[:2]) for i in range(8)]
    salad = [" ".join(random.Random(i).sample(text.split(), len(text.split()))) for i, text in enumerate(verses)]
    salad_perplexity, verse_perplexity = (fluency(model, tokenizer, [request], [texts], 128) for texts in (salad, verses))
    assert salad_perplexity > 1.5 * verse_perplexity, (salad_perplexity, verse_perplexity)


def test_a_new_version_writes_a_held_out_prompt_again_beside_its_parent(studio):
    songs_and_dirges(studio, 30)
    summary = train(studio)
    sample = summary["before_after"]
    version = next(v for v in studio.versions.list() if v["name"] == summary["version"])
    assert sample["draft_id"] == max(version["held_out_draft_ids"])  # the newest prompt no version trained on
    assert sample["parent"] == "base" and sample["sampler"]["seed"] == sample["draft_id"] - 1
    assert sample["text"] and sample["text"] != sample["parent_text"]  # it learned: same seed, other words
    caption, before, after = before_after(studio, None, "local")  # what the Training tab shows its writer
    assert summary["version"] in caption and str(sample["sampler"]["seed"]) in caption
    assert (before["value"], after["value"]) == (sample["parent_text"], sample["text"])
    assert after["label"] == f"After: {summary['version']}"
    # Another writer, or a visitor who has not signed in, sees neither the prompt nor the drafts.
    for viewer in ("bob", None):
        caption, before, after = before_after(studio, None, viewer)
        assert sample["prompt"].strip() not in caption and "only they see" in caption
        assert before["value"] == after["value"] == ""


def shuffle_stars(studio, liked: list[int], disliked: list[int], seed: int) -> None:
    """Half the songs and half the dirges liked: the stars say nothing about what the drafts are."""
    rng = random.Random(seed)
    stars = {i: 5 for i in rng.sample(liked, len(liked) // 2) + rng.sample(disliked, len(disliked) // 2)}
    with studio.sessions.begin() as session:
        for draft_id in liked + disliked:
            repository.rate_draft(session, draft_id, stars.get(draft_id, 1), user="local")


def test_shuffled_ratings_are_refused_before_training_and_the_run_says_why(studio):
    liked, disliked = songs_and_dirges(studio, 30)
    shuffle_stars(studio, liked, disliked, seed=7)
    with pytest.raises(NoConsistentPreference, match="Nothing to learn yet.*do not yet show a consistent preference"):
        train(studio)
    run = studio.versions.runs()[0]
    assert run["status"] == "failed" and "Rate more drafts" in run["error"]
    assert [v["name"] for v in studio.versions.list()] == ["base"]  # nothing was trained
    assert studio.pool.load().version == "base"


def test_a_run_on_more_ratings_trains_more_steps_up_to_a_bound(studio):
    """By default KTO trains at least kto_steps steps, so the first rounds' few ratings are seen several
    times; on many ratings, enough that each is seen kto_min_epochs times, up to kto_max_steps (a
    fixed number of steps left later rounds' drafts seen once or twice, and learned nothing)."""
    songs_and_dirges(studio, 8)
    small = train(studio, epochs=None, kto_steps=4, kto_max_steps=20)
    songs_and_dirges(studio, 16, start=16)
    middle = train(studio, epochs=None, kto_steps=4, kto_max_steps=20)
    songs_and_dirges(studio, 40, start=48)
    large = train(studio, epochs=None, kto_steps=4, kto_max_steps=20)
    curves = {v["name"]: v["loss_curve"] for v in studio.versions.list()}
    steps = [len(curves[run["version"]]) for run in (small, middle, large)]
    assert small["train_drafts"] < middle["train_drafts"] < large["train_drafts"]
    assert steps[0] == 4 and 4 < steps[1] < 20 and steps[2] == 20, steps
    assert middle["epochs"] >= 3 > large["epochs"]


def test_held_out_drafts_never_train_any_version_across_runs(studio):
    songs_and_dirges(studio, 20)
    first = train(studio)
    songs_and_dirges(studio, 20, start=40)
    second = train(studio)
    versions = {v["name"]: v for v in studio.versions.list()}
    v1, v2 = versions[first["version"]], versions[second["version"]]
    held = set(v1["held_out_draft_ids"]) | set(v2["held_out_draft_ids"])
    trained = set(v1["train_draft_ids"]) | set(v2["train_draft_ids"])
    assert held and trained and not held & trained
    assert set(v1["held_out_draft_ids"]) <= set(v2["held_out_draft_ids"])  # once held out, always held out


def test_a_draft_keeps_its_side_even_when_the_held_out_share_changes(studio):
    """The split is remembered, not redrawn: with a larger share the second run would otherwise hold out
    drafts the first version trained on, and judge it on what it learned."""
    songs_and_dirges(studio, 20)
    first = train(studio)
    songs_and_dirges(studio, 10, start=40)
    second = train(studio, held_out_fraction=0.6)
    versions = {v["name"]: v for v in studio.versions.list()}
    v1, v2 = versions[first["version"]], versions[second["version"]]
    assert set(v1["held_out_draft_ids"]) <= set(v2["held_out_draft_ids"])
    assert set(v1["train_draft_ids"]) <= set(v2["train_draft_ids"])
    assert len(v2["held_out_draft_ids"]) - len(v1["held_out_draft_ids"]) >= 8  # new drafts: about 60% of 20


@pytest.mark.parametrize("liked, held_liked", [(4, 2), (3, 1), (12, None)])
def test_a_few_liked_drafts_still_hold_out_enough_to_judge(studio, liked, held_liked):
    """Few liked drafts: a draw of 25% often holds out fewer than the gate needs (2), so new liked drafts are
    held out to reach it, never more than half of them; many liked drafts are left to the draw."""
    from studio.learning.plan import plan_run

    seed_rated_drafts(studio, liked, stars=5)
    seed_rated_drafts(studio, 30, stars=1, start=liked, text=dirge)
    config = kto_config(studio)
    with studio.sessions() as session:
        held = plan_run(session, config).held
        keys = {e.draft_id: held_out_key(e) for e in all_rated(session)}
    drawn = sum(held_out(keys[i], config.held_out_fraction) for i in held.liked)
    if held_liked is None:  # as the draw decides
        assert len(held.liked) == sum(held_out(keys[i], config.held_out_fraction)
                                      for i in keys if i <= liked) >= 2 and drawn == len(held.liked)
    else:
        assert len(held.liked) == held_liked
    assert len(held.drafts) - len(held.liked) >= 2


def test_a_capped_writer_still_trains_on_both_sides_in_the_proportion_they_rated(studio):
    """One writer's 30 liked and 90 disliked drafts under a cap of 20 drafts a run: liked and disliked
    in proportion (on 5b3b0f3 the 20 best rated: all liked, so the run fell back to liked drafts only)."""
    from studio.learning.splits import build_rated_split

    songs = seed_rated_drafts(studio, 30, stars=5, text=short_song)
    seed_rated_drafts(studio, 90, stars=1, start=30, text=short_dirge)

    def split(cap: int):
        return build_rated_split(session, held_out_fraction=0.25, max_per_writer=cap,
                                 sides=((lambda e: e.stars == 5, 2), (lambda e: e.stars == 1, 2)))

    with studio.sessions() as session:
        uncapped, capped = split(0), split(20)
    liked = sum(e.stars == 5 for e in uncapped.train)
    train, up = capped.train, sum(e.stars == 5 for e in capped.train)
    assert len(train) == 20 and abs(up - 20 * liked / len(uncapped.train)) <= 1 and up >= 3, (up, liked)
    assert max(e.draft_id for e in train if e.stars == 5) == max(set(songs) - {e.draft_id for e in capped.held_out})


def test_the_training_tab_shows_a_dash_where_the_gate_had_no_figure(studio):
    """With no liked draft held out, held-out perplexity cannot be computed: the tab still renders."""
    from studio.ui.training import _serving, _versions_table

    seed_rated_drafts(studio, 8)
    train(studio, method="sft")
    with studio.sessions.begin() as session:  # as a run that drew no liked draft into the held-out set records it
        version = registry.get_version_by_name(session, "v1")
        version.gate = {**version.gate, "candidate_perplexity": None, "serving_perplexity": None}
    versions = studio.versions.list()
    row = next(r for r in _versions_table(versions) if r[0] == "v1")
    assert row[5] == "– → – (undecided)"
    assert _serving(versions).startswith("Serving **base**")


def test_too_few_held_out_ratings_cannot_decide_and_say_how_many_more(studio):
    songs_and_dirges(studio, 10)
    summary = train(studio, held_out_fraction=0.1)  # two of each side held out: 1 chance in 6 to rank them so
    assert summary["judge_alpha"] == 0.025 and summary["liked"] == summary["disliked"] == 2
    assert summary["decision"] == "undecided"
    assert "Not enough held-out ratings to judge" in summary["reason"] and "Rate about" in summary["reason"]
    version = next(v for v in studio.versions.list() if v["name"] == summary["version"])
    assert not version["active"] and version["status"] == "rejected"
    studio.versions.promote(version["id"], user="local")  # an admin may still serve it by hand
    assert studio.pool.load().version == summary["version"]


def test_a_runs_drafts_are_written_in_one_batch_each_as_generate_writes_it_alone(verse_studio, monkeypatch):
    """The gate's samples and the teacher's picks: all prompts' drafts decoded together in the batch
    engine, each from its own seed (the request's plus its row), as generate() would write it alone;
    a model the engine cannot batch writes them with generate()."""
    from studio.learning import samples

    loaded = verse_studio.pool.load()
    requests = [{"prompt": p, "template_id": "poetry", "model_input": model_input(loaded, p),
                 "sampler": {"seed": 40 + n, "temperature": 0.8, "max_new_tokens": 60}}
                for n, p in enumerate(["Write song number 7 about the sea.", "Write a dirge about the hills, number 12."])]
    together = samples.write_drafts(loaded.model, loaded.tokenizer, requests, 5, chat=True)
    assert [len(group) for group in together] == [3, 2]
    alone = [[samples._write_one_prompt(loaded.model, loaded.tokenizer,
                                        {**r, "sampler": {**r["sampler"], "seed": r["sampler"]["seed"] + row}}, 1,
                                        chat=True)[0] for row in range(len(group))]
             for r, group in zip(requests, together)]
    assert together == alone and all(ended for group in together for _, ended in group)
    assert len({text for group in together for text, _ in group}) > 1  # rows differ: each its own seed

    monkeypatch.setattr("studio.serving.batching.batching_obstacle", lambda model: "not batchable")
    fallback = samples.write_drafts(loaded.model, loaded.tokenizer, requests, 5, chat=True)
    assert [len(group) for group in fallback] == [3, 2] and all(text for group in fallback for text, _ in group)


def test_drafts_scored_together_get_the_likelihood_each_gets_alone(verse_studio, monkeypatch):
    """The gate's perplexities and the candidate's held-out scores come from batched passes (drafts
    of different lengths right-padded together, drafts of one prompt continuing from its cache);
    neither padding nor the shared prompt may change a draft's figures."""
    from studio.learning import likelihood
    from studio.learning.dataset import Example

    loaded = verse_studio.pool.load()
    context = model_input(loaded, "Write song number 3 about the sea.")
    drafts = [Example(i, context, "", text, 5, "", "poetry", ended=i % 2 == 0)
              for i, text in enumerate([song(1), short_song(2), dirge(3) + " " + dirge(4), short_dirge(5), "sea"])]
    drafts += [Example(5, model_input(loaded, "A dirge, please."), "", dirge(6), 1, "", "poetry", ended=True),
               Example(6, context, "", "", 1, "", "poetry", ended=False)]  # nothing to score
    together = likelihood.score(loaded.model, loaded.tokenizer, drafts, 512)
    monkeypatch.setattr(likelihood, "SCORE_BATCH_TOKENS", 1)  # one draft a pass, each read whole
    alone = likelihood.score(loaded.model, loaded.tokenizer, drafts, 512, share_contexts=False)
    assert together.keys() == alone.keys() == set(range(7))
    assert together[6] == alone[6] == (0.0, 0)
    del together[6], alone[6]
    for i in alone:
        assert together[i][1] == alone[i][1] > 0
        assert together[i][0] == pytest.approx(alone[i][0], rel=1e-4, abs=1e-3), i


def test_many_disliked_drafts_against_few_liked_train_at_most_twice_as_many_and_the_rest_wait(studio):
    """39 disliked drafts against 6 liked pushed the real model away from its own fluent drafts (the base
    found its drafts twice as perplexing); 12 against 6 did not (README, the loop benchmark). So a run
    trains every liked draft and at most two disliked ones for each, the same ones run after run, and
    says how many wait."""
    from studio.learning.plan import plan_run

    seed_rated_drafts(studio, 8, stars=5, text=short_song)
    seed_rated_drafts(studio, 60, stars=1, start=8, text=short_dirge)
    with studio.sessions() as session:
        plan, again = plan_run(session, kto_config(studio)), plan_run(session, kto_config(studio))
        everything = plan_run(session, kto_config(studio, kto_disliked_per_liked=0))
    up = sum(e.stars == 5 for e in plan.train)
    assert up == sum(e.stars == 5 for e in everything.train) >= 1
    assert len(plan.train) - up == 2 * up < len(everything.train) - up
    assert [e.draft_id for e in plan.train] == [e.draft_id for e in again.train]
    waiting = len(everything.train) - len(plan.train)
    assert f"{up} liked and {2 * up} disliked drafts ({waiting} more disliked wait for more liked ones)" in plan.note
    assert "wait" not in everything.note
