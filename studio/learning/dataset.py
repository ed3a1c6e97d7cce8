"""Rated drafts and picks as training data: select, deduplicate and tokenize them.

The writers' ratings are the signal: drafts rated min_stars or more are what they like, drafts
rated low what they do not. Near-identical drafts are dropped so that one favourite does not
dominate training and cannot sit on both sides of the train / held-out split (splits.py decides
the sides). exports.py writes the same data as files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy.orm import Session

from storage.models import Draft
from storage.preferences import list_preferences
from storage.repository import list_rated_drafts
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
    ended: bool = True  # the model ended it (end-of-text): not stopped, interrupted, nor cut at the token limit


@dataclass(frozen=True)
class PreferencePair:
    """A writer's pick: chosen over rejected, two drafts of the same prompt."""

    chosen: Example
    rejected: Example


# -- selecting ---------------------------------------------------------------------------------


def _example(draft: Draft, stars: int = 0) -> Example:
    return Example(draft_id=draft.id, context=draft.model_input, prompt=draft.prompt, completion=draft.text,
                   stars=stars, user=draft.user, template_id=draft.template_id,
                   created=draft.created_at.isoformat() if draft.created_at else "", ended=draft.ended)


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


# -- tokenizing --------------------------------------------------------------------------------


def tokenize_example(tokenizer: Any, example: Example, max_length: int = 512) -> dict[str, list[int]]:
    """input_ids, labels and attention_mask for causal-LM fine-tuning with loss on the completion only.

    The context (chat template already applied) is labelled -100; the completion and a final
    eos are labelled with their ids, so the model learns what to write and when to stop. A draft
    stopped or interrupted, or too long (cut from its end), gets no eos: its text did not end there.
    A context of max_length tokens or more keeps only its last max_length // 2 tokens (the end holds
    the request and the assistant turn), leaving room for the completion.
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
