"""Rated drafts and picks as training data: select, deduplicate, split and tokenize them.

The writers' ratings are the signal: drafts rated min_stars or more are what they like, drafts
rated low what they do not. Near-identical drafts are dropped so that one favourite does not
dominate training and cannot sit on both sides of the train / held-out split. (exports.py writes
the same data as files.)
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy.orm import Session

from storage.models import Draft
from storage.preferences import list_preferences
from storage.registry import assigned_drafts
from storage.repository import list_rated_drafts
from studio.errors import StudioError
from studio.text import unspaced

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy (and transformers' loss) skips

_SHINGLE = 3


@dataclass(frozen=True)
class Example:
    draft_id: int
    context: str  # draft.model_input: the exact text the model was given (chat template applied)
    prompt: str  # draft.prompt: the rendered template text (the user's message)
    completion: str  # draft.text
    stars: int
    user: str
    template_id: str
    created: str = ""  # when the draft was saved (ISO): with the id, the key of its held-out draw
    ended: bool = True  # it ended on its own: not stopped by its writer, nor interrupted (its text was cut)


@dataclass(frozen=True)
class PreferencePair:
    """A writer's pick: chosen over rejected, two drafts of the same prompt."""

    chosen: Example
    rejected: Example


@dataclass(frozen=True)
class DatasetSplit:
    train: list[Example]
    held_out: list[Example]
    duplicates_dropped: list[int]  # draft ids dropped as exact or near duplicates


@dataclass(frozen=True)
class PreferenceSplit:
    train: list[PreferencePair]
    held_out: list[PreferencePair]  # whole prompts are held out: no prompt is on both sides


class NotEnoughPreferences(StudioError):
    """Too few pairwise picks for preference training (and a held-out share to judge it)."""

    def __init__(self, have: int, needed: int):
        self.have, self.needed = have, needed
        super().__init__(
            f"There {'is' if have == 1 else 'are'} {_count(have, 'usable pick')} between candidates; "
            f"preference training needs at least {needed}. Compare candidates and pick the best "
            f"{_count(needed - have, 'more time')}."
        )


class NotEnoughDrafts(StudioError):
    """Too few highly rated drafts to train on and still hold some out to judge the result."""

    def __init__(self, have: int, needed: int, *, min_stars: int = 4, duplicates: int = 0):
        self.have, self.needed = have, needed
        dropped = f" ({_count(duplicates, 'duplicate')} left out)" if duplicates else ""
        super().__init__(
            f"There {'is' if have == 1 else 'are'} {_count(have, 'usable draft')} rated "
            f"{min_stars} stars or higher{dropped}; training needs at least {needed}. "
            f"Rate at least {_count(needed - have, 'more draft')} {min_stars} stars or higher."
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- selecting ---------------------------------------------------------------------------------


def _example(draft: Draft, stars: int = 0) -> Example:
    return Example(draft_id=draft.id, context=draft.model_input, prompt=draft.prompt, completion=draft.text,
                   stars=stars, user=draft.user, template_id=draft.template_id,
                   created=draft.created_at.isoformat() if draft.created_at else "", ended=not draft.stopped)


def _usable(draft: Draft) -> bool:
    """An empty draft teaches nothing; the content filter keeps flagged drafts out."""
    return bool(draft.text.strip()) and not draft.flagged


def all_rated(session: Session) -> list[Example]:
    """Every usable rated draft, oldest first."""
    return [_example(draft, rating.stars) for draft, rating in list_rated_drafts(session) if _usable(draft)]


def preference_pairs(session: Session) -> list[PreferencePair]:
    """Every pick between two usable drafts, oldest first."""
    return [PreferencePair(_example(chosen), _example(rejected))
            for chosen, rejected in list_preferences(session) if _usable(chosen) and _usable(rejected)]


def rated_examples(session: Session, min_stars: int = 4) -> list[Example]:
    """The usable drafts rated min_stars or more, oldest first."""
    return [e for e in all_rated(session) if e.stars >= min_stars]


# -- deduplicating -----------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    """Word 3-grams for spaced text; character 3-grams for Chinese and Japanese, written without spaces."""
    if unspaced(text):
        units: Sequence[str] = "".join(text.split())
    else:
        units = text.split()
    if len(units) <= _SHINGLE:
        return frozenset([tuple(units)])
    return frozenset(tuple(units[i : i + _SHINGLE]) for i in range(len(units) - _SHINGLE + 1))


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def dedupe(examples: Iterable[Example], near_threshold: float = 0.85) -> tuple[list[Example], list[int]]:
    """Drop exact and near-duplicate completions, keeping the oldest of each group.

    Exact means equal after collapsing whitespace and case; near means a Jaccard similarity of
    shingles of at least near_threshold. Each draft is compared with every draft kept so far:
    quadratic, which is fine for the few thousand drafts a studio collects.
    """
    kept: list[Example] = []
    kept_texts: set[str] = set()
    kept_shingles: list[frozenset] = []
    dropped: list[int] = []
    for example in sorted(examples, key=lambda e: e.draft_id):
        text = _normalise(example.completion)
        shingles = _shingles(text)
        if text in kept_texts or any(_jaccard(shingles, s) >= near_threshold for s in kept_shingles):
            dropped.append(example.draft_id)
            continue
        kept.append(example)
        kept_texts.add(text)
        kept_shingles.append(shingles)
    return kept, dropped


# -- splitting ---------------------------------------------------------------------------------


def split(
    examples: Sequence[Example],
    held_out_fraction: float = 0.2,
    min_held_out: int = 2,
    min_train: int = 4,
    seed: int = 0,
) -> tuple[list[Example], list[Example]]:
    """(train, held_out): a shuffle that depends only on the seed and the drafts, not their order."""
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be between 0 and 1, not {held_out_fraction}.")
    needed = min_train + min_held_out
    if len(examples) < needed:
        raise NotEnoughDrafts(len(examples), needed)
    shuffled = sorted(examples, key=lambda e: e.draft_id)
    random.Random(seed).shuffle(shuffled)
    held = max(min_held_out, math.ceil(held_out_fraction * len(shuffled)))
    held = min(held, len(shuffled) - min_train)  # a large fraction must still leave min_train
    return shuffled[held:], shuffled[:held]


def build_split(
    session: Session,
    *,
    min_stars: int = 4,
    held_out_fraction: float = 0.2,
    min_held_out: int = 2,
    min_train: int = 4,
    seed: int = 0,
    near_threshold: float = 0.85,
    max_per_writer: int = 0,
) -> DatasetSplit:
    """The highly rated, deduplicated drafts split into train and held-out sets.

    max_per_writer (0 = no cap) keeps any one writer from steering the model: beyond it, a
    writer's best-rated, then newest, drafts are kept.
    """
    examples = rated_examples(session, min_stars)
    kept, dropped = dedupe(examples, near_threshold)
    if max_per_writer:
        kept = cap_per_writer(kept, max_per_writer, lambda e: e.user, lambda e: (e.stars, e.draft_id))
    try:
        train, held_out = split(kept, held_out_fraction, min_held_out, min_train, seed)
    except NotEnoughDrafts as exc:
        # Re-raised with what only this level knows: the star threshold and the duplicates.
        raise NotEnoughDrafts(exc.have, exc.needed, min_stars=min_stars, duplicates=len(dropped)) from None
    return DatasetSplit(train=train, held_out=held_out, duplicates_dropped=dropped)


def draw(key: str) -> float:
    """A fixed draw in [0, 1) for an item, from a hash of its key."""
    digest = hashlib.sha256(f"studio-held-out:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out(key: str, fraction: float) -> bool:
    """Whether an item is held out: a hash of its key decides, once, for every run to come.

    A held-out item never trains any version, and every version is judged on the same items, so
    neither the serving version nor a candidate is scored on what it learned from.
    """
    return draw(key) < fraction


@dataclass(frozen=True)
class RatedSplit:
    """Every usable rated draft, liked or not, on the side of the split its id decides."""

    train: list[Example]
    held_out: list[Example]
    duplicates_dropped: list[int]


def held_out_key(example: Example) -> str:
    """What decides whether a rated draft is held out: its id and the moment it was saved, so the
    draw is fixed for the draft's life but differs between studios (ids alone would hold out the
    same ids everywhere, and one unlucky draw would repeat in every copy of a benchmark)."""
    return f"draft:{example.draft_id}:{example.created}"


Side = tuple[Callable[[Example], bool], int]  # (which drafts, how many of them to hold out at least)


def build_rated_split(session: Session, *, held_out_fraction: float = 0.2, near_threshold: float = 0.85,
                      max_per_writer: int = 0, sides: Sequence[Side] = ()) -> RatedSplit:
    """All rated drafts, deduplicated and split: one some version trained or was judged on keeps its
    side; a new one is held out by its draw. Each of sides gets its minimum held out, topped up from
    its new drafts by lowest draw, at most half of them (a 25% draw of few liked drafts often holds
    out none, and the gate could not judge). The cap per writer trims only what trains."""
    trained, judged = assigned_drafts(session)
    kept, dropped = dedupe(all_rated(session), near_threshold)
    new = [e for e in kept if e.draft_id not in trained and e.draft_id not in judged]
    held_ids = {e.draft_id for e in kept if e.draft_id in judged}
    held_ids |= {e.draft_id for e in new if held_out(held_out_key(e), held_out_fraction)}
    for on_side, minimum in sides:
        fresh = sorted((e for e in new if on_side(e)), key=lambda e: draw(held_out_key(e)))
        room = min(minimum - sum(on_side(e) for e in kept if e.draft_id in held_ids),
                   len(fresh) // 2 - sum(e.draft_id in held_ids for e in fresh))
        held_ids.update([e.draft_id for e in fresh if e.draft_id not in held_ids][:max(0, room)])
    held = [e for e in kept if e.draft_id in held_ids]
    train = [e for e in kept if e.draft_id not in held_ids]
    if max_per_writer:
        train = cap_per_writer(train, max_per_writer, lambda e: e.user, lambda e: (e.stars, e.draft_id))
    return RatedSplit(train, held, dropped)


def cap_per_writer(items: list, cap: int, writer: Callable[[Any], str], rank: Callable[[Any], Any]) -> list:
    """At most `cap` items per writer, the highest ranked (ties: the later in the list), in the original order."""
    by_writer: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_writer.setdefault(writer(item), []).append(i)
    chosen = {i for group in by_writer.values()
              for i in sorted(group, key=lambda i: (rank(items[i]), i), reverse=True)[:cap]}
    return [item for i, item in enumerate(items) if i in chosen]


def build_preference_split(
    session: Session,
    *,
    held_out_fraction: float = 0.2,
    min_held_out: int = 2,
    min_pairs: int = 8,
    seed: int = 0,
    max_per_writer: int = 0,
) -> PreferenceSplit:
    """The writers' picks split into train and held-out pairs, whole prompts at a time.

    One pick among three candidates gives two pairs with the same prompt and chosen draft;
    keeping a prompt on one side stops the gate from scoring a draft the model trained on.
    max_per_writer (0 = no cap) keeps a writer's newest pairs.
    """
    pairs = preference_pairs(session)
    if max_per_writer:  # unranked: a writer's newest picks stay
        pairs = cap_per_writer(pairs, max_per_writer, lambda p: p.chosen.user, lambda p: 0)
    if len(pairs) < min_pairs:
        raise NotEnoughPreferences(len(pairs), min_pairs)
    by_prompt: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.chosen.context, []).append(pair)
    prompts = sorted(by_prompt)
    random.Random(seed).shuffle(prompts)
    wanted = max(min_held_out, math.ceil(held_out_fraction * len(pairs)))
    held_out: list[PreferencePair] = []
    for prompt in prompts[:-1]:  # the last prompt always stays for training
        if len(held_out) >= wanted:
            break
        held_out.extend(by_prompt[prompt])
    if not held_out:
        raise StudioError("Every pick so far answers the same prompt: preference training needs picks "
                          "for at least two prompts, one of them to judge the result.")
    held_ids = {id(p) for p in held_out}
    train = [p for p in pairs if id(p) not in held_ids]
    return PreferenceSplit(train=train, held_out=held_out)


# -- tokenizing --------------------------------------------------------------------------------


def tokenize_example(tokenizer: Any, example: Example, max_length: int = 512) -> dict[str, list[int]]:
    """input_ids, labels and attention_mask for causal-LM fine-tuning with loss on the completion only.

    The context (chat template already applied) is labelled -100; the completion and a final
    eos are labelled with their ids, so the model learns what to write and when to stop. A draft
    stopped or interrupted, or too long (cut from its end), gets no eos: its text did not end there. A context of max_length tokens or more keeps only its last max_length // 2
    tokens (the end holds the request and the assistant turn), leaving room for the completion.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, not {max_length}.")
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no eos token, so a completion could not be ended.")
    context = tokenizer(example.context, add_special_tokens=False).input_ids
    target = tokenizer(example.completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] * example.ended
    if len(context) >= max_length:
        context = context[-(max_length // 2) :]
    target = target[: max_length - len(context)]
    return {
        "input_ids": context + target,
        "labels": [IGNORE_INDEX] * len(context) + target,
        "attention_mask": [1] * (len(context) + len(target)),
    }
