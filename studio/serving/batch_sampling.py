"""Choosing each draft's next token inside a batch: its own settings, its own seeded generator.

A RowSampler holds what generate() would build for one draft's settings: transformers' logits
processors in generate()'s order (repetition penalty, temperature, top-k, top-p) and a
torch.Generator seeded with the draft's seed. choose() gives every row exactly the figures those
processors give it alone, with fewer, larger tensor operations (small ones are what a busy CPU
makes slow): the penalty for all rows with the same penalty at once, the warpers for all rows with
the same settings at once, and top-p over the top-k survivors instead of a sort of the whole
vocabulary. Each row then draws with its own generator.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from studio.serving.sampling import SamplerSettings

ROWS_PER_THREAD = 8  # fewer rows than this a thread: not worth handing over
_POOL: ThreadPoolExecutor | None = None


class RowSampler:
    def __init__(self, settings: SamplerSettings, device: Any):
        import torch
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.penalty = (RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)
                        if settings.repetition_penalty != 1.0 else None)
        self.do_sample = settings.temperature > 0.0  # 0 = greedy, as SamplerSettings.generate_kwargs says
        warpers = LogitsProcessorList()
        if self.do_sample:
            if settings.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k != 0:
                warpers.append(TopKLogitsWarper(settings.top_k))
            if settings.top_p < 1.0:
                warpers.append(TopPLogitsWarper(settings.top_p))
        self.warpers = warpers
        self.settings = settings
        # Rows whose warpers are equal are warped together.
        self.key = (settings.temperature, settings.top_k, settings.top_p) if self.do_sample else None


def choose(samplers: list[RowSampler], ids: list[Any], logits) -> list[int]:
    """Each row's next token from the batch's float32 logits [rows, vocab]; ids[i] is row i's [1, n] tokens.

    Penalising and warping work on each row independently, so grouping rows does not change a row's
    figures; each row then draws with its own generator.
    """
    import torch

    scores = _penalised(samplers, ids, logits)
    groups: dict[tuple | None, list[int]] = {}
    for i, sampler in enumerate(samplers):
        groups.setdefault(sampler.key, []).append(i)
    chosen: list[Any] = [None] * len(samplers)
    for members in groups.values():
        first = samplers[members[0]]
        group = scores.index_select(0, torch.tensor(members, device=scores.device))
        if first.do_sample:
            probs = torch.nn.functional.softmax(_warped(first, group), dim=-1)
            for i, token in zip(members, _draws(probs, [samplers[i].generator for i in members])):
                chosen[i] = token
        else:
            for i, token in zip(members, torch.argmax(group, dim=-1)):
                chosen[i] = token
    return torch.stack(chosen).tolist()  # one read back to the host for the whole batch


def _draws(probs, generators: list[Any]) -> list[Any]:
    """Each row's draw with its own generator, as generate() draws. torch.multinomial draws one
    exponential per vocabulary entry (argmax of p / q), most of choosing's time in a large batch, and on
    one thread: on a CPU the rows are split over the threads torch may use. Each generator stays on one
    thread, so the draws do not change."""
    import torch

    def draw(rows: range) -> list[Any]:
        return [torch.multinomial(probs[j:j + 1], num_samples=1, generator=generators[j])[0, 0] for j in rows]

    workers = min(torch.get_num_threads(), len(generators) // ROWS_PER_THREAD)
    if probs.device.type != "cpu" or workers < 2:
        return draw(range(len(generators)))
    size = -(-len(generators) // workers)
    parts = _pool().map(draw, [range(start, min(start + size, len(generators)))
                               for start in range(0, len(generators), size)])
    return [token for part in parts for token in part]


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="sampling")
    return _POOL


def _penalised(samplers: list[RowSampler], ids: list[Any], scores):
    """transformers' repetition penalty, in place, for all rows with the same penalty in one gather and
    one write. Each row's ids are padded with its own first id: a repeated id reads and writes the same
    value, so padding changes nothing. The penalty stays a Python float, as the processor has it.
    """
    import torch

    by_penalty: dict[float, list[int]] = {}
    for i, sampler in enumerate(samplers):
        if sampler.penalty is not None:
            by_penalty.setdefault(sampler.penalty.penalty, []).append(i)
    for penalty, members in by_penalty.items():
        longest = max(ids[i].shape[-1] for i in members)
        index = torch.stack([torch.nn.functional.pad(ids[i][0], (0, longest - ids[i].shape[-1]), value=int(ids[i][0, 0]))
                             for i in members])
        if int(index.max()) >= scores.shape[-1]:  # ids past the output vocabulary, which the processor drops: rare
            for i in members:
                scores[i:i + 1] = samplers[i].penalty(ids[i], scores[i:i + 1])
            continue
        rows = torch.tensor(members, device=scores.device).unsqueeze(1)
        score = scores[rows, index]
        scores[rows, index] = torch.where(score < 0, score * penalty, score / penalty)
    return scores


def _warped(sampler: RowSampler, scores):
    """The sampler's warpers on a group of rows with its settings: top-p over the top-k survivors
    where that gives exactly what TopPLogitsWarper gives, else transformers' own warpers."""
    settings = sampler.settings
    if not (settings.top_k and settings.top_p < 1.0) or settings.top_k >= scores.shape[-1]:
        return sampler.warpers(None, scores)
    import torch

    given = scores
    if settings.temperature != 1.0:
        scores = scores / settings.temperature  # TemperatureLogitsWarper's own operation
    values, indices = torch.topk(scores, settings.top_k)  # descending
    kept = scores >= values[..., -1:]
    # A tie at the k-th value keeps more than k (TopKLogitsWarper keeps every tied token), and tied
    # survivors may sort in another order than torch.sort puts them: both are left to transformers.
    if int(kept.sum()) != kept.shape[0] * settings.top_k or bool((values[..., 1:] == values[..., :-1]).any()):
        return sampler.warpers(None, given)
    # TopPLogitsWarper sorts the whole row ascending: the removed tokens' -inf first, then the
    # survivors. That row is built here without the sort, so its softmax and cumsum are the same.
    ascending = torch.full_like(scores, float("-inf"))
    ascending[..., -settings.top_k:] = values.flip(-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)[..., -settings.top_k:]
    removed = cumulative <= (1 - settings.top_p)
    removed[..., -1:] = False  # min_tokens_to_keep = 1
    keep = torch.zeros_like(kept).scatter(1, indices.flip(-1), ~removed)
    return scores.masked_fill(~keep, float("-inf"))
