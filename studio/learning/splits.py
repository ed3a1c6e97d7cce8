"""Which rated drafts and picks train, and which are held out to judge a version: decided once
for each draft, the same way for every method, and kept for good.

A draft some version trained on stays on the training side, one some version was judged on stays
held out (registry.assigned_drafts), whichever method trains next: an SFT run never trains on a
draft a KTO gate was judged on, nor the other way round. A new draft is held out by a fixed draw
from a hash of its id and save time; a new pick is held out with every other pick of its prompt
(the draw of the prompt), so no prompt sits on both sides. Each side a gate needs (liked drafts,
disliked drafts, picks) gets its minimum held out, topped up from new items by lowest draw, never
more than half of them. The cap per writer trims only what trains, and keeps a writer's liked and
disliked drafts in the proportion that writer rated them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from sqlalchemy.orm import Session

from storage.registry import assigned_drafts
from studio.errors import StudioError
from studio.learning.dataset import Example, PreferencePair, all_rated, dedupe, preference_pairs


@dataclass(frozen=True)
class DatasetSplit:
    train: list[Example]
    held_out: list[Example]
    duplicates_dropped: list[int]  # draft ids dropped as exact or near duplicates


@dataclass(frozen=True)
class PreferenceSplit:
    train: list[PreferencePair]
    held_out: list[PreferencePair]  # whole prompts are held out: no prompt is on both sides

    @property
    def held_out_draft_ids(self) -> list[int]:
        """Both drafts of every held-out pick: the gate scores both, so neither may ever train."""
        return sorted({d for p in self.held_out for d in (p.chosen.draft_id, p.rejected.draft_id)})


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


# -- the draw ------------------------------------------------------------------------------------


def draw(key: str) -> float:
    """A fixed draw in [0, 1) for an item, from a hash of its key."""
    digest = hashlib.sha256(f"studio-held-out:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out(key: str, fraction: float) -> bool:
    """Whether a new item is held out: a hash of its key decides, once, for every run to come."""
    return draw(key) < fraction


def held_out_key(example: Example) -> str:
    """What decides whether a rated draft is held out: its id and the moment it was saved, so the
    draw is fixed for the draft's life but differs between studios (ids alone would hold out the
    same ids everywhere, and one unlucky draw would repeat in every copy of a benchmark)."""
    return f"draft:{example.draft_id}:{example.created}"


def _top_up(held: set, new: list, key: Callable[[Any], str], on_side: Callable[[Any], bool], minimum: int,
            held_already: int) -> None:
    """Hold out new items on one side, lowest draw first, until `minimum` are held (counting
    held_already) or half of that side's new items are."""
    fresh = sorted((item for item in new if on_side(item)), key=lambda item: draw(key(item)))
    room = min(minimum - held_already, len(fresh) // 2 - sum(key(item) in held for item in fresh))
    held.update([key(item) for item in fresh if key(item) not in held][:max(0, room)])


# -- rated drafts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RatedSplit:
    """Every usable rated draft, liked or not, on its side of the split."""

    train: list[Example]
    held_out: list[Example]
    duplicates_dropped: list[int]
    new: frozenset[int] = frozenset()  # drafts no version trained or was judged on: their side is not fixed yet


Side = tuple[Callable[[Example], bool], int]  # (which drafts, how many of them to hold out at least)


def build_rated_split(session: Session, *, held_out_fraction: float = 0.2, near_threshold: float = 0.85,
                      max_per_writer: int = 0, sides: Sequence[Side] = ()) -> RatedSplit:
    """All rated drafts, deduplicated and split (see the module's docstring)."""
    trained, judged = assigned_drafts(session)
    kept, dropped = dedupe(all_rated(session), near_threshold)
    new = [e for e in kept if e.draft_id not in trained and e.draft_id not in judged]
    held = {held_out_key(e) for e in kept if e.draft_id in judged}
    held |= {held_out_key(e) for e in new if held_out(held_out_key(e), held_out_fraction)}
    for on_side, minimum in sides:
        _top_up(held, new, held_out_key, on_side, minimum, sum(on_side(e) and held_out_key(e) in held for e in kept))
    def side(e: Example) -> int:
        return next((n for n, (on_side, _) in enumerate(sides) if on_side(e)), -1)

    # Drafts on no side (a middling rating, when sides are given) teach nothing: they do not take a
    # writer's places under the cap.
    train = [e for e in kept if held_out_key(e) not in held and (not sides or side(e) >= 0)]
    if max_per_writer:
        train = cap_in_proportion(train, max_per_writer, lambda e: e.user, side)
    return RatedSplit(train, [e for e in kept if held_out_key(e) in held], dropped, frozenset(e.draft_id for e in new))


def cap_in_proportion(items: list, cap: int, writer: Callable[[Any], str], side: Callable[[Any], Hashable]) -> list:
    """At most `cap` items per writer, each side in the share the writer's items have (largest
    remainders first), the newest of each side (the later in the list); the original order kept.
    A writer with 100 liked and 230 disliked drafts, capped at 100, keeps 30 liked and 70 disliked,
    not 100 liked and none to contrast them with."""
    by_writer: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_writer.setdefault(writer(item), []).append(i)
    chosen: set[int] = set()
    for group in by_writer.values():
        if len(group) <= cap:
            chosen.update(group)
            continue
        by_side: dict[Hashable, list[int]] = {}
        for i in group:
            by_side.setdefault(side(items[i]), []).append(i)
        shares = {s: cap * len(members) / len(group) for s, members in by_side.items()}
        quota = {s: math.floor(share) for s, share in shares.items()}
        for s in sorted(shares, key=lambda s: shares[s] - quota[s], reverse=True)[:cap - sum(quota.values())]:
            quota[s] += 1
        for s, members in by_side.items():
            chosen.update(members[len(members) - quota[s]:] if quota[s] else [])
    return [item for i, item in enumerate(items) if i in chosen]


def lend_held_out(train: list[Example], held: list[Example], new: frozenset[int], on_side: Callable[[Example], bool],
                  min_train: int, min_held: int) -> tuple[list[Example], list[Example]]:
    """A new draft of the side drawn to be held out may train instead while training has too few of
    that side: it has no side yet (nothing was judged on it), and the one it gets now is kept; at
    least min_held of the side stay held out."""
    train, held = list(train), list(held)
    movable = sorted((e for e in held if e.draft_id in new and on_side(e)), key=lambda e: draw(held_out_key(e)),
                     reverse=True)
    while sum(map(on_side, train)) < min_train and movable and sum(map(on_side, held)) > min_held:
        moved = movable.pop(0)
        held.remove(moved)
        train.append(moved)
    return train, held


def build_split(session: Session, *, min_stars: int = 4, held_out_fraction: float = 0.2, min_held_out: int = 2,
                min_train: int = 4, near_threshold: float = 0.85, max_per_writer: int = 0) -> DatasetSplit:
    """The liked drafts (rated min_stars or more) on their sides of the one split: what a run on liked
    drafts alone trains on, and judges with; past max_per_writer, a writer's newest. NotEnoughDrafts
    when either side is too small."""
    def liked(e: Example) -> bool:
        return e.stars >= min_stars

    split = build_rated_split(session, held_out_fraction=held_out_fraction, near_threshold=near_threshold,
                              max_per_writer=max_per_writer, sides=((liked, min_held_out),))
    train, held = lend_held_out(split.train, [e for e in split.held_out if liked(e)], split.new, liked, min_train,
                                min_held_out)
    if len(train) < min_train or len(held) < min_held_out:
        have = len(train) + len(held)
        raise NotEnoughDrafts(have, max(min_train + min_held_out, len(held) + min_train), min_stars=min_stars,
                              duplicates=len(split.duplicates_dropped))
    return DatasetSplit(train=train, held_out=held, duplicates_dropped=split.duplicates_dropped)


# -- picks -----------------------------------------------------------------------------------


def build_preference_split(session: Session, *, held_out_fraction: float = 0.2, min_held_out: int = 2,
                           min_pairs: int = 8, max_per_writer: int = 0) -> PreferenceSplit:
    """The writers' picks split into train and held-out pairs, whole prompts at a time (one pick among
    three candidates gives two pairs with the same prompt and chosen draft). A prompt with a draft
    some version was judged on stays held out, one with a draft some version trained on stays on the
    training side; a new one is held out by its draw. max_per_writer (0 = no cap) keeps a writer's
    newest pairs."""
    pairs = preference_pairs(session)
    if max_per_writer:  # one side only: a writer's newest picks stay
        pairs = cap_in_proportion(pairs, max_per_writer, lambda p: p.chosen.user, lambda p: 0)
    if len(pairs) < min_pairs:
        raise NotEnoughPreferences(len(pairs), min_pairs)
    trained, judged = assigned_drafts(session)
    by_prompt: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.chosen.context, []).append(pair)

    def key(prompt: str) -> str:  # the prompt and its first pick: fixed, and different between studios
        first = by_prompt[prompt][0].chosen
        return f"prompt:{first.draft_id}:{first.created}"

    def drafts(prompt: str) -> set[int]:
        return {d for p in by_prompt[prompt] for d in (p.chosen.draft_id, p.rejected.draft_id)}

    held = {key(prompt) for prompt in by_prompt if drafts(prompt) & judged}
    new = [prompt for prompt in by_prompt if not drafts(prompt) & (judged | trained)]
    held |= {key(prompt) for prompt in new if held_out(key(prompt), held_out_fraction)}
    held_pairs = sum(len(by_prompt[prompt]) for prompt in by_prompt if key(prompt) in held)
    if held_pairs < min_held_out:
        needed = sorted((prompt for prompt in new if key(prompt) not in held), key=lambda prompt: draw(key(prompt)))
        for prompt in needed[:max(0, len(by_prompt) - len(held) - 1)]:  # one prompt always stays to train on
            if held_pairs >= min_held_out:
                break
            held.add(key(prompt))
            held_pairs += len(by_prompt[prompt])
    if all(key(prompt) in held for prompt in by_prompt) and any(key(prompt) in held for prompt in new):
        held.discard(key(max((prompt for prompt in new if key(prompt) in held), key=lambda prompt: draw(key(prompt)))))
    train = [p for prompt in by_prompt if key(prompt) not in held for p in by_prompt[prompt]]
    held_out_pairs = [p for prompt in by_prompt if key(prompt) in held for p in by_prompt[prompt]]
    if not held_out_pairs or not train:
        raise StudioError("Every pick so far answers the same prompt: preference training needs picks "
                          "for at least two prompts, one of them to judge the result.")
    return PreferenceSplit(train=train, held_out=held_out_pairs)
