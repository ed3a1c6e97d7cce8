"""How likely a model finds drafts: each draft's summed log-likelihood given its exact context."""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.errors import StudioError
from studio.learning.dataset import Example, PreferencePair, tokenize_example


def completion_logp(model, tokenizer, example: Example, max_length: int) -> tuple[float, int]:
    """Summed log-likelihood of the draft given its exact context, and its token count."""
    import torch

    device = next(model.parameters()).device
    item = tokenize_example(tokenizer, example, max_length)
    input_ids = torch.tensor([item["input_ids"]], device=device)
    labels = torch.tensor([item["labels"]], device=device)
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    targets = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    return -float(nll), int((targets != -100).sum())


def score(model, tokenizer, drafts: list[Example], max_length: int) -> dict[int, tuple[float, int]]:
    """Each draft's (summed log-likelihood, tokens) under one model, scored once."""
    import torch

    model.eval()
    with torch.inference_mode():
        return {e.draft_id: completion_logp(model, tokenizer, e, max_length) for e in drafts}


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
