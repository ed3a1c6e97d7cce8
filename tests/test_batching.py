"""The batch engine on tiny random models: drafts decoded together match drafts run alone, stop alone,
replay their seeds, and newcomers join a running batch."""

from __future__ import annotations

import gc
import threading

import pytest

from storage import registry
from studio.errors import GenerationError
from studio.serving.batch_rows import Collected, Request
from studio.serving.batching import BatchEngine, batching_obstacle
from studio.serving.generation import DraftStream, model_input
from studio.serving.models import load_model
from studio.serving.sampling import SamplerSettings
from tests.waiting import wait_for

PROMPTS = ["Write a story.", "A poem about the rain on the river and the moon, please.", "Hi",
           "Breaking news: the city council voted to build a new library downtown."]
GREEDY = {"temperature": 0.0}
SAMPLED = {"temperature": 0.9, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.2}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tmp_path_factory):
    return load_model(str(tiny_model_dir), tmp_path_factory.mktemp("data"))


@pytest.fixture
def engine(loaded):
    engine = BatchEngine(loaded.model, max_batch=8)
    yield engine
    engine.close()


def _stream(loaded, engine, prompt="Write a story.", **settings) -> DraftStream:
    settings = SamplerSettings(**{"seed": 7, "max_new_tokens": 24, **settings})
    return DraftStream(loaded, model_input(loaded, prompt), settings, engine)


def _together(streams: list[DraftStream]) -> list[str]:
    """Iterate every stream in its own thread, all at once, as writers on the page do."""
    texts = [""] * len(streams)

    def read(i: int) -> None:
        texts[i] = "".join(streams[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return texts


def _engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "batch-engine"]


def test_the_tiny_llama_can_be_batched(loaded):
    assert batching_obstacle(loaded.model) is None


@pytest.mark.parametrize("sampler", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_alone_in_the_engine_a_draft_is_what_generate_writes_with_that_seed(loaded, engine, sampler):
    # Drafts written before batching replay the same with their recorded seed.
    for seed in (1, 2):
        assert "".join(_stream(loaded, engine, seed=seed, **sampler)) == "".join(
            _stream(loaded, None, seed=seed, **sampler))


@pytest.mark.parametrize("sampler", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_drafts_decoded_together_match_each_draft_written_alone(loaded, engine, sampler):
    # Prompts of different lengths, so rows are left-padded. Padding only changes float rounding in
    # the attention; on this model no choice is that close, so the texts are the same.
    alone = ["".join(_stream(loaded, engine, p, seed=i, **sampler)) for i, p in enumerate(PROMPTS)]
    streams = [_stream(loaded, engine, p, seed=i, **sampler) for i, p in enumerate(PROMPTS)]
    assert _together(streams) == alone
    assert [s.result.new_tokens for s in streams] == [24] * len(PROMPTS)
    assert all(0 < s.result.first_token_seconds <= s.result.generation_seconds for s in streams)


def test_drafts_of_one_prompt_share_its_prefill_and_match_each_draft_written_alone(loaded, engine):
    # A writer's candidates and a training run's samples are many drafts of one prompt: the prompt
    # is run once for all of them, and each still writes what it would alone with its seed.
    prompts = [PROMPTS[1]] * 4 + [PROMPTS[0]]
    settings = [SamplerSettings(**{**SAMPLED, "seed": seed, "max_new_tokens": 12}) for seed in range(len(prompts))]
    alone = ["".join(DraftStream(loaded, model_input(loaded, p), s, engine)) for p, s in zip(prompts, settings)]
    prefilled: list[int] = []
    hook = loaded.model.register_forward_pre_hook(
        lambda module, args, kwargs: prefilled.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[1] > 1 else None, with_kwargs=True)
    requests = []
    for prompt, s in zip(prompts, settings):
        ids = loaded.tokenizer(model_input(loaded, prompt), return_tensors="pt",
                               add_special_tokens=not loaded.is_chat)["input_ids"]
        collected = Collected()
        requests.append(Request(ids, s, collected, collected, engine.eos))
    try:
        engine.submit(*requests)
        for request in requests:
            request.join()
    finally:
        hook.remove()
    assert prefilled == [2]  # one pass, each distinct prompt once
    assert [loaded.tokenizer.decode(r.streamer.ids, skip_special_tokens=True) for r in requests] == alone


def test_seeds_replay_in_a_batch_and_different_seeds_differ(loaded, engine):
    streams = [_stream(loaded, engine, seed=seed, **SAMPLED) for seed in (3, 3, 4)]
    first, again, other = _together(streams)
    assert first == again != other


def test_each_draft_keeps_its_own_settings_in_a_batch(loaded, engine):
    alone = ["".join(_stream(loaded, engine, max_new_tokens=n, **s)) for n, s in ((5, GREEDY), (30, SAMPLED))]
    streams = [_stream(loaded, engine, max_new_tokens=n, **s) for n, s in ((5, GREEDY), (30, SAMPLED))]
    assert _together(streams) == alone
    assert [s.result.new_tokens for s in streams] == [5, 30]


def test_stopping_one_draft_leaves_the_others_running_to_the_end(loaded, engine):
    stopped = _stream(loaded, engine, max_new_tokens=1500)
    others = [_stream(loaded, engine, p, max_new_tokens=200) for p in PROMPTS[1:]]
    texts = [""] * len(others)

    def read(i: int) -> None:
        texts[i] = "".join(others[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    for n, _ in enumerate(stopped):
        if n == 3:
            stopped.stop()
    for t in threads:
        t.join()
    assert stopped.result.stopped and stopped.result.new_tokens < 100 and not stopped.running
    assert [s.result.new_tokens for s in others] == [200] * len(others)
    assert not any(s.result.stopped for s in others)
    assert texts == ["".join(_stream(loaded, engine, p, max_new_tokens=200)) for p in PROMPTS[1:]]


def test_a_draft_started_while_others_run_gets_tokens_before_they_finish(loaded, engine):
    running = [_stream(loaded, engine, p, max_new_tokens=1500) for p in PROMPTS[:2]]
    iterators = [iter(s) for s in running]
    for it in iterators:
        next(it)  # both are in the batch now
    newcomer = _stream(loaded, engine, PROMPTS[2], max_new_tokens=10)
    text = "".join(newcomer)  # continuous batching: it joins at the next step, it does not wait
    assert newcomer.result.new_tokens == 10 and text
    assert all(s.running for s in running)
    for it in iterators:
        it.close()
    assert all(s.result.stopped and not s.running for s in running)


def test_closed_and_dropped_iterators_end_their_drafts_in_the_engine(loaded, engine):
    closed = _stream(loaded, engine, max_new_tokens=1500)
    chunks = iter(closed)
    next(chunks)
    assert closed.running
    chunks.close()
    assert not closed.running and closed.result.stopped

    dropped = _stream(loaded, engine, max_new_tokens=1500)
    it = iter(dropped)
    next(it)
    del it
    gc.collect()
    wait_for(lambda: not dropped.running, 5)
    assert not dropped.running


def test_the_loop_thread_runs_only_while_there_is_work_and_close_stops_everything(loaded, engine):
    assert "".join(_stream(loaded, engine))
    wait_for(lambda: not _engine_threads(), 5)
    assert not _engine_threads() and len(engine) == 0

    long = _stream(loaded, engine, max_new_tokens=1500)
    chunks = iter(long)
    next(chunks)
    engine.close()
    list(chunks)
    assert long.result.stopped and not _engine_threads()
    with pytest.raises(GenerationError, match="unloaded"):
        list(_stream(loaded, engine))


def test_a_failure_in_the_model_ends_its_drafts_with_the_reason_and_the_engine_goes_on(loaded, engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(engine, "_forward", broken)
    with pytest.raises(GenerationError, match="Generation failed: CUDA out of memory"):
        list(_stream(loaded, engine))
    monkeypatch.undo()
    assert "".join(_stream(loaded, engine))


def test_a_swapped_model_gets_its_own_engine_and_running_drafts_finish_on_theirs(studio):
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 60}, user="local")
    old = studio.pool.load()
    chunks = iter(drafting)
    next(chunks)
    with studio.sessions.begin() as session:  # a new version (same weights) becomes the active one
        base = registry.active_version(session)
        version = registry.add_version(session, name="v1", parent_id=base.id, base_model=base.base_model,
                                       adapter_path=None, status="rejected", is_active=False)
        registry.activate(session, version.id)
    new = studio.pool.load()
    assert new is not old and new.engine is not old.engine and new.engine is not None
    assert "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 8}, user="local"))
    rest = "".join(chunks)
    assert rest and drafting.stream.result.new_tokens == 60 and not drafting.stream.result.stopped
    assert studio.drafts.get(drafting.draft_id, user="local")["model_version"] == "base"
    assert len(old.engine) == 0 and len(new.engine) == 0


def test_while_a_training_run_is_running_the_engine_decodes_on_one_thread(studio, monkeypatch):
    engine = studio.pool.load().engine
    seen = []
    forward = engine._forward

    def counting(*args, **kwargs):
        import torch

        seen.append(torch.get_num_threads())
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine, "_forward", counting)
    default = engine._default_threads
    with studio.sessions.begin() as session:
        run, _ = registry.enqueue_run(session, "test")
        run_id = run.id
        assert registry.claim_run(session, run_id, "test", 1)
    assert studio.pool.load().engine.threads == 1
    "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local"))
    assert set(seen) == {1}
    with studio.sessions.begin() as session:
        assert registry.end_run(session, run_id, "succeeded", worker="test")
    assert studio.pool.load().engine.threads is None
    seen.clear()
    "".join(studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local"))
    assert set(seen) == {default}


def test_batching_off_uses_a_thread_per_draft(studio):
    studio.settings.batching = "off"
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 8}, user="local")
    assert drafting.stream.engine is None
    assert "".join(drafting) and drafting.stream.result.new_tokens == 8


def test_the_batching_setting_and_the_page_concurrency_that_follows_it():
    from studio.config import Settings, settings_from

    assert Settings().batching == "on" and Settings().page_concurrency() == Settings().max_batch == 16
    assert Settings(batching="off").page_concurrency() == 1  # one generate() at a time, as before batching
    assert Settings().page_concurrency(batched=False) == 1  # a model the engine cannot batch
    assert Settings(max_batch=4).page_concurrency() == 4 and Settings(concurrency=2).page_concurrency(False) == 2
    assert settings_from(environ={"STUDIO_BATCHING": "off"}).batching == "off"
    with pytest.raises(ValueError, match="--batching must be on or off"):
        Settings(batching="maybe")
    with pytest.raises(ValueError, match="--max-batch must be at least 1"):
        Settings(max_batch=0)


def test_a_model_whose_generation_config_needs_generate_is_not_batched_and_runs_one_at_a_time(
        tiny_model_dir, tmp_path):
    # no_repeat_ngram_size is a logits processor only generate() applies: batched drafts would ignore it.
    import shutil

    from transformers import GenerationConfig

    from studio.config import Settings
    from studio.core.studio import Studio
    from studio.serving.batching import batching_obstacle

    folder = shutil.copytree(tiny_model_dir, tmp_path / "no-repeat-model")
    config = GenerationConfig.from_pretrained(folder)
    config.no_repeat_ngram_size = 2
    config.save_pretrained(folder)
    studio = Studio(Settings(model=str(folder), data_dir=str(tmp_path / "data")))
    assert "no_repeat_ngram_size" in batching_obstacle(studio.pool.load().model)
    assert not studio.pool.batches_drafts() and studio.settings.page_concurrency(studio.pool.batches_drafts()) == 1

    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 40, "temperature": 0.0, "repetition_penalty": 1.0}, user="local")
    assert "".join(drafting) and drafting.stream.engine is None
    loaded = studio.pool.load()
    template = studio.catalog.get("fantasy")
    inputs = loaded.tokenizer(model_input(loaded, template.render(), template.system), return_tensors="pt",
                              add_special_tokens=False)

    def greedy(**options) -> str:
        out = loaded.model.generate(**inputs, max_new_tokens=40, do_sample=False, **options)
        return loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    # The draft is what generate() writes with the model's config, not what it writes without it.
    assert studio.drafts.get(drafting.draft_id, user="local")["text"] == greedy() != greedy(no_repeat_ngram_size=0)
