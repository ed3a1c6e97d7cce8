"""The gate for runs on rated drafts (kto): has the candidate learned to write what the writers like?

Writers rate few drafts, and what they like may sit in a handful of words: a version that learned
it makes the held-out liked drafts only slightly likelier than the disliked ones (its implicit
reward, measured and shown, ranks them barely better than chance). So the gate asks a sharper
question, in three steps, each of which a candidate trained on shuffled ratings fails:

1. A judge (judge.py) is learned from the ratings the run trained on and must rank the held-out
   ratings, which it never saw, as the writers did: one-sided permutation p <= alpha. If not, the
   ratings show no consistent preference yet, and nothing is promoted.
2. The candidate and the serving version each write `samples` drafts of held-out prompts (the
   newest), in pairs: the same prompt and seed for both. The judge must expect writers to like
   more of the candidate's drafts (log-odds above 0) than of the serving version's, by more than
   margin, with the exact sign test on the pairs where it likes one side's draft only at
   p <= alpha. A 95% bootstrap interval of the difference is shown with it.
   Why a count of liked drafts, not how often the judge ranks one side's draft above the other's:
   the judge also weights words that only happened to come with liked drafts, and between two
   drafts without the liked trait those words decide the ranking: a candidate that wrote more of
   them, and the trait no more often, ranked higher than one that wrote the trait twice as often
   (README, The judge gate, for the figures).
3. Guards against damage, since a bag-of-words judge also likes broken text full of liked words:
   the candidate's samples are as varied (distinct-2 at least min_diversity of the base model's,
   chained through the versions: the candidate's against the serving version's, times the
   serving version's against its parent's and so on, so rounds cannot each lose a little; no
   collapse into one text) and as fluent (the base model's perplexity of them at
   most max_sample_perplexity_increase above that of the serving version's samples: no word
   salad) as the serving version's, and its perplexity on the held-out liked drafts has not risen
   more than max_perplexity_increase.

With fewer than min_liked liked or min_disliked disliked drafts held out it says how many more to
rate and does not decide; an admin can still serve the version by hand.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from studio.learning.dataset import Example, tokenize_example
from studio.learning.ranking import accuracy, paired_share_difference, permutation_p_value
from studio.text import distinct_2


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


@dataclass
class Verdict:
    """The gate's figures and decision, as the version row keeps them."""

    decision: str  # promoted, rejected, or undecided (too few held-out ratings to judge)
    reason: str
    pairs: int  # held-out (liked, disliked) pairs of one template
    liked: int
    disliked: int
    judge_accuracy: float  # the judge on the held-out pairs, and its one-sided p-value
    judge_p: float
    samples: int  # drafts written by each version for the judge to compare
    candidate_liked: float  # share of the candidate's samples the judge expects writers to like
    serving_liked: float  # and of the serving version's (same prompts and seeds)
    low: float  # 95% bootstrap interval of candidate_liked - serving_liked
    high: float
    p_value: float
    candidate_distinct_2: float
    serving_distinct_2: float
    diversity_vs_base: float  # the candidate's distinct-2 against the base's, chained through its ancestors
    candidate_accuracy: float  # the implicit reward's ranking of held-out pairs (shown, not decisive)
    serving_accuracy: float
    candidate_perplexity: float
    serving_perplexity: float
    candidate_fluency: float  # the base model's perplexity of each version's samples (lower reads more naturally)
    serving_fluency: float
    alpha: float
    margin: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a figure that could not be computed is None (JSON has no NaN)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def perplexity(scores: dict[int, tuple[float, int]], ids: list[int]) -> float:
    tokens = sum(scores[i][1] for i in ids)
    return math.exp(-sum(scores[i][0] for i in ids) / tokens) if tokens else float("nan")


@dataclass(frozen=True)
class GateOptions:
    alpha: float
    margin: float
    min_diversity: float
    max_perplexity_increase: float
    max_sample_perplexity_increase: float
    min_liked: int
    min_disliked: int
    held_out_share: float
    seed: int = 0


@dataclass
class Samples:
    """Drafts each version wrote for the gate, by prompt (one list per prompt, same order in both),
    and the base model's perplexity of each side's drafts."""

    candidate: list[list[str]]
    serving: list[list[str]]
    candidate_fluency: float
    serving_fluency: float

    def flat(self) -> tuple[list[str], list[str]]:
        return [t for group in self.candidate for t in group], [t for group in self.serving for t in group]


def _sides(held: HeldOut) -> tuple[list[int], list[int]]:
    """The held-out liked and disliked drafts that have a counterpart of the same template."""
    return sorted({a for a, _ in held.pairs}), sorted({b for _, b in held.pairs})


def smallest_p_value(held: HeldOut) -> float:
    """The p-value of a perfect ranking of the held-out pairs: one arrangement of the labels in
    C(n, k) per template. Above alpha, no judge could be trusted on them, however good."""
    p = 1.0
    for cluster in held.clusters:
        liked, disliked = {a for a, _ in cluster}, {b for _, b in cluster}
        p /= math.comb(len(liked) + len(disliked), len(liked))
    return p


def enough_held_out(held: HeldOut, options: GateOptions) -> bool:
    liked, disliked = _sides(held)
    return (len(liked) >= options.min_liked and len(disliked) >= options.min_disliked
            and smallest_p_value(held) <= options.alpha)


def judge_trusted(held: HeldOut, judge_scores: dict[int, float], options: GateOptions) -> bool:
    """Step 1: the judge ranks the held-out ratings as the writers did, beyond chance."""
    return bool(held.pairs) and permutation_p_value(judge_scores, held.clusters, options.seed) <= options.alpha


def _liked_shares(judge_score, samples: Samples, seed: int) -> tuple[float, float, float, float, float]:
    """Which of each version's samples the judge expects writers to like, compared in pairs (the
    same prompt and seed): both shares, the difference's interval, and the sign test's p."""
    candidate, serving = samples.flat()
    liked = [score > 0 for score in judge_score(candidate + serving)]
    return paired_share_difference(liked[:len(candidate)], liked[len(candidate):], seed)


def decide(held: HeldOut, base: dict[int, tuple[float, int]], serving: dict[int, tuple[float, int]],
           candidate: dict[int, tuple[float, int]], judge_scores: dict[int, float], judge_score,
           samples: Samples | None, options: GateOptions, serving_diversity: float = 1.0) -> Verdict:
    """Promote, reject, or say there is too little held out to decide; see the module's docstring.
    judge_scores: the judge on the held-out drafts; judge_score(texts): the judge on any texts;
    samples: None when the judge was not trusted (step 1), so none were written;
    serving_diversity: the serving version's diversity_vs_base (1 for the base itself)."""
    liked, disliked = _sides(held)
    cand_texts, serv_texts = samples.flat() if samples else ([], [])
    nan = float("nan")
    cand_d2, serv_d2 = (distinct_2(cand_texts), distinct_2(serv_texts)) if cand_texts and serv_texts else (nan, nan)
    figures = dict(
        pairs=len(held.pairs), liked=len(liked), disliked=len(disliked),
        judge_accuracy=accuracy(judge_scores, held.pairs),
        judge_p=permutation_p_value(judge_scores, held.clusters, options.seed) if held.pairs else nan,
        samples=len(cand_texts), candidate_liked=nan, serving_liked=nan, low=nan, high=nan, p_value=nan,
        candidate_distinct_2=cand_d2, serving_distinct_2=serv_d2,
        diversity_vs_base=cand_d2 / serv_d2 * serving_diversity if serv_d2 else nan,
        candidate_accuracy=accuracy({i: candidate[i][0] - base[i][0] for i in candidate}, held.pairs),
        serving_accuracy=accuracy({i: serving[i][0] - base[i][0] for i in serving}, held.pairs),
        candidate_perplexity=perplexity(candidate, held.liked), serving_perplexity=perplexity(serving, held.liked),
        candidate_fluency=samples.candidate_fluency if samples else nan,
        serving_fluency=samples.serving_fluency if samples else nan, alpha=options.alpha, margin=options.margin)
    if not enough_held_out(held, options):
        more = _more(len(liked), options.min_liked, len(disliked), options.min_disliked, options.held_out_share)
        all_liked = len(held.liked)
        return Verdict("undecided", (
            f"Not enough held-out ratings to judge: {all_liked} liked and {len(held.drafts) - all_liked} disliked "
            f"drafts are held out ({len(liked)} and {len(disliked)} with a counterpart of the same template), and "
            f"the gate needs at least {options.min_liked} and {options.min_disliked}, and enough that a perfect "
            f"ranking of them would be convincing (p <= {options.alpha:g}). "
            f"Rate about {more} more drafts ({options.held_out_share:.0%} are held out), or serve this version by "
            "hand."), **figures)
    if samples is None or figures["judge_p"] > options.alpha:
        return Verdict("rejected", (
            f"The held-out ratings do not yet agree with the rest: a judge learned from the ratings trained on "
            f"ranks {figures['judge_accuracy']:.0%} of {len(held.pairs)} held-out pairs as the writers did "
            f"(p = {figures['judge_p']:.3f}, needs <= {options.alpha:g}), so there is no consistent preference to "
            "check the candidate against. Rate more drafts."), **figures)
    (figures["candidate_liked"], figures["serving_liked"], figures["low"], figures["high"],
     figures["p_value"]) = _liked_shares(judge_score, samples, options.seed)
    return _verdict_on_samples(figures, options)


def _verdict_on_samples(figures: dict[str, Any], options: GateOptions) -> Verdict:
    verdict = functools.partial(Verdict, **figures)
    prefers = (f"a judge learned from the ratings (it ranks {figures['judge_accuracy']:.0%} of held-out pairs as the "
               f"writers did) expects writers to like {figures['candidate_liked']:.0%} of its drafts against "
               f"{figures['serving_liked']:.0%} of the serving version's, {figures['samples']} drafts each of the "
               f"same prompts and seeds (difference {figures['candidate_liked'] - figures['serving_liked']:+.0%}, "
               f"95% interval {figures['low']:+.0%} to {figures['high']:+.0%}; p = {figures['p_value']:.3f})")
    if figures["p_value"] > options.alpha or figures["candidate_liked"] - figures["serving_liked"] <= options.margin:
        return verdict("rejected", f"Not shown to write what the writers like more often than the serving version: "
                                   f"{prefers}; promotion needs p <= {options.alpha:g} and a difference above "
                                   f"{options.margin:+.0%}.")
    if figures["diversity_vs_base"] < options.min_diversity:
        return verdict("rejected", f"It writes what the writers like, but repeats itself: distinct-2 of its drafts "
                                   f"{figures['candidate_distinct_2']:.2f} against {figures['serving_distinct_2']:.2f} "
                                   f"for the serving version's, {figures['diversity_vs_base']:.0%} of the base "
                                   f"model's variety (at least {options.min_diversity:.0%}).")
    stranger = figures["candidate_fluency"] / figures["serving_fluency"] - 1
    if stranger > options.max_sample_perplexity_increase:
        return verdict("rejected", f"It writes what the writers like, but less naturally: the base model's perplexity "
                                   f"of its drafts is {figures['candidate_fluency']:.1f} against "
                                   f"{figures['serving_fluency']:.1f} for the serving version's ({stranger:+.0%}, at "
                                   f"most {options.max_sample_perplexity_increase:+.0%}).")
    worse = figures["candidate_perplexity"] / figures["serving_perplexity"] - 1
    if worse > options.max_perplexity_increase:
        return verdict("rejected", f"It writes what the writers like, but its perplexity on held-out liked drafts rose "
                                   f"{worse:+.0%} (at most {options.max_perplexity_increase:+.0%}).")
    return verdict("promoted", f"Promoted: {prefers}.")


def _more(liked: int, min_liked: int, disliked: int, min_disliked: int, held_out_share: float) -> int:
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
