"""A liked kind taught through all its words, not the one the model writes most.

Best-of-n keeps the model's own proportions: a writer who likes animals rates drafts with a bird,
a cat and a wolf, the judge learns the kind, and the serving model, which writes birds three
times as often as any other animal, offers mostly bird drafts among its favourites. Trained on
them it writes birds, and the rest of the kind stays where it was (the loop benchmark's category
of 12 animals: bird carried all of the rise). So, as diverse preference optimisation picks
the least typical of the liked responses (Lanchantin et al., 2025), the teacher keeps each of
a kind's words to a share of the liked drafts a run trains on: its favourites among the
over-represented words are dropped, its drafts with rarer words all kept. Drafts liked for a word
itself (judge.Judge.kin_word gives None: a writer who likes "cold", not cold things) are never
held back, nor is any rating.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

FLOOR = 4  # a word may always have this many liked drafts: a kind the model writes in one word alone is still taught


@dataclass(frozen=True)
class Spread:
    kin_word: Callable[[str], str | None]  # the word a draft is liked through as one of a kind (judge.Judge.kin_word)
    rated: list[str | None] = field(default_factory=list)  # the kin words of the liked ratings the run trains on
    share: float = 1.0  # the most of all liked drafts one word may carry (above FLOOR); 1: no limit

    def kept(self, liked: list[str]) -> list[bool]:
        """Which of these liked picks (best first) to train on."""
        return keep([self.kin_word(text) for text in liked], self.rated, self.share) if self.share < 1 else \
            [True] * len(liked)


def keep(picks: list[str | None], rated: list[str | None], share: float, floor: int = FLOOR) -> list[bool]:
    """Which liked picks (their kin words, best first) to keep so that, with the ratings (all kept),
    no word is the kin word of more than max(floor, share of the kept liked drafts liked as one of a
    kind): the most drafts that allows. Drafts liked for a word itself neither count nor are held back,
    so a run with many of them cannot widen the commonest word's allowance."""
    rated_count = Counter(w for w in rated if w is not None)
    pick_count = Counter(w for w in picks if w is not None)

    def allowed(total: int) -> int:  # how many kin drafts a limit of this total's share keeps
        cap = max(floor, int(share * total))
        return sum(min(rated_count[w] + pick_count[w], max(rated_count[w], cap)) for w in rated_count | pick_count)

    total = next(n for n in range(sum(rated_count.values()) + sum(pick_count.values()), -1, -1) if allowed(n) >= n)
    cap, seen, kept = max(floor, int(share * total)), Counter(rated_count), []
    for word in picks:
        kept.append(word is None or seen[word] < cap)
        seen[word] += word is not None and kept[-1]
    return kept
