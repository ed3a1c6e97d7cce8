"""How likely a model finds drafts: each draft's summed log-likelihood given its exact context."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from studio.errors import StudioError
from studio.learning.dataset import IGNORE_INDEX, Example, PreferencePair, tokenize_example


SCORE_BATCH_TOKENS = 2048  # padded tokens per forward pass: larger passes run faster on a CPU, logits stay small


def score(model, tokenizer, drafts: list[Example], max_length: int, *,
          share_contexts: bool = True) -> dict[int, tuple[float, int]]:
    """Each draft's (summed log-likelihood, tokens) under one model, scored once.

    Drafts that share a context (a run's drafts of one prompt) read it once: the context is run
    alone, and its drafts continue from its key/value cache together, which halves a run's scoring
    of its own samples. Other drafts of similar length are scored together, right-padded (a real
    token's position and what it attends to are those it has alone), up to SCORE_BATCH_TOKENS
    padded tokens a pass."""
    import torch

    model.eval()
    items = [(e.draft_id, tokenize_example(tokenizer, e, max_length)) for e in drafts]
    by_context: dict[tuple[int, ...], list[tuple[int, dict[str, list[int]]]]] = {}
    for draft_id, item in items:
        by_context.setdefault(tuple(item["input_ids"][:_context_length(item)]), []).append((draft_id, item))
    shared = {context: group for context, group in by_context.items() if share_contexts and context and len(group) > 1}
    alone = [pair for context, group in by_context.items() if context not in shared for pair in group]
    scores: dict[int, tuple[float, int]] = {}
    with torch.inference_mode():
        scores.update(_score_whole(model, tokenizer, sorted(alone, key=lambda pair: len(pair[1]["input_ids"]))))
        for context, group in shared.items():
            scores.update(_score_after_context(model, context, group))
    return scores


def _context_length(item: dict[str, list[int]]) -> int:
    return next((i for i, label in enumerate(item["labels"]) if label != IGNORE_INDEX), len(item["labels"]))


def _score_whole(model, tokenizer, items: list[tuple[int, dict[str, list[int]]]]) -> dict[int, tuple[float, int]]:
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores: dict[int, tuple[float, int]] = {}
    for batch in _batches(items):
        length = max(len(item["input_ids"]) for _, item in batch)

        def padded(key: str, value: int) -> Any:
            return torch.tensor([item[key] + [value] * (length - len(item[key])) for _, item in batch], device=device)

        logits = model(input_ids=padded("input_ids", pad), attention_mask=padded("attention_mask", 0)).logits
        scores.update(_summed(batch, logits[:, :-1], padded("labels", IGNORE_INDEX)[:, 1:]))
    return scores


def _score_after_context(model, context: tuple[int, ...],
                         group: list[tuple[int, dict[str, list[int]]]]) -> dict[int, tuple[float, int]]:
    """Drafts of one context: the context once, then the drafts (right-padded) from its cache."""
    import copy

    import torch
    from transformers import DynamicCache

    from studio.serving.batching import cache_argument

    device, argument = next(model.parameters()).device, cache_argument(model)
    start = len(context)
    cache = DynamicCache(config=model.config)
    last = model(input_ids=torch.tensor([context], device=device), use_cache=True, logits_to_keep=1,
                 **{argument: cache}).logits[:, -1:]  # predicts each draft's first token
    items = sorted(((i, item["input_ids"][start:]) for i, item in group), key=lambda pair: len(pair[1]))
    scores = {i: (0.0, 0) for i, ids in items if not ids}  # nothing to score (an empty draft, cut)
    for batch in _batches([(i, {"input_ids": ids}) for i, ids in items if ids]):
        rows, length = len(batch), max(len(item["input_ids"]) for _, item in batch)
        targets = torch.tensor([item["input_ids"] + [IGNORE_INDEX] * (length - len(item["input_ids"]))
                                for _, item in batch], device=device)
        rows_cache = copy.deepcopy(cache)
        for layer in rows_cache.layers:
            layer.keys, layer.values = layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1)
        mask = torch.cat([torch.ones(rows, start, dtype=torch.long, device=device),
                          (targets != IGNORE_INDEX).long()], dim=1)
        positions = torch.arange(start, start + length, device=device).expand(rows, -1)
        logits = model(input_ids=targets.clamp(min=0), attention_mask=mask, position_ids=positions,
                       use_cache=True, **{argument: rows_cache}).logits
        scores.update(_summed(batch, torch.cat([last.expand(rows, -1, -1), logits[:, :-1]], dim=1), targets))
    return scores


def _summed(batch, logits, targets) -> dict[int, tuple[float, int]]:
    """Each row's summed log-likelihood of its targets (IGNORE_INDEX: not scored) and their count."""
    import torch

    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                            reduction="none").sum(dim=1)
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return {draft_id: (-float(n), int(c)) for (draft_id, _), n, c in zip(batch, nll, counts)}


def _batches(items: list[tuple[int, dict[str, list[int]]]]) -> list[list[tuple[int, dict[str, list[int]]]]]:
    """Items (sorted by length) cut into groups whose padded size stays within SCORE_BATCH_TOKENS."""
    batches: list[list[tuple[int, dict[str, list[int]]]]] = []
    for item in items:
        if batches and (len(batches[-1]) + 1) * len(item[1]["input_ids"]) <= SCORE_BATCH_TOKENS:
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def perplexity(scores: dict[int, tuple[float, int]], ids: list[int]) -> float:
    tokens = sum(scores[i][1] for i in ids)
    return math.exp(-sum(scores[i][0] for i in ids) / tokens) if tokens else float("nan")


@dataclass
class HeldOutScores:
    """One version's figures on a run's held-out data."""

    nll: float  # mean negative log-likelihood per target token over the gate's drafts
    tokens: int
    pair_accuracy: float  # share of held-out picks where the chosen draft is likelier per token
    pair_margin: float  # mean margin (nats per token) by which it is


def score_held_out(model, tokenizer, examples: list[Example], pairs: list[PreferencePair],
                   max_length: int) -> HeldOutScores:
    """Score the gate's drafts and the held-out picks, each distinct draft once."""
    drafts = {e.draft_id: e for e in examples}
    for pair in pairs:  # a pick's chosen draft is usually one of the gate's drafts too
        drafts.setdefault(pair.chosen.draft_id, pair.chosen)
        drafts.setdefault(pair.rejected.draft_id, pair.rejected)
    scored = {i: (-logp, count) for i, (logp, count) in score(model, tokenizer, list(drafts.values()),
                                                                 max_length).items()}
    total = sum(scored[e.draft_id][0] for e in examples)
    tokens = sum(scored[e.draft_id][1] for e in examples)
    if tokens == 0:
        raise StudioError("The held-out drafts have no text to score.")

    def per_token(example: Example) -> float:
        nll, count = scored[example.draft_id]
        return nll / max(count, 1)

    margins = [per_token(p.rejected) - per_token(p.chosen) for p in pairs]
    accuracy = sum(m > 0 for m in margins) / len(margins) if margins else float("nan")
    margin = sum(margins) / len(margins) if margins else float("nan")
    return HeldOutScores(total / tokens, tokens, accuracy, margin)
