"""The gate's statistics and decisions on made-up scores and texts: the permutation test finds a real
preference and holds its false-promotion rate at alpha when the labels carry no signal; the gate
promotes what a trusted examiner prefers, and refuses collapse and damage."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from types import SimpleNamespace

from studio.learning.plan import Exam, HeldOut, smallest_p_value
from studio.learning.significance import accuracy, paired_share_difference, permutation_p_value
from studio.learning.verdict import GateOptions, Samples, decide


def clusters_of(liked: list[int], disliked: list[int]) -> list[list[tuple[int, int]]]:
    return [[(a, b) for a in liked for b in disliked]]


def test_a_clean_separation_has_the_exact_smallest_p_value():
    reward = {i: float(i) for i in range(29)}  # drafts 24..28 liked: all above every disliked draft
    p = permutation_p_value(reward, clusters_of(list(range(24, 29)), list(range(24))))
    assert p == pytest.approx(1 / math.comb(29, 5), rel=1e-9)


def test_three_liked_above_three_disliked_is_exactly_significant_at_five_percent():
    """1 in 20 relabellings ranks them so: a sampled p-value came out 0.051 and refused a clear judge."""
    reward = {i: float(i) for i in range(6)}
    assert permutation_p_value(reward, clusters_of([3, 4, 5], [0, 1, 2])) == 0.05
    assert permutation_p_value(reward, clusters_of([4, 5], [0, 1, 2])) == 0.1  # 1 in 10: not enough


def test_the_exact_null_agrees_with_shuffling_on_several_clusters_with_ties(monkeypatch):
    import studio.learning.significance as significance

    rng = random.Random(1)
    reward = {i: round(rng.gauss(0.6 if i % 3 == 0 else 0.0, 1), 1) for i in range(40)}  # rounded: ties
    clusters = clusters_of(list(range(0, 30, 3)), [b for b in range(30) if b % 3]) + clusters_of([30, 33, 36], [31, 37, 39])
    exact = permutation_p_value(reward, clusters)
    monkeypatch.setattr(significance, "EXACT_BUDGET", 0)
    sampled = permutation_p_value(reward, clusters, permutations=100_000)
    assert 0.001 < exact < 0.9 and sampled == pytest.approx(exact, abs=0.005)


def test_labels_without_signal_are_promoted_at_rate_alpha_at_most():
    rng = random.Random(3)
    significant = 0
    for trial in range(300):
        reward = {i: rng.gauss(0, 1) for i in range(30)}
        liked = rng.sample(range(30), 5)
        disliked = [i for i in range(30) if i not in liked]
        significant += permutation_p_value(reward, clusters_of(liked, disliked), seed=trial, permutations=2000) <= 0.05
    assert significant / 300 <= 0.08  # 0.05 expected; 0.08 is three standard errors above


def test_a_modest_real_shift_is_found_on_thirty_held_out_drafts():
    rng = random.Random(5)
    found = 0
    for trial in range(100):
        liked, disliked = list(range(6)), list(range(6, 30))
        reward = {i: rng.gauss(1.5 if i in liked else 0.0, 1) for i in range(30)}  # AUC about 0.86
        found += permutation_p_value(reward, clusters_of(liked, disliked), seed=trial, permutations=2000) <= 0.05
    assert found >= 80


def scores(values: dict[int, float]) -> dict[int, tuple[float, int]]:
    return {i: (v, 100) for i, v in values.items()}


def held(liked: list[int], disliked: list[int]) -> HeldOut:
    return HeldOut(drafts=[], pairs=clusters_of(liked, disliked)[0], clusters=clusters_of(liked, disliked), liked=liked)


def likes_sea_words(texts: list[str]) -> list[float]:
    """A judge that learned the writers like the sea: a draft with five sea words or more, liked."""
    texts = [t[0] if isinstance(t, tuple) else t for t in texts]  # (text, whether it ended), as a run reads them
    return [sum(w in ("sea", "wave", "harbour") for w in t.split()) - 4.5 for t in texts]


def verses(seed: int, n: int, sea: float) -> list[str]:
    rng = random.Random(seed)
    words = "moon star lantern boat sailor dawn hill road field river stone ember".split()
    return [" ".join(rng.choice(["sea", "wave", "harbour"]) if rng.random() < sea else rng.choice(words)
                     for _ in range(30)) for _ in range(n)]


LIKED, DISLIKED = list(range(6)), list(range(6, 30))
OPTIONS = GateOptions(alpha=0.05, judge_alpha=0.025, test=1, margin=0.0, min_diversity=0.9,
                      max_perplexity_increase=1.0, max_sample_perplexity_increase=1.0)
BASE = scores({i: -300.0 for i in range(30)})
TRUSTED_JUDGE = {i: (2.0 if i in LIKED else 0.0) + 0.01 * i for i in range(30)}  # ranks held-out pairs as rated


def exam(judge_score, ranking=TRUSTED_JUDGE, held_out=None) -> Exam:
    """An examiner that judges texts with judge_score and ranked the held-out drafts as `ranking`."""
    held_out = held_out or held(LIKED, DISLIKED)
    return Exam(SimpleNamespace(scores=judge_score, top_words=lambda: []), ranking,
                accuracy(ranking, held_out.pairs), permutation_p_value(ranking, held_out.clusters))


def verdict(candidate_sea: float, serving_sea: float = 0.1, candidate=BASE, samples=None,
            serving_diversity: float = 1.0):
    samples = samples or Samples([verses(1, 16, candidate_sea), verses(2, 16, candidate_sea)],
                                 [verses(3, 16, serving_sea), verses(4, 16, serving_sea)], 12.0, 11.0)
    return decide(held(LIKED, DISLIKED), exam(likes_sea_words), BASE, BASE, candidate, samples, OPTIONS,
                  serving_diversity=serving_diversity)


def test_a_candidate_whose_drafts_the_trusted_judge_prefers_is_promoted():
    result = verdict(candidate_sea=0.3)
    assert result.decision == "promoted", result.reason
    assert result.judge_p < 0.01 and result.candidate_liked > result.serving_liked + 0.5
    assert result.low > 0 and result.p_value < 0.01
    assert "95% interval" in result.reason


def stories(seed: int, n: int, trait: float, companions: float) -> list[str]:
    """Drafts with the liked trait ("lighthouse") in a share `trait` of them, and in every draft
    words that merely came with liked drafts in the ratings ("quiet") at rate `companions`."""
    rng = random.Random(seed)
    words = "moon star lantern boat sailor dawn hill road field river stone ember".split()
    drafts = []
    for _ in range(n):
        text = [("quiet" if rng.random() < companions else rng.choice(words)) for _ in range(30)]
        if rng.random() < trait:
            text[rng.randrange(30)] = "lighthouse"
        drafts.append(" ".join(text))
    return drafts


def judge_of_lighthouses(texts: list[str]) -> list[float]:
    """What an L1 judge learns from a few ratings: the trait, and a little weight on a companion word."""
    return [4.0 * ("lighthouse" in t.split()) + 0.4 * t.split().count("quiet") - 3.0 for t in texts]


def test_writing_more_of_the_words_that_came_with_liked_drafts_is_not_writing_what_writers_like():
    """The candidate writes "quiet" three times as often and the trait no more often: the judge ranks
    most of its drafts above the serving version's, but likes no more of them. The trait twice as
    often is promoted."""
    def judged(candidate: list[list[str]]):
        serving = [stories(3, 32, 0.15, 0.05), stories(4, 32, 0.15, 0.05)]
        return decide(held(LIKED, DISLIKED), exam(judge_of_lighthouses), BASE, BASE, BASE,
                      Samples(candidate, serving, 12.0, 12.0), OPTIONS)

    companions = [stories(1, 32, 0.15, 0.15), stories(2, 32, 0.15, 0.15)]
    cand, serv = [t for g in companions for t in g], stories(3, 32, 0.15, 0.05) + stories(4, 32, 0.15, 0.05)
    ranked = accuracy(dict(enumerate(judge_of_lighthouses(cand + serv))),
                      [(c, len(cand) + s) for c in range(len(cand)) for s in range(len(serv))])
    assert ranked > 0.7  # ranked, as the gate once compared them, the candidate wins
    verdict_companions = judged(companions)
    assert verdict_companions.decision == "rejected", verdict_companions.reason
    verdict_trait = judged([stories(1, 32, 0.45, 0.05), stories(2, 32, 0.45, 0.05)])
    assert verdict_trait.decision == "promoted", verdict_trait.reason
    assert verdict_trait.candidate_liked > verdict_trait.serving_liked + 0.15


def test_drafts_like_the_serving_versions_are_not_promoted():
    result = verdict(candidate_sea=0.1)
    assert result.decision == "rejected" and "Not shown to write" in result.reason


def test_a_candidate_that_repeats_itself_or_writes_far_worse_is_rejected():
    one_text = verses(5, 1, 0.5) * 16
    collapsed = verdict(candidate_sea=0.5, samples=Samples([one_text, one_text],
                                                           [verses(3, 16, 0.1), verses(4, 16, 0.1)], 12.0, 11.0))
    assert collapsed.decision == "rejected" and "repeats itself" in collapsed.reason
    # Word salad full of liked words: the judge prefers it, the base model finds it three times as perplexing.
    salad = verdict(candidate_sea=0.5, samples=Samples([verses(1, 16, 0.5), verses(2, 16, 0.5)],
                                                       [verses(3, 16, 0.1), verses(4, 16, 0.1)], 36.0, 12.0))
    assert salad.decision == "rejected" and "less naturally" in salad.reason and salad.candidate_liked > 0.8
    broken = verdict(candidate_sea=0.3, candidate=scores({i: -800.0 for i in range(30)}))
    assert broken.decision == "rejected" and "perplexity" in broken.reason


def test_variety_lost_round_after_round_adds_up_against_the_base():
    """Each round as varied as the last is fine; a serving version that already lost some variety
    leaves its successor less room, so rounds cannot each lose a little."""
    fresh = verdict(candidate_sea=0.3)
    assert fresh.decision == "promoted" and fresh.diversity_vs_base == pytest.approx(
        fresh.candidate_distinct_2 / fresh.serving_distinct_2)
    worn = verdict(candidate_sea=0.3, serving_diversity=0.85 / fresh.diversity_vs_base)  # OPTIONS: at least 0.9
    assert worn.decision == "rejected" and "85% of the base model's variety" in worn.reason


def test_without_an_exam_the_gate_leaves_the_candidate_undecided_and_says_why():
    why = "Not enough held-out ratings to judge: ... Rate about 8 more drafts"
    result = decide(held([0, 1], list(range(2, 30))), Exam(None, undecided=why), BASE, BASE, BASE, None, OPTIONS)
    assert result.decision == "undecided" and result.reason == why
    # One liked draft against sixteen: even a perfect ranking would come by chance one time in 17.
    assert smallest_p_value(held([0], list(range(1, 17)))) == pytest.approx(1 / 17)
    assert smallest_p_value(held([0, 1], list(range(2, 18)))) == pytest.approx(1 / 153)


def test_the_bootstrap_interval_holds_the_difference_in_liked_shares():
    rng = random.Random(1)
    first, second = [rng.random() < 0.4 for _ in range(48)], [rng.random() < 0.15 for _ in range(48)]
    liked_first, liked_second, low, high, p = paired_share_difference(first, second)
    observed = liked_first - liked_second
    assert low <= observed <= high and high - low > 0.05
    # The sign test counts only the pairs where one side is liked: P(at least `wins` heads of `n` fair tosses).
    wins = sum(a and not b for a, b in zip(first, second))
    n = wins + sum(b and not a for a, b in zip(first, second))
    assert p == pytest.approx(sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n, rel=1e-9)
    assert p <= 0.05 < paired_share_difference(second, first)[4]  # 40% against 15% liked: one way only


def test_pairs_liked_on_both_sides_say_nothing_about_which_is_better():
    both = [True] * 40 + [False] * 8
    assert paired_share_difference(both, both)[4] == 1.0
    one_more = [True] * 40 + [True] + [False] * 7
    assert paired_share_difference(one_more, both)[4] == 0.5  # one discordant pair: a coin toss


def test_the_training_tab_shows_the_verdicts_reason_and_older_versions_figures():
    from studio.ui.training import _ranked

    assert _ranked({"method": "kto", "decision": "promoted", "reason": "Promoted: a judge ..."}) == "Promoted: a judge ..."
    older = {"decision": "promoted", "active_perplexity": 27.98, "candidate_perplexity": 24.48}  # the perplexity gate's
    assert _ranked(older) == "held-out perplexity 27.98 -> 24.48"


def paired(wins: int, losses: int, ties: int, seed: int) -> tuple[list[str], list[str]]:
    """Candidate and serving drafts, in pairs, where the sea judge likes the candidate's draft only
    (wins), the serving version's only (losses), or neither (ties)."""
    sea, land = verses(seed, wins + losses, 0.6), verses(seed + 1, wins + losses + 2 * ties, 0.0)
    candidate = sea[:wins] + land[:losses] + land[losses + wins:losses + wins + ties]
    serving = land[losses:losses + wins] + sea[wins:] + land[losses + wins + ties:]
    return candidate, serving


def test_the_count_shares_alpha_over_its_looks_and_looks_again_only_while_unsettled():
    from studio.learning.verdict import settled

    for looks in (1, 2, 3, 4):
        spent = sum(dataclasses.replace(OPTIONS, look=k, looks=looks).count_alpha for k in range(1, looks + 1))
        assert spent == pytest.approx(OPTIONS.alpha)
    first, last = dataclasses.replace(OPTIONS, look=1, looks=2), dataclasses.replace(OPTIONS, look=2, looks=2)
    assert (first.count_alpha, last.count_alpha) == pytest.approx((0.01, 0.04))
    examiner = exam(likes_sea_words)

    def judged(candidate, serving, options):
        samples = Samples([candidate], [serving], 12.0, 12.0)
        return settled(examiner, samples, options), decide(held(LIKED, DISLIKED), examiner, BASE, BASE, BASE,
                                                             samples, options)

    ahead = paired(wins=9, losses=2, ties=37, seed=10)  # sign test p 0.033: enough for one look at 0.05
    assert judged(*ahead, OPTIONS)[1].decision == "promoted"
    unsettled, at_first_look = judged(*ahead, first)
    assert not unsettled and at_first_look.decision == "rejected" and "p <= 0.01" in at_first_look.reason
    again = paired(wins=9, losses=2, ties=37, seed=20)
    settles, verdict_then = judged(ahead[0] + again[0], ahead[1] + again[1], last)  # 18 against 4: p 0.002
    assert settles and verdict_then.decision == "promoted", verdict_then.reason
    assert verdict_then.looks == 2 and verdict_then.samples == 96 and "in 2 looks" in verdict_then.reason
    assert judged(*paired(wins=2, losses=9, ties=37, seed=30), first)[0]  # behind: looking on would not help
    assert judged(*paired(wins=12, losses=0, ties=36, seed=40), first)[0]  # p 0.0002: passed at the first look


def test_each_look_writes_both_versions_from_the_same_new_seeds_until_the_count_settles(monkeypatch):
    """The run's second look is other drafts than the first (other seeds), the candidate's and the
    serving version's from the same seeds, and there is no third look once the count settled."""
    import studio.learning.pipeline as pipeline
    from studio.learning.config import TrainingConfig

    written = []

    def write_drafts(model, tokenizer, requests, count, *, chat):
        seed = requests[0]["sampler"]["seed"]
        written.append((model, seed))
        wins = 9 if model == "candidate" else 2  # each look: the candidate liked 9 times, the serving 2
        return [[(text, True) for text in verses(seed, wins, 0.6) + verses(seed + 1, count - wins, 0.0)]]

    monkeypatch.setattr(pipeline, "write_drafts", write_drafts)
    plan = SimpleNamespace(requests=[{"model_input": "m", "prompt": "p", "template_id": "t", "sampler": {"seed": 5}}],
                           exam=exam(likes_sea_words), alpha=0.025, test=1)
    base, serving = SimpleNamespace(tokenizer=None, is_chat=False), SimpleNamespace(model="serving", tokenizer=None,
                                                                                    is_chat=False)
    config = TrainingConfig(gate_samples=48, gate_looks=3)
    samples, looks = pipeline._look(config, plan, base, serving, "candidate", "v1", lambda *a: None)
    assert looks == 2 and len(samples.candidate[0]) == len(samples.serving[0]) == 96
    assert [model for model, _ in written] == ["candidate", "serving"] * 2
    assert written[0][1] == written[1][1] != written[2][1] == written[3][1]
