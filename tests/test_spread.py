"""The teacher spreads a liked kind over its words: which liked picks it keeps."""

from __future__ import annotations

import random
from collections import Counter

from studio.learning.spread import keep


def kept_words(picks: list[str | None], kept: list[bool]) -> Counter:
    return Counter(word for word, keeps in zip(picks, kept) if keeps)


def test_the_word_the_model_writes_most_is_held_to_a_share_and_the_kinds_rarer_words_are_all_kept():
    """Bird drafts are most of the favourites, as the model writes birds most: the teacher keeps its
    best few, every cat, owl and crow, and every draft liked for a word of its own."""
    picks = ["bird"] * 14 + ["cat"] * 4 + ["owl"] * 2 + ["crow"] + [None] * 3
    random.Random(0).shuffle(picks)
    rated = ["bird"] * 3 + ["cat"] + [None] * 2
    kept = keep(picks, rated, 1 / 3)
    words = kept_words(picks, kept)
    assert words["owl"] == 2 and words["crow"] == 1 and words[None] == 3 and words["cat"] >= 3
    liked_as_kind = 4 + sum(words.values()) - words[None]
    assert words["bird"] + 3 <= max(4, liked_as_kind / 3) and words["bird"] < 14
    first_birds = [i for i, word in enumerate(picks) if word == "bird"][:words["bird"]]
    assert all(kept[i] for i in first_birds)  # its favourites among them, not any


def test_nothing_is_held_back_without_a_limit_or_below_the_floor():
    """share 1 keeps every pick; a kind the model writes in one word alone still teaches that word's
    first few; ratings are never held back, even when they alone pass a word's share."""
    picks = ["bird"] * 9 + ["cat"]
    assert all(keep(picks, [], 1.0))
    assert sum(keep(["bird"] * 9, [], 1 / 3)) == 4
    assert keep(["bird", "cat", None], ["bird"] * 10, 1 / 3) == [False, True, True]
