"""The judge the gate learns from ratings: a few dozen ratings teach it what unseen drafts writers like."""

from __future__ import annotations

import random

from studio.learning.dataset import Example
from studio.learning.judge import Judge
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
