"""Sampling inside a batch gives each row exactly what transformers' own processors give it alone."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from studio.serving.batch_sampling import RowSampler, _penalised, _warped, choose
from studio.serving.sampling import SamplerSettings


def _settings(**kwargs) -> SamplerSettings:
    return SamplerSettings(**{"seed": 1, "temperature": 0.8, "top_p": 0.95, "top_k": 50, **kwargs})


def test_rows_chosen_together_are_the_rows_chosen_one_by_one():
    torch.manual_seed(0)
    logits = torch.randn(6, 4000) * 3
    ids = [torch.randint(0, 4000, (1, 30 + i)) for i in range(6)]
    settings = [_settings(seed=s, repetition_penalty=rp, temperature=t)
                for s, rp, t in [(1, 1.0, 0.8), (2, 1.2, 0.8), (3, 1.0, 0.0), (4, 1.1, 1.0), (5, 1.0, 0.8), (6, 1.3, 0.0)]]
    together = choose([RowSampler(s, "cpu") for s in settings], ids, logits.clone())
    alone = [choose([RowSampler(s, "cpu")], [ids[i]], logits[i:i + 1].clone())[0] for i, s in enumerate(settings)]
    assert together == alone


def test_a_row_draws_what_generate_would_draw_with_its_seed():
    torch.manual_seed(0)
    logits = torch.randn(1, 4000) * 3
    processors = LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(50), TopPLogitsWarper(0.95)])
    torch.manual_seed(9)  # generate() draws from the global generator, seeded per draft
    expected = int(torch.multinomial(torch.softmax(processors(None, logits), dim=-1), 1))
    assert choose([RowSampler(_settings(seed=9), "cpu")], [torch.zeros(1, 1, dtype=torch.long)], logits) == [expected]


def _alone(settings: SamplerSettings, ids, row) -> int:
    """What generate() draws for one draft: transformers' processors in its order, then its seed's draw."""
    if settings.repetition_penalty != 1.0:
        row = RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)(ids, row)
    if settings.temperature == 0.0:
        return int(row.argmax(-1))
    warpers = LogitsProcessorList([TemperatureLogitsWarper(settings.temperature)])
    if settings.top_k:
        warpers.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))
    generator = torch.Generator().manual_seed(settings.seed)
    return int(torch.multinomial(torch.softmax(warpers(None, row), dim=-1), 1, generator=generator))


@pytest.mark.parametrize("tied", [False, True])
def test_a_batch_of_mixed_settings_draws_what_each_draft_draws_alone(tied):
    """Penalties applied in one scatter and top-p over the top-k survivors change no draw, with ties
    among the logits (which the batched top-p leaves to transformers) or without."""
    rng = random.Random(3)
    torch.manual_seed(3)
    logits = torch.randn(40, 4000) * 4
    if tied:
        logits = (logits * 2).round() / 2  # many equal logits, at the k-th and among the survivors
    ids = [torch.randint(0, 4000, (1, rng.randint(1, 120))) for _ in range(40)]
    settings = [_settings(seed=rng.randint(0, 10**6), temperature=rng.choice([0.0, 0.7, 1.0, 1.3]),
                          top_k=rng.choice([0, 1, 40, 50]), top_p=rng.choice([1.0, 0.5, 0.92, 0.99]),
                          repetition_penalty=rng.choice([1.0, 1.15, 1.3])) for _ in range(40)]
    together = choose([RowSampler(s, "cpu") for s in settings], ids, logits.clone())
    assert together == [_alone(s, ids[i], logits[i:i + 1].clone()) for i, s in enumerate(settings)]


@pytest.mark.parametrize("tied", [False, True])
def test_batched_penalty_and_warping_give_the_processors_floats_bit_for_bit(tied):
    """Draws hide small differences; the warped logits themselves must be the processors' own."""
    torch.manual_seed(5)
    logits = torch.randn(16, 4000) * 4
    if tied:
        logits = (logits * 2).round() / 2
    ids = [torch.randint(0, 4000, (1, 10 + 7 * i)) for i in range(16)]
    for top_k, top_p, temperature in [(50, 0.92, 0.8), (40, 0.5, 1.0), (1, 0.9, 1.3), (50, 1.0, 0.8), (0, 0.9, 0.8)]:
        sampler = RowSampler(_settings(top_k=top_k, top_p=top_p, temperature=temperature, repetition_penalty=1.15), "cpu")
        penalised = _penalised([sampler] * 16, ids, logits.clone())
        assert torch.equal(penalised, torch.cat([sampler.penalty(ids[i], logits[i:i + 1].clone()) for i in range(16)]))
        assert torch.equal(_warped(sampler, penalised.clone()), sampler.warpers(None, penalised.clone()))


def test_a_large_batch_drawn_on_several_threads_draws_what_each_draft_draws_alone():
    torch.manual_seed(7)
    logits = torch.randn(48, 4000) * 4
    ids = [torch.randint(0, 4000, (1, 5 + i)) for i in range(48)]
    settings = [_settings(seed=100 + i, repetition_penalty=1.15) for i in range(48)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # rows split over two threads, whatever this machine has
    try:
        together = choose([RowSampler(s, "cpu") for s in settings], ids, logits.clone())
    finally:
        torch.set_num_threads(threads)
    assert together == [_alone(s, ids[i], logits[i:i + 1].clone()) for i, s in enumerate(settings)]
