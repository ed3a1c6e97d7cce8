"""Choosing each draft's next token inside a batch: its own settings, its own seeded generator.

A RowSampler holds what generate() would build for one draft's settings: transformers' logits
processors in generate()'s order (repetition penalty, temperature, top-k, top-p) and a
torch.Generator seeded with the draft's seed. choose() applies them to a batch of logits, row by
row where a row's own tokens matter (the repetition penalty) and in groups of rows with the same
settings elsewhere, then draws each row's token with that row's generator.
"""

from __future__ import annotations

from typing import Any

from studio.serving.sampling import SamplerSettings


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
        # Rows whose warpers are equal are warped together.
        self.key = (settings.temperature, settings.top_k, settings.top_p) if self.do_sample else None


def choose(samplers: list[RowSampler], ids: list[Any], logits) -> list[int]:
    """Each row's next token from the batch's float32 logits [rows, vocab]; ids[i] is row i's [1, n] tokens.

    Rows with the same settings are warped in one call (fewer, larger tensor operations: small
    ones are what a busy CPU makes slow); each row then draws with its own generator. Warping
    works on each row independently, so grouping rows does not change a row's figures.
    """
    import torch

    scores = logits
    for i, sampler in enumerate(samplers):
        if sampler.penalty is not None:
            scores[i:i + 1] = sampler.penalty(ids[i], scores[i:i + 1])
    groups: dict[tuple | None, list[int]] = {}
    for i, sampler in enumerate(samplers):
        groups.setdefault(sampler.key, []).append(i)
    chosen: list[Any] = [None] * len(samplers)
    for members in groups.values():
        first = samplers[members[0]]
        group = first.warpers(None, scores.index_select(0, torch.tensor(members, device=scores.device)))
        if first.do_sample:
            probs = torch.nn.functional.softmax(group, dim=-1)
            for j, i in enumerate(members):
                chosen[i] = torch.multinomial(probs[j:j + 1], num_samples=1, generator=samplers[i].generator)[0, 0]
        else:
            for i, token in zip(members, torch.argmax(group, dim=-1)):
                chosen[i] = token
    return torch.stack(chosen).tolist()  # one read back to the host for the whole batch
