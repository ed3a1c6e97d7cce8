"""The gate: has the candidate learned to write what the writers like? One verdict for every method.

Writers rate few drafts, and what they like may sit in a handful of words: a version that learned
it makes the held-out liked drafts only slightly likelier than the disliked ones (its implicit
reward, shown, ranks them barely better than chance). So the gate asks a sharper question of
evidence the candidate never trained on, in three steps:

1. Before training (plan.py): the examiner, a judge learned from ratings the candidate never trains
   on, ranks the held-out ratings as the writers did, at the share of alpha this test may spend.
2. The candidate and the serving version each write `samples` drafts of held-out prompts (the
   newest), in pairs: the same prompt and seed for both. The examiner must expect writers to like
   more of the candidate's drafts (log-odds above 0) than of the serving version's, by more than
   margin, with the exact sign test on the pairs where it likes one side's draft only. A 95%
   bootstrap interval of the difference is shown with it.
   The count may look more than once: where the first look neither passes nor shows the candidate
   behind, both versions write as many drafts again (other seeds) and the test is run on all of
   them. Look k of K may pass at alpha k^2 / (1^2 + ... + K^2) (0.01 then 0.04 for two looks):
   these add up to alpha, so looking again costs no error rate (a union bound), and most of alpha
   is kept for the last, largest look. Why: a candidate that wrote the liked trait in 31% of its
   drafts against 19% was rejected at p 0.24 on 48 pairs; such a rise passes 48 pairs about a
   third of the time and two looks about half of it (the same sign test, simulated).
   Why a count of liked drafts, not how often the judge ranks one side's draft above the other's:
   the judge also weights words that only happened to come with liked drafts, and between two
   drafts without the liked trait those words decide the ranking: a candidate that wrote more of
   them, and the trait no more often, ranked higher than one that wrote the trait more often.
3. Guards against damage, since a judge also likes broken text full of liked words: the
   candidate's samples are as varied (distinct-2 at least min_diversity of the base model's,
   chained through the versions: the candidate's against the serving version's, times the
   serving version's against its parent's and so on, so rounds cannot each lose a little) and as
   fluent (the base model's perplexity of them at most max_sample_perplexity_increase above that
   of the serving version's samples: no word salad) as the serving version's, and its perplexity
   on the held-out liked drafts has not risen more than max_perplexity_increase.

Where no exam can decide (plan.Exam.undecided) the verdict is undecided and says why; an admin can
still serve the version by hand.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from studio.learning.likelihood import perplexity, score
from studio.learning.plan import Exam, HeldOut
from studio.learning.significance import accuracy, paired_share_difference
from studio.text import distinct_2

__all__ = ["GateOptions", "Samples", "Verdict", "decide", "gate_words", "score", "settled"]


@dataclass
class Verdict:
    """The gate's figures and decision, as the version row keeps them."""

    decision: str  # promoted, rejected, or undecided (no exam could decide)
    reason: str
    pairs: int  # held-out (liked, disliked) pairs of one template or one pick
    liked: int
    disliked: int
    judge_accuracy: float  # the examiner on the held-out pairs, and its one-sided p-value
    judge_p: float
    judge_alpha: float  # the share of alpha this test could spend
    test: int  # which test since the last promotion
    samples: int  # drafts written by each version for the judge to compare
    candidate_liked: float  # share of the candidate's samples the examiner expects writers to like
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
    looks: int = 1  # how many times the count looked (each look: `samples / looks` more drafts a side)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a figure that could not be computed is None (JSON has no NaN)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class GateOptions:
    alpha: float  # the sign test's level
    judge_alpha: float  # the share of alpha the examiner's test could spend (plan.test_alpha)
    test: int
    margin: float
    min_diversity: float
    max_perplexity_increase: float
    max_sample_perplexity_increase: float
    seed: int = 0
    look: int = 1  # which look at the samples this is, of at most `looks`
    looks: int = 1

    @property
    def count_alpha(self) -> float:
        """The sign test's level at this look: alpha k^2 / (1^2 + ... + K^2), which add up to alpha."""
        return self.alpha * self.look ** 2 / sum(k * k for k in range(1, self.looks + 1))


@dataclass
class Samples:
    """Drafts each version wrote for the gate, by prompt (one list per prompt, same order in both),
    the base model's perplexity of each side's drafts, and whether the model ended each draft (the
    judge reads it, as it read the rated drafts), when known."""

    candidate: list[list[str]]
    serving: list[list[str]]
    candidate_fluency: float = float("nan")  # not yet read while the count is still looking
    serving_fluency: float = float("nan")
    candidate_ended: list[list[bool]] | None = None
    serving_ended: list[list[bool]] | None = None

    def flat(self) -> tuple[list[str], list[str]]:
        return [t for group in self.candidate for t in group], [t for group in self.serving for t in group]

    def readable(self) -> tuple[list, list]:
        """Each side's drafts as the judge reads them: with whether they ended, when known."""
        def side(texts: list[list[str]], ended: list[list[bool]] | None) -> list:
            flat = [t for group in texts for t in group]
            return flat if ended is None else list(zip(flat, [e for group in ended for e in group]))
        return side(self.candidate, self.candidate_ended), side(self.serving, self.serving_ended)


def _liked_shares(judge_score, samples: Samples, seed: int) -> tuple[float, float, float, float, float]:
    """Which of each version's samples the judge expects writers to like, compared in pairs (the
    same prompt and seed): both shares, the difference's interval, and the sign test's p."""
    candidate, serving = samples.readable()
    liked = [score > 0 for score in judge_score(candidate + serving)]
    return paired_share_difference(liked[:len(candidate)], liked[len(candidate):], seed)


def settled(exam: Exam, samples: Samples, options: GateOptions) -> bool:
    """Whether the count needs no further look: this is the last, it passes at this look's level, or
    the candidate is not ahead by more than the margin (stopping early never raises the error rate)."""
    if options.look >= options.looks or exam.undecided or exam.judge is None:
        return True
    candidate, serving, _, _, p = _liked_shares(exam.judge.scores, samples, options.seed)
    return p <= options.count_alpha or candidate - serving <= options.margin


def decide(held: HeldOut, exam: Exam, base: dict[int, tuple[float, int]], serving: dict[int, tuple[float, int]],
           candidate: dict[int, tuple[float, int]], samples: Samples | None, options: GateOptions,
           serving_diversity: float = 1.0) -> Verdict:
    """Promote, reject, or leave undecided; see the module's docstring. exam: the examiner and its
    ranking of the held-out drafts (trusted, or the run would have stopped before training, unless
    undecided); samples: None when undecided, so none were written; serving_diversity: the serving
    version's diversity_vs_base (1 for the base itself)."""
    liked, disliked = {a for a, _ in held.pairs}, {b for _, b in held.pairs}
    cand_texts, serv_texts = samples.flat() if samples else ([], [])
    nan = float("nan")
    cand_d2, serv_d2 = (distinct_2(cand_texts), distinct_2(serv_texts)) if cand_texts and serv_texts else (nan, nan)
    figures = dict(
        pairs=len(held.pairs), liked=len(liked), disliked=len(disliked),
        judge_accuracy=exam.accuracy, judge_p=exam.p_value, judge_alpha=options.judge_alpha, test=options.test,
        samples=len(cand_texts), candidate_liked=nan, serving_liked=nan, low=nan, high=nan, p_value=nan,
        candidate_distinct_2=cand_d2, serving_distinct_2=serv_d2,
        diversity_vs_base=cand_d2 / serv_d2 * serving_diversity if serv_d2 else nan,
        candidate_accuracy=accuracy({i: candidate[i][0] - base[i][0] for i in candidate}, held.pairs),
        serving_accuracy=accuracy({i: serving[i][0] - base[i][0] for i in serving}, held.pairs),
        candidate_perplexity=perplexity(candidate, held.liked), serving_perplexity=perplexity(serving, held.liked),
        candidate_fluency=samples.candidate_fluency if samples else nan,
        serving_fluency=samples.serving_fluency if samples else nan, alpha=options.count_alpha, margin=options.margin,
        looks=options.look)
    if exam.undecided or samples is None or exam.judge is None:
        return Verdict("undecided", exam.undecided or "No held-out prompts to write samples of.", **figures)
    (figures["candidate_liked"], figures["serving_liked"], figures["low"], figures["high"],
     figures["p_value"]) = _liked_shares(exam.judge.scores, samples, options.seed)
    return _verdict_on_samples(figures, options)


def _verdict_on_samples(figures: dict[str, Any], options: GateOptions) -> Verdict:
    verdict = functools.partial(Verdict, **figures)
    prefers = (f"a judge learned from ratings it never trained on (it ranks {figures['judge_accuracy']:.0%} of "
               f"held-out pairs as the writers did, p = {figures['judge_p']:.2g}, test {figures['test']} since the "
               f"last promotion, at most {figures['judge_alpha']:.2g}) expects writers to like "
               f"{figures['candidate_liked']:.0%} of its drafts against {figures['serving_liked']:.0%} of the "
               f"serving version's, {figures['samples']} drafts each of the same prompts and seeds"
               f"{_looked(options)} (difference {figures['candidate_liked'] - figures['serving_liked']:+.0%}, "
               f"95% interval {figures['low']:+.0%} to {figures['high']:+.0%}; p = {figures['p_value']:.3f})")
    if figures["p_value"] > options.count_alpha or \
            figures["candidate_liked"] - figures["serving_liked"] <= options.margin:
        return verdict("rejected", f"Not shown to write what the writers like more often than the serving version: "
                                   f"{prefers}; promotion needs p <= {options.count_alpha:.2g} and a difference above "
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


def _looked(options: GateOptions) -> str:
    if options.looks == 1:
        return ""
    return f", in {options.look} look{'s' * (options.look > 1)} of at most {options.looks}"


def gate_words(gate: dict[str, Any]) -> str:
    """The verdict's reason; for a version from before verdicts had one, its held-out perplexities."""
    if gate.get("reason"):
        return gate["reason"]
    return f"held-out perplexity {gate['active_perplexity']:.2f} -> {gate['candidate_perplexity']:.2f}"
