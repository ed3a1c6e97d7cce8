"""The perplexity gate (methods sft and dpo): a candidate against the serving version on held-out liked drafts and picks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from studio.errors import StudioError
from studio.learning.dataset import Example, PreferencePair
from studio.learning.ranking_gate import score


@dataclass
class GateResult:
    active_nll: float
    candidate_nll: float
    held_out_tokens: int
    margin: float

    @property
    def active_perplexity(self) -> float:
        return math.exp(self.active_nll)

    @property
    def candidate_perplexity(self) -> float:
        return math.exp(self.candidate_nll)

    @property
    def promote(self) -> bool:
        return self.candidate_perplexity <= self.active_perplexity * (1 - self.margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "active_nll": self.active_nll, "candidate_nll": self.candidate_nll,
            "active_perplexity": self.active_perplexity, "candidate_perplexity": self.candidate_perplexity,
            "held_out_tokens": self.held_out_tokens, "margin": self.margin,
            "decision": "promoted" if self.promote else "rejected",
        }


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


def gate_words(gate: dict[str, Any]) -> str:
    """The gate's figures in a line: the ranking gate's reason, or the perplexity gate's figures."""
    if "reason" in gate:
        return gate["reason"]
    return f"held-out perplexity {gate['active_perplexity']:.2f} -> {gate['candidate_perplexity']:.2f}"
