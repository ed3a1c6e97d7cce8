"""The judge the gate learns from ratings: a few dozen ratings teach it what unseen drafts writers like."""

from __future__ import annotations

import random

import pytest

from studio.learning.dataset import Example
from studio.learning.judge import Judge, features
from studio.learning.neighbours import WordVectors, kin, load_word_vectors
from tests.drafts import dirge, song


def examples(texts: list[str], stars: int) -> list[Example]:
    return [Example(i, "", "", t, stars, "local", "poetry") for i, t in enumerate(texts)]


def liked(e: Example) -> bool:
    return e.stars >= 4


def test_the_judge_learns_from_a_few_ratings_and_ranks_drafts_it_never_saw():
    judge = Judge.fit(examples([song(i) for i in range(8)], 5) + examples([dirge(i) for i in range(30)], 1), liked)
    songs, dirges = judge.scores([song(i) for i in range(100, 120)]), judge.scores([dirge(i) for i in range(100, 120)])
    assert min(songs) > max(dirges)
    assert set(judge.top_words()) & {"sea", "moon", "boat", "sailor", "harbour", "wave", "star", "lantern"}


def test_the_judge_reads_unspaced_scripts_character_by_character():
    rng = random.Random(0)
    sea, hills = "海浪船帆潮", "山石林峰谷"
    def text(chars):
        return "".join(rng.choice(chars + "的了在是我") for _ in range(40))
    judge = Judge.fit(examples([text(sea) for _ in range(10)], 5) + examples([text(hills) for _ in range(20)], 1),
                      liked)
    assert min(judge.scores([text(sea) for _ in range(10)])) > max(judge.scores([text(hills) for _ in range(10)]))


def test_the_judge_hears_a_liked_word_in_its_other_forms():
    """Liked drafts say laughed, laughter or laugh, each form in a few: unseen drafts that say laughing rank above."""
    rng = random.Random(1)
    filler = "the a she he walked room door light table window said quiet evening slowly looked".split()
    def text(word=None):
        words = [rng.choice(filler) for _ in range(30)]
        if word:
            words.insert(rng.randrange(30), word)
        return " ".join(words)
    liked_texts = [text(form) for form in ("laughed", "laughter", "laugh") for _ in range(2)]
    judge = Judge.fit(examples(liked_texts, 5) + examples([text() for _ in range(40)], 1), liked)
    assert min(judge.scores([text("laughing") for _ in range(10)])) > max(judge.scores([text() for _ in range(10)]))


def _animal_drafts(rng: random.Random, animal: str | None = None) -> str:
    filler = "the a she he walked room door light table window said quiet evening slowly looked".split()
    words = [rng.choice(filler) for _ in range(30)]
    words.insert(rng.randrange(30), animal or rng.choice(filler))  # the same length either way
    return " ".join(words)


@pytest.mark.slow
def test_with_the_models_word_vectors_the_judge_hears_a_liked_kind_in_words_no_rating_used(tmp_path):
    """Liked drafts name a cat, a dog or a horse; unseen drafts that name a wolf, a rabbit or a fox
    rank above drafts with none, through the embedded model's sense of which words are alike. A
    judge of words alone cannot tell them apart: the check fails if the kinds do nothing."""
    vectors = load_word_vectors("embedded", tmp_path)
    assert vectors is not None and len(vectors.words) > 10_000
    rng = random.Random(2)
    rated = (examples([_animal_drafts(rng, a) for a in ("cat", "dog", "horse") for _ in range(3)], 5)
             + examples([_animal_drafts(rng) for _ in range(40)], 1))
    unseen_kind = [_animal_drafts(rng, a) for a in ("wolf", "rabbit", "fox") for _ in range(4)]
    none = [_animal_drafts(rng) for _ in range(12)]

    hears = Judge.fit(rated, liked, vectors)
    assert min(hears.scores(unseen_kind)) > max(hears.scores(none))
    assert any(name.startswith("≈") for name in hears.top_words())
    words_alone = Judge.fit(rated, liked)
    assert min(words_alone.scores(unseen_kind)) <= max(words_alone.scores(none))


def test_kinds_come_from_the_vectors_nearest_words():
    """A toy vector space: "≈w" stands for w and the words nearest to it, and nothing else."""
    import numpy as np

    words = ("cat", "dog", "wolf", "chair", "table", "lamp")
    unit = np.array([[1, 0.1, 0], [0.95, 0.2, 0], [0.9, 0.3, 0], [0, 1, 0.1], [0, 0.95, 0.2], [0.1, 0, 1]], "float32")
    vectors = WordVectors(words, unit / np.linalg.norm(unit, axis=1, keepdims=True))
    assert vectors.nearest({"cat", "unknown"}, 2) == {"cat": {"cat", "dog", "wolf"}}
    reached = kin(vectors, {"cat", "chair"}, 1)
    assert reached == {"cat": {"cat"}, "dog": {"cat"}, "chair": {"chair"}, "table": {"chair"}}
    assert "≈cat" in features("A dog!", reached) and not any(f.startswith("≈") for f in features("A wolf!", reached))
    assert not any(f.startswith("≈") for f in features("A dog!", kin(None, {"cat"})))


def piece(rng: random.Random, sentences: int, words: int, ended: bool, cut: bool = False) -> Example:
    """A draft of so many sentences and about so many words, all drawn from one vocabulary: only its
    form tells it apart. cut: the token limit stopped it mid-sentence."""
    vocabulary = "moon harbour lantern road ember field sailor stone river dawn hill boat".split()
    lengths = [words // sentences + rng.randint(-2, 2) for _ in range(sentences)]
    text = " ".join(" ".join(rng.choice(vocabulary) for _ in range(max(n, 2))).capitalize() + "." for n in lengths)
    if cut:
        text += " " + " ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 6))).capitalize()
    return Example(rng.randrange(10**9), "", "", text, 0, "local", "poetry", ended=ended)


def test_the_judge_learns_a_taste_for_whole_pieces_of_several_sentences_that_words_cannot_show():
    """Writers like drafts the model ended after at least three sentences. They dislike drafts the
    token limit cut (half of them cut just after a sentence, so the text alone looks finished) and
    drafts that end after one or two long sentences: the same words and lengths on every side."""
    rng = random.Random(0)

    def drafts(n: int) -> tuple[list[Example], list[Example]]:
        liked_ = [piece(rng, rng.randint(3, 5), 40, ended=True) for _ in range(n)]
        disliked = [piece(rng, rng.randint(3, 5), 40, ended=False, cut=i % 2 == 0) for i in range(n)]
        disliked += [piece(rng, rng.randint(1, 2), 40, ended=True) for _ in range(n)]
        return liked_, disliked

    up, down = drafts(24)
    judge = Judge.fit([Example(**{**e.__dict__, "stars": 5}) for e in up] + [Example(**{**e.__dict__, "stars": 1})
                                                                            for e in down], liked)
    unseen_up, unseen_down = drafts(40)
    up_scores = judge.scores([(e.completion, e.ended) for e in unseen_up])
    down_scores = judge.scores([(e.completion, e.ended) for e in unseen_down])
    ranked = sum(u > d for u in up_scores for d in down_scores) / (len(up_scores) * len(down_scores))
    assert ranked > 0.9, ranked
    assert sum(s > 0 for s in up_scores) > 0.8 * len(up_scores) and sum(s < 0 for s in down_scores) > 0.8 * len(down_scores)
