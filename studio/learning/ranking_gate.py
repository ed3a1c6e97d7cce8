"""The ranking gate (method kto): does the candidate rank held-out drafts the way the writers did, better than the serving version?

Each version's implicit reward for a draft is how much likelier it makes the draft than the base
model does (summed log-likelihood of the draft, minus the base's): what preference training
raises for liked drafts and lowers for disliked ones. On held-out (liked, disliked) pairs of the
same template, and on held-out picks, a version's accuracy is the share of pairs whose liked
draft gets the higher reward (ties count half; the base itself ties every pair: 50%). The
candidate is promoted only when
  - there are enough held-out ratings to judge at all,
  - the 95% bootstrap interval of its accuracy minus the serving version's lies above the margin
    (drafts are resampled, not pairs, since one draft sits in many pairs), and
  - its perplexity on the held-out liked drafts is at most max_perplexity_increase above the
    serving version's: learning what writers like must not break how it writes.
A candidate trained on shuffled ratings ranks held-out pairs at chance, so its interval straddles
zero and it is rejected.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from studio.learning.dataset import Example, tokenize_example

RESAMPLES = 2000  # bootstrap resamples: enough for a steady 95% interval, a fraction of a second


@dataclass(frozen=True)
class HeldOut:
    """What the gate judges on: held-out rated drafts, and the pairs among them (ids: liked, disliked)."""

    drafts: list[Example]
    pairs: list[tuple[int, int]]
    clusters: list[list[tuple[int, int]]]  # pairs grouped for resampling: a template's drafts, or one pick
    liked: list[int]  # held-out liked drafts: the perplexity guard scores these


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
    """Each held-out draft's (summed log-likelihood, tokens) under one model, scored once."""
    import torch

    model.eval()
    with torch.inference_mode():
        return {e.draft_id: completion_logp(model, tokenizer, e, max_length) for e in drafts}


def accuracy(reward: dict[int, float], pairs: list[tuple[int, int]]) -> float:
    """Share of pairs whose liked draft gets the higher reward; ties count half."""
    if not pairs:
        return float("nan")
    return sum(1.0 if reward[a] > reward[b] else 0.5 if reward[a] == reward[b] else 0.0 for a, b in pairs) / len(pairs)


def _resample(clusters: list[list[tuple[int, int]]], rng: random.Random) -> list[tuple[int, int]]:
    """A bootstrap sample of pairs: within each cluster, its liked and its disliked drafts are drawn
    with replacement and paired again, so a draft that sits in many pairs counts as one draft."""
    sample = []
    for cluster in clusters:
        liked = sorted({a for a, _ in cluster})
        disliked = sorted({b for _, b in cluster})
        allowed = set(cluster)
        drawn_a = [rng.choice(liked) for _ in liked]
        drawn_b = [rng.choice(disliked) for _ in disliked]
        sample += [(a, b) for a in drawn_a for b in drawn_b if (a, b) in allowed]
    return sample


def difference_interval(candidate: dict[int, float], serving: dict[int, float], clusters: list[list[tuple[int, int]]],
                        seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% percentile bootstrap interval of (candidate accuracy - serving accuracy)."""
    rng = random.Random(seed)
    differences = []
    for _ in range(resamples):
        sample = _resample(clusters, rng)
        if sample:
            differences.append(accuracy(candidate, sample) - accuracy(serving, sample))
    differences.sort()
    if not differences:
        return float("nan"), float("nan")
    return differences[int(0.025 * (len(differences) - 1))], differences[int(0.975 * (len(differences) - 1))]


@dataclass
class Verdict:
    """The gate's figures and decision, as the version row keeps them."""

    decision: str  # promoted, rejected, or undecided (too few held-out ratings to judge)
    reason: str
    pairs: int
    liked: int
    disliked: int
    candidate_accuracy: float
    serving_accuracy: float
    low: float  # the 95% interval of candidate minus serving accuracy
    high: float
    margin: float
    candidate_perplexity: float
    serving_perplexity: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a figure that could not be computed is None (JSON has no NaN)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def perplexity(scores: dict[int, tuple[float, int]], ids: list[int]) -> float:
    tokens = sum(scores[i][1] for i in ids)
    return math.exp(-sum(scores[i][0] for i in ids) / tokens) if tokens else float("nan")


def judge(held: HeldOut, base: dict[int, tuple[float, int]], serving: dict[int, tuple[float, int]],
          candidate: dict[int, tuple[float, int]], *, margin: float, max_perplexity_increase: float,
          min_liked: int, min_disliked: int, seed: int = 0) -> Verdict:
    """Promote, reject, or say there is too little held out to decide; see the module's docstring."""
    def rewards(version):
        return {i: version[i][0] - base[i][0] for i in version}

    liked = sorted({a for a, _ in held.pairs})
    disliked = sorted({b for _, b in held.pairs})
    cand, serv = rewards(candidate), rewards(serving)
    figures = dict(pairs=len(held.pairs), liked=len(liked), disliked=len(disliked),
                   candidate_accuracy=accuracy(cand, held.pairs), serving_accuracy=accuracy(serv, held.pairs),
                   margin=margin, candidate_perplexity=perplexity(candidate, held.liked),
                   serving_perplexity=perplexity(serving, held.liked))
    if len(liked) < min_liked or len(disliked) < min_disliked:
        reason = (f"Not enough held-out ratings to judge: {len(liked)} liked and {len(disliked)} disliked drafts "
                  f"of the same template are held out, and the gate needs {min_liked} and {min_disliked}. "
                  f"Rate about {_more(len(liked), min_liked, len(disliked), min_disliked)} more drafts "
                  "(one in five is held out), or serve this version by hand.")
        return Verdict("undecided", reason, low=float("nan"), high=float("nan"), **figures)
    low, high = difference_interval(cand, serv, held.clusters, seed)
    worse = figures["candidate_perplexity"] / figures["serving_perplexity"] - 1
    if low <= margin:
        reason = (f"It does not rank held-out drafts as writers did better than the serving version by more "
                  f"than {margin:.0%}: {figures['candidate_accuracy']:.0%} against "
                  f"{figures['serving_accuracy']:.0%}, difference 95% interval {low:+.0%} to {high:+.0%}.")
        return Verdict("rejected", reason, low=low, high=high, **figures)
    if worse > max_perplexity_increase:
        reason = (f"It ranks held-out drafts better, but writes worse: perplexity on held-out liked drafts "
                  f"{worse:+.0%} (at most {max_perplexity_increase:+.0%}).")
        return Verdict("rejected", reason, low=low, high=high, **figures)
    reason = (f"It ranks {figures['candidate_accuracy']:.0%} of held-out pairs as writers did, against "
              f"{figures['serving_accuracy']:.0%} for the serving version (difference 95% interval "
              f"{low:+.0%} to {high:+.0%}).")
    return Verdict("promoted", reason, low=low, high=high, **figures)


def _more(liked: int, min_liked: int, disliked: int, min_disliked: int, held_out_share: float = 0.2) -> int:
    return max(1, math.ceil(max(min_liked - liked, min_disliked - disliked, 0) / held_out_share))


def build_held_out(examples: list[Example], liked, disliked) -> HeldOut:
    """The gate's pairs: every held-out liked draft against every held-out disliked draft of the same
    template (what writers preferred, like for like); each template's drafts are resampled together."""
    clusters = []
    for template in sorted({e.template_id for e in examples}):
        group = [e for e in examples if e.template_id == template]
        cluster = [(a.draft_id, b.draft_id) for a in group if liked(a) for b in group if disliked(b)]
        if cluster:
            clusters.append(cluster)
    return HeldOut(drafts=[e for e in examples if liked(e) or disliked(e)],
                   pairs=[pair for cluster in clusters for pair in cluster], clusters=clusters,
                   liked=[e.draft_id for e in examples if liked(e)])
