"""The loop benchmark's synthetic writers: which drafts each likes (5 stars; the rest get 1 star).

Real writers rate whole drafts, not words: besides a word or phrase (`--trait REGEX`), a rater
may like a category spread over many words (`--category`), drafts that end by themselves on a
finished sentence (`--rater ends`), or that do so after saying something (`--rater complete`: at
least three sentences, so ending early is not enough), drafts that do not repeat themselves (`--rater no-repeats`),
or nothing in particular (`--rater random`: its ratings carry no signal, so an honest studio
promotes nothing). Each reads what a writer reads: the text, and whether the draft ended by itself.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Callable

from studio.learning.splits import draw
from studio.text import WORD

SENTENCE_END = re.compile(r"[.!?。！？…][\"'”’）)\]]*\s*$")
SENTENCE = re.compile(r"\w[^.!?。！？…]*[.!?。！？…]+")  # words, then the mark that ends them
COMPLETE_SENTENCES = 3  # an ad's headline, its pitch and its call to action; a scene's start, turn and close
RATERS = ("ends", "complete", "no-repeats", "random")


@dataclass(frozen=True)
class Written:
    """A draft as the rater sees it."""

    text: str
    ended: bool  # it stopped by itself (end of text), not at the token limit


@dataclass(frozen=True)
class Rater:
    name: str  # what the report calls the taste
    likes: Callable[[Written], bool]
    words: tuple[str, ...] = field(default=())  # a category's words, each reported on its own

    def share(self, drafts: list[Written]) -> float:
        """The share of these drafts the rater likes: what a writer with this taste would notice."""
        return sum(map(self.likes, drafts)) / len(drafts) if drafts else 0.0

    def word_shares(self, drafts: list[Written]) -> dict[str, float]:
        """For a category: the share of drafts with each of its words (so no single word carries it)."""
        if not drafts:
            return {}
        patterns = {w: words_pattern([w]) for w in self.words}
        return {w: sum(bool(p.search(d.text)) for d in drafts) / len(drafts) for w, p in patterns.items()}


def words_pattern(words: list[str], endings: str = "s|es") -> re.Pattern:
    """Any of the words, whole, in any case, with one of the endings or none."""
    return re.compile(rf"(?i)\b({'|'.join(map(re.escape, words))})({endings})?\b")


def trait_rater(pattern: str) -> Rater:
    trait = re.compile(pattern)
    return Rater(f"trait {pattern!r}", lambda d: bool(trait.search(d.text)))


def category_rater(words: list[str]) -> Rater:
    """Likes a draft with any of the words (whole words, a plural too)."""
    pattern = words_pattern(words)
    return Rater(f"category of {len(words)} words", lambda d: bool(pattern.search(d.text)), tuple(words))


def repeats(text: str, n: int = 4) -> bool:
    """Whether some run of n words comes twice in the text (case and punctuation aside)."""
    words = [w.lower() for w in WORD.findall(text)]
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def ends_well(draft: Written) -> bool:
    return draft.ended and bool(SENTENCE_END.search(draft.text.strip()))


def sentences(text: str) -> int:
    """Finished sentences in the text (a run of words closed by . ! ? or their CJK forms)."""
    return len(SENTENCE.findall(text))


def complete(draft: Written) -> bool:
    return ends_well(draft) and sentences(draft.text) >= COMPLETE_SENTENCES


def random_likes(share: float, seed: int) -> Callable[[Written], bool]:
    """A fixed coin per draft and seed: the same draft gets the same stars, whatever its content says."""
    def likes(draft: Written) -> bool:
        return draw(f"rater:{seed}:{draft.text}") < share
    return likes


def named_rater(name: str, seed: int = 0, share: float = 0.3) -> Rater:
    """One of RATERS: ends (likes drafts that end by themselves on a finished sentence), complete (those
    that do so after at least COMPLETE_SENTENCES sentences), no-repeats
    (dislikes drafts with a repeated 4-gram), random (likes `share` of drafts at random)."""
    if name == "ends":
        return Rater("ends by itself on a finished sentence", ends_well)
    if name == "complete":
        return Rater(f"ends by itself after at least {COMPLETE_SENTENCES} finished sentences", complete)
    if name == "no-repeats":
        return Rater("no repeated 4-gram", lambda d: not repeats(d.text))
    if name == "random":
        return Rater(f"random ({share:.0%} liked, seed {seed})", random_likes(share, seed))
    raise ValueError(f"--rater must be one of {', '.join(RATERS)}, not {name!r}.")


def add_taste_arguments(parser: argparse.ArgumentParser) -> None:
    """--trait, --category or --rater (one of them), and the random rater's seed and share."""
    taste = parser.add_mutually_exclusive_group(required=True)
    taste.add_argument("--trait", help="A regular expression: drafts it matches get 5 stars, others 1 star. Prefix "
                                       "(?i) to ignore case.")
    taste.add_argument("--category", help="Comma-separated words: a draft with any of them (whole words, plurals "
                                          "too) gets 5 stars.")
    taste.add_argument("--rater", choices=RATERS, help="ends: likes drafts that end by themselves on a finished "
                                                       "sentence (give --tokens room for the ending the template asks "
                                                       "for); complete: the same, after at least three sentences "
                                                       "(stopping early is not enough); no-repeats: dislikes drafts "
                                                       "with a repeated 4-gram; random: likes --liked-share of drafts "
                                                       "at random (no signal).")
    parser.add_argument("--rater-seed", type=int, default=0, help="The random rater's seed.")
    parser.add_argument("--liked-share", type=float, default=0.3, help="The random rater's share of liked drafts.")


def rater_from(args: argparse.Namespace) -> Rater:
    """The rater the taste arguments ask for; ValueError or re.error when they make no sense."""
    if args.trait is not None:
        return trait_rater(args.trait)
    if args.category is not None:
        words = [w.strip() for w in args.category.split(",") if w.strip()]
        if not words:
            raise ValueError("--category needs at least one word.")
        return category_rater(words)
    if not 0 < args.liked_share < 1:
        raise ValueError(f"--liked-share must be between 0 and 1, not {args.liked_share}.")
    return named_rater(args.rater, seed=args.rater_seed, share=args.liked_share)
