"""Drafts written by llama.cpp from the embedded model's GGUF file (the default on a CPU).

The engine loads the real 93 MB file in under a second, so these tests use it rather than a tiny
model: what they check (a draft per seed, drafts batched, Stop, the model's own end) is what a
writer sees.
"""

from __future__ import annotations

import threading

import pytest

from studio.config import Settings
from studio.core.studio import Studio
from studio.errors import GenerationError, ModelError
from studio.serving.batch_rows import Collected, Request
from studio.serving.gguf import GgufEngine
from studio.serving.llama_library import gguf_obstacle
from studio.serving.models import embedded_gguf_path
from studio.serving.sampling import SamplerSettings

pytestmark = pytest.mark.slow

PROMPT = ("<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n"
          "<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def engine():
    engine = GgufEngine(embedded_gguf_path(), max_batch=4)
    yield engine
    engine.close()


def _write(engine, count: int, tokens: int = 24, seed: int = 0, prompt: str = PROMPT,
           **settings) -> list[tuple[Request, Collected]]:
    import torch

    ids = torch.tensor([engine.tokenize(prompt, special=False)])
    drafts = []
    for i in range(count):
        collected = Collected()
        chosen = SamplerSettings(max_new_tokens=tokens, seed=seed + i, **settings)
        drafts.append((Request(ids, chosen, collected, collected, engine.eos), collected))
    engine.submit(*[request for request, _ in drafts])
    for request, _ in drafts:
        request.join()
        assert request.error is None
    return drafts


def test_a_seed_writes_the_same_draft_and_another_seed_another(engine):
    alone = _write(engine, 1, seed=7)[0][1]
    assert _write(engine, 1, seed=7)[0][1].text == alone.text and alone.tokens == 24 and len(alone.text.split()) >= 5
    together = [c.text for _, c in _write(engine, 4, seed=5)]
    assert [c.text for _, c in _write(engine, 4, seed=5)] == together  # the same four, batched alike
    assert len(set(together)) == 4  # four seeds, four drafts


def test_more_drafts_than_the_batch_holds_all_finish(engine):
    drafts = _write(engine, 9, tokens=8)  # max_batch 4: the rest wait their turn
    assert [c.tokens for _, c in drafts] == [8] * 9


def test_a_draft_stops_within_a_token_of_stop_and_the_others_go_on(engine):
    import torch

    ids = torch.tensor([engine.tokenize(PROMPT, special=False)])
    stopped, running = Collected(), Collected()
    first = threading.Event()
    original = stopped.on_finalized_text

    def on_text(text, stream_end=False):
        original(text, stream_end)
        first.set()

    stopped.on_finalized_text = on_text
    requests = [Request(ids, SamplerSettings(max_new_tokens=200, seed=1), stopped, stopped, engine.eos),
                Request(ids, SamplerSettings(max_new_tokens=40, seed=2), running, running, engine.eos)]
    engine.submit(*requests)
    first.wait(30)
    stopped.event.set()
    for request in requests:
        request.join()
    assert stopped.tokens < 40 and running.tokens == 40
    assert len(engine) == 0 and engine.health()[0]


def test_greedy_drafts_end_on_the_models_own_end_of_text(engine):
    short = "<|im_start|>user\nWhat colour is the sky? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
    drafts = _write(engine, 2, tokens=100, temperature=0.0, prompt=short)
    (_, first), (_, second) = drafts
    assert first.text == second.text and first.text.strip()  # greedy: no seed matters
    assert first.ended and first.tokens < 100


def test_the_studio_writes_with_llama_cpp_on_a_cpu_and_says_so(tmp_path):
    studio = Studio(Settings(model="embedded", data_dir=str(tmp_path)))
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 20, "seed": 3}, user="local")
    text = "".join(drafting)
    assert len(text.split()) >= 5
    saved = studio.drafts.get(drafting.draft_id, user="local")
    assert saved["text"] == text and saved["new_tokens"] == 20
    ready = studio.pool.readiness()
    assert ready["model"][1].startswith("base by llama.cpp") and ready["batch_engine"][0]
    assert "llama.cpp" in studio.pool.served_by()


def test_transformers_still_serves_when_asked_and_llama_cpp_refuses_a_model_without_gguf(tmp_path, tiny_model_dir):
    asked = Settings(model="embedded", data_dir=str(tmp_path), engine="transformers")
    assert gguf_obstacle(asked) == "--engine transformers"
    tiny = Settings(model=str(tiny_model_dir), data_dir=str(tmp_path))
    assert "has no GGUF file" in gguf_obstacle(tiny)  # auto: transformers, quietly
    with pytest.raises(ModelError, match="--engine llama.cpp cannot serve"):
        gguf_obstacle(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path), engine="llama.cpp"))
    assert "--quantize int8" in gguf_obstacle(Settings(model="embedded", data_dir=str(tmp_path), quantize="int8"))


def test_when_the_shared_cache_fills_the_longest_draft_stops_with_its_text_and_the_others_go_on():
    import torch

    small = GgufEngine(embedded_gguf_path(), max_batch=2, context_tokens=256)
    try:
        ids = torch.tensor([small.tokenize(PROMPT, special=False)])
        long, short = Collected(), Collected()
        requests = [Request(ids, SamplerSettings(max_new_tokens=400, seed=1), long, long, set()),
                    Request(ids, SamplerSettings(max_new_tokens=60, seed=2), short, short, set())]
        small.submit(*requests)
        for request in requests:
            request.join()
    finally:
        small.close()
    assert isinstance(requests[0].error, GenerationError) and "filled the model's memory" in str(requests[0].error)
    assert long.text and 100 < long.tokens < 400  # what it wrote before stopping reached the writer
    assert requests[1].error is None and short.tokens == 60
