"""The speed benchmark's CPU section against the peer, llama-server on the same GGUF file (CI builds
it with .ci/build-llama-server; elsewhere these tests are skipped unless $LLAMA_SERVER or the PATH
has one)."""

from __future__ import annotations

import pytest

from studio.bench.cpu_path import cpu_figures, print_cpu
from studio.bench.peer import at_once, complete, find_server, running
from studio.bench.scratch import studio_stream
from studio.config import Settings
from studio.core.studio import Studio
from studio.serving.models import embedded_gguf_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_server() is None, reason="no llama-server: run .ci/build-llama-server")]

PROMPT = "<|im_start|>user\nWrite a poem about rain.<|im_end|>\n<|im_start|>assistant\n"


def test_the_peer_writes_drafts_as_long_as_asked_alone_and_together():
    with running(find_server(), embedded_gguf_path(), threads=2, slots=2) as url:
        alone = complete(url, PROMPT, 8, seed=1)
        together = at_once(url, PROMPT, 2, 8)
    assert alone["tokens"] == 8 and alone["ttft"] <= alone["seconds"]
    assert together["writers"] == 2 and together["aggregate_tokens_per_s"] > 0


def test_the_cpu_section_measures_the_studio_beside_the_peer_and_prints_the_ratios(tmp_path, capsys):
    studio = Studio(Settings(model="embedded", data_dir=str(tmp_path), engine="transformers"))
    drafts = tuple(studio_stream(studio, 12, seed=i)["draft_id"] for i in range(2))  # written by the float model
    figures = cpu_figures(studio, tokens=8, repeats=1, writers=2, draft_ids=drafts)
    assert figures["peer_figures"]["one_tokens_per_s"] > 0 and figures["x_peer_one"] > 0
    assert figures["perplexity_drafts"] == 2 and 0.8 < figures["perplexity_x_float32"] < 1.25
    assert figures["fine_tune_x_base"] > 0 and not figures["openmp"]
    print_cpu(figures, transformers_one=10.0)
    printed = capsys.readouterr().out
    assert "studio llama.cpp / peer: one writer" in printed and "perplexity of 2 drafts" in printed
    assert studio.settings.engine == "transformers"  # the section gives the setting back
