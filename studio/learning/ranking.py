"""How well scores order pairs of drafts, and how sure that is: accuracy (Mann-Whitney's AUC over
pairs), a bootstrap interval that resamples drafts rather than pairs, and a permutation test.

Pairs come in clusters: within a cluster every "first" item is paired with every "second" item
(a template's liked drafts with its disliked ones; one prompt's candidate samples with the serving
version's). Labels are shuffled and drafts resampled within clusters.
"""

from __future__ import annotations

import random

RESAMPLES = 2000  # bootstrap resamples: enough for a steady 95% interval, a fraction of a second
PERMUTATIONS = 20000  # label shuffles: p-values to about +-0.003 at 0.05, a fraction of a second


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


def accuracy_interval(reward: dict[int, float], clusters: list[list[tuple[int, int]]], seed: int = 0,
                      resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% percentile bootstrap interval of the accuracy of reward on the clusters' pairs."""
    rng = random.Random(seed)
    values = sorted(accuracy(reward, sample) for sample in (_resample(clusters, rng) for _ in range(resamples))
                    if sample)
    if not values:
        return float("nan"), float("nan")
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


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


def permutation_p_value(reward: dict[int, float], clusters: list[list[tuple[int, int]]], seed: int = 0,
                        permutations: int = PERMUTATIONS) -> float:
    """One-sided p-value of reward's accuracy on the pairs when which drafts were liked is shuffled
    within each cluster (a template's held-out drafts). Each cluster pairs all its liked drafts with
    all its disliked ones, so its correctly ordered pairs are Mann-Whitney's U: the liked drafts'
    rank sum minus k(k+1)/2; the sum over clusters is the statistic."""
    import numpy as np

    rng = np.random.default_rng(seed)
    observed, null = 0.0, np.zeros(permutations)
    for cluster in clusters:
        liked = sorted({a for a, _ in cluster})
        ids = liked + sorted({b for _, b in cluster})
        ranks = np.array(_midranks([reward[i] for i in ids]))
        k = len(liked)
        observed += ranks[:k].sum() - k * (k + 1) / 2
        chosen = rng.random((permutations, len(ids))).argsort(axis=1)[:, :k]  # k drafts drawn as "liked"
        null += ranks[chosen].sum(axis=1) - k * (k + 1) / 2
    return float((1 + (null >= observed - 1e-9).sum()) / (1 + permutations))
