"""Sampling inside a batch gives each row exactly what transformers' own processors give it alone."""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from studio.serving.batch_sampling import RowSampler, choose
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
