"""Streaming on a tiny random model: chunks arrive, seeds replay, Stop and abandoned streams end the worker."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from studio.errors import GenerationError
from studio.serving.generation import DraftStream, model_input
from studio.serving.models import load_model
from studio.serving.sampling import SamplerSettings


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tmp_path_factory):
    return load_model(str(tiny_model_dir), tmp_path_factory.mktemp("data"))


def _stream(loaded, **settings) -> DraftStream:
    return DraftStream(loaded, model_input(loaded, "Write a story."), SamplerSettings(**{"seed": 7, **settings}))


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name != "MainThread" and "_generate" in repr(t)]


def test_a_loaded_model_never_reaches_for_kernels_on_the_hub(loaded):
    """transformers turns hub kernels on by default and fetches its rotary kernel from the hub the first time a
    model trains on a GPU: on an offline GPU machine every training run failed. The studio's models use none."""
    assert loaded.model.use_kernels is False


def test_chunks_stream_in_and_the_result_counts_every_token(loaded):
    stream = _stream(loaded, max_new_tokens=24)
    chunks = list(stream)
    assert len(chunks) > 1  # streamed, not one block at the end
    assert stream.result.text == "".join(chunks)
    assert stream.result.new_tokens == 24
    assert not stream.result.stopped
    assert 0 < stream.result.first_token_seconds <= stream.result.generation_seconds


def test_the_same_seed_and_settings_write_the_same_draft(loaded):
    first = "".join(_stream(loaded, max_new_tokens=20, seed=3))
    again = "".join(_stream(loaded, max_new_tokens=20, seed=3))
    other = "".join(_stream(loaded, max_new_tokens=20, seed=4))
    assert first == again
    assert first != other


def test_stop_ends_generation_early_and_the_worker_thread_with_it(loaded):
    stream = _stream(loaded, max_new_tokens=1500)
    received = []
    for chunk in stream:
        received.append(chunk)
        if len(received) == 3:
            stream.stop()
    assert stream.result.stopped
    assert stream.result.new_tokens < 100
    assert not stream.running


def test_an_abandoned_stream_stops_its_worker(loaded):
    # A closed tab or cancelled API call closes the iterator (or drops it): the worker must end.
    stream = _stream(loaded, max_new_tokens=1500)
    chunks = iter(stream)
    next(chunks)
    assert stream.running
    chunks.close()
    assert not stream.running and stream.result.stopped

    dropped = _stream(loaded, max_new_tokens=1500)
    it = iter(dropped)
    next(it)
    del it
    gc.collect()
    deadline = time.monotonic() + 5
    while dropped.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not dropped.running


def test_max_new_tokens_beyond_the_context_is_refused_before_generating(loaded):
    with pytest.raises(GenerationError, match="context"):
        _stream(loaded, max_new_tokens=2047)


@pytest.mark.parametrize("bad, message", [
    ({"temperature": 3.0}, "temperature must be between"),
    ({"top_k": 2.5}, "top_k must be a whole number"),
    ({"max_new_tokens": 0}, "max_new_tokens must be between"),
    ({"top_p": "high"}, "top_p must be a number"),
])
def test_out_of_range_sampler_settings_are_named(bad, message):
    with pytest.raises(GenerationError, match=message):
        SamplerSettings(**bad)


def test_overrides_replace_template_suggestions_and_minus_one_means_a_random_seed():
    base = SamplerSettings(temperature=0.9, max_new_tokens=100)
    changed = base.updated({"temperature": 0.5, "seed": -1, "top_k": None})
    assert (changed.temperature, changed.max_new_tokens, changed.top_k, changed.seed) == (0.5, 100, 50, None)
    assert changed.with_seed().seed is not None
    with pytest.raises(GenerationError, match="Unknown sampler setting 'temp'"):
        base.updated({"temp": 1})

