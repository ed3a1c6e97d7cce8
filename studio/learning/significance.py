"""How well scores order pairs of drafts, and how sure that is: accuracy (Mann-Whitney's AUC over
pairs) with a permutation test (exact where it can count every relabelling); and, for two
versions' drafts judged liked or not in pairs, both liked shares with a bootstrap interval of
their difference and the exact sign test.

Pairs come in clusters: within a cluster every "first" item is paired with every "second" item
(a template's held-out liked drafts with its disliked ones). Labels are shuffled within clusters.
"""

from __future__ import annotations

import random

RESAMPLES = 2000  # bootstrap resamples: enough for a steady 95% interval, a fraction of a second
PERMUTATIONS = 20000  # label shuffles where the null is too big to count: p to about +-0.003 at 0.05


def accuracy(reward: dict[int, float], pairs: list[tuple[int, int]]) -> float:
    """Share of pairs whose liked draft gets the higher reward; ties count half."""
    if not pairs:
        return float("nan")
    return sum(1.0 if reward[a] > reward[b] else 0.5 if reward[a] == reward[b] else 0.0 for a, b in pairs) / len(pairs)


def _midranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank (so a tie counts half, as in accuracy)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


EXACT_BUDGET = 1_000_000_000  # n * k * n(n+1) per cluster for an exact null: 200 drafts, 100 liked take 0.5 s


def _exact_null(doubled_ranks: list[int], k: int):
    """How many ways k of the drafts can be drawn as "liked" for each sum of their doubled ranks:
    counting subsets item by item, one array of sums per subset size (floats: the counts outgrow
    int64, and p-values need no more than float precision)."""
    import numpy as np

    total = sum(sorted(doubled_ranks)[-k:]) if k else 0
    ways = np.zeros((k + 1, total + 1))
    ways[0, 0] = 1.0
    for taken, rank in enumerate(doubled_ranks):
        for j in range(min(taken + 1, k), 0, -1):
            ways[j, rank:] += ways[j - 1, :total + 1 - rank]
    return ways[k] / ways[k].sum()


def permutation_p_value(reward: dict[int, float], clusters: list[list[tuple[int, int]]], seed: int = 0,
                        permutations: int = PERMUTATIONS) -> float:
    """One-sided p-value of reward's accuracy on the pairs when which drafts were liked is shuffled
    within each cluster (a template's held-out drafts). Each cluster pairs all its liked drafts with
    all its disliked ones, so its correctly ordered pairs are Mann-Whitney's U: the liked drafts'
    rank sum minus k(k+1)/2; the sum over clusters is the statistic.

    Exact (every relabelling counted) when the clusters are small enough, as held-out sets are:
    a sampled p-value wavers around a threshold it sits on (three liked and three disliked drafts
    perfectly ranked have p = 1/20 exactly). Sampled with permutations shuffles otherwise."""
    import numpy as np

    shapes = []
    for cluster in clusters:
        liked = sorted({a for a, _ in cluster})
        ids = liked + sorted({b for _, b in cluster})
        shapes.append((np.array(_midranks([reward[i] for i in ids])), len(liked)))
    # Midranks are whole or halves: doubled, they are integers and sums are exact.
    observed = sum(int(round(2 * ranks[:k].sum())) for ranks, k in shapes)
    if all(len(ranks) * k * len(ranks) * (len(ranks) + 1) <= EXACT_BUDGET for ranks, k in shapes):
        null = np.array([1.0])
        for ranks, k in shapes:
            null = np.convolve(null, _exact_null([int(round(2 * r)) for r in ranks], k))
        return round(float(min(1.0, null[observed:].sum())), 12)  # 1/20 stays 1/20, not 1/20 + 1e-17
    rng = np.random.default_rng(seed)
    sampled = np.zeros(permutations)
    for ranks, k in shapes:
        chosen = rng.random((permutations, len(ranks))).argsort(axis=1)[:, :k]  # k drafts drawn as "liked"
        sampled += np.rint(2 * ranks[chosen].sum(axis=1))
    return float((1 + (sampled >= observed).sum()) / (1 + permutations))


def paired_share_difference(first: list[bool], second: list[bool], seed: int = 0,
                            resamples: int = RESAMPLES) -> tuple[float, float, float, float, float]:
    """Two versions' drafts in pairs (the same prompt and seed), each judged liked or not: each
    side's liked share, a 95% bootstrap interval of the difference (pairs resampled), and the
    exact one-sided sign test (McNemar's) that the first side is liked more often. Pairs both
    liked or both not say nothing about which side is better and only the others count."""
    from scipy.stats import binomtest

    if not first or len(first) != len(second):
        raise ValueError("paired_share_difference needs as many drafts on each side, at least one.")
    n = len(first)
    differences = [int(a) - int(b) for a, b in zip(first, second)]
    wins, losses = differences.count(1), differences.count(-1)
    p = float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0
    rng = random.Random(seed)
    values = sorted(sum(rng.choice(differences) for _ in range(n)) / n for _ in range(resamples))
    return sum(first) / n, sum(second) / n, values[int(0.025 * (resamples - 1))], values[int(0.975 * (resamples - 1))], p
