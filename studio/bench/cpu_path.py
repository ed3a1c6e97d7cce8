"""The speed benchmark's CPU section: the studio's llama.cpp path (gguf.py, the default on a CPU)
against the peer, llama-server on the same GGUF file (peer.py), one writer and several at once,
runs interleaved so that drift on the machine hits both alike. Where llama.cpp cannot serve (a
GPU, a model without a GGUF file, llama-cpp-python missing) or no llama-server is found, it says
why and measures what it can."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from studio.bench.peer import at_once, complete, find_server, running
from studio.bench.scratch import PROMPT_TEMPLATE, setting, studio_stream, writers_at_once
from studio.bench.quantized import drafts_as_examples
from studio.errors import ModelError
from studio.learning.config import TrainingConfig
from studio.learning.dataset import IGNORE_INDEX, tokenize_example
from studio.learning.likelihood import perplexity, score
from studio.serving.batch_rows import Collected
from studio.serving.gguf import GgufEngine
from studio.serving.gguf_adapter import gguf_adapter
from studio.serving.generation import model_input
from studio.serving.llama_library import OPENMP_WARNING, built_with_openmp, gguf_obstacle
from studio.serving.models import embedded_gguf_path

MAX_LENGTH = 512  # tokens of a draft scored, as a run's gate reads them


def _rate(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["tokens"] / r["seconds"] for r in runs)


def cpu_figures(studio, tokens: int, repeats: int, writers: int = 8, peer: str = "",
                draft_ids: tuple[int, ...] = ()) -> dict[str, Any]:
    """tokens/s of one writer and of `writers` at once, on llama.cpp and on the peer, with ratios;
    a fine-tune's speed against the base's on llama.cpp; the perplexity of the drafts draft_ids
    (written by the float model) under llama.cpp's 4-bit weights against float32."""
    settings = studio.settings
    try:
        obstacle = gguf_obstacle(dataclasses.replace(settings, engine="llama.cpp"))
    except ModelError as exc:
        obstacle = str(exc)
    if obstacle:
        return {"skipped": obstacle}
    binary = find_server(peer)
    figures: dict[str, Any] = {"peer": binary or "not found: pass --peer PATH or put llama-server on the PATH",
                               "openmp": built_with_openmp()}
    floats = studio.pool.load()  # sections 1-6's transformers model
    drafts = drafts_as_examples(studio, list(draft_ids))
    float_scores = score(floats.model, floats.tokenizer, drafts, MAX_LENGTH)
    adapter = random_adapter(floats, studio.settings.data_path / "bench-adapter")
    with setting(studio, "engine", "llama.cpp"):
        loaded = studio.pool.load()
        figures |= perplexities(loaded, drafts, float_scores) | fine_tune_speed(loaded, adapter, tokens, repeats)
        template = studio.catalog.get(PROMPT_TEMPLATE)
        prompt = model_input(loaded, template.render(), template.system)
        threads = loaded.engine.default_threads
        studio_stream(studio, 8, 0)  # warm-up
        if binary is None:
            one = [studio_stream(studio, tokens, seed=i) for i in range(repeats)]
            many = [writers_at_once(studio, writers, tokens) for _ in range(2)]
            return figures | _summary(one, many, writers)
        with running(binary, embedded_gguf_path(), threads, slots=writers) as url:
            complete(url, prompt, 8, 0)  # warm-up
            one, peer_one, many, peer_many = [], [], [], []
            for i in range(repeats):
                one.append(studio_stream(studio, tokens, seed=i))
                peer_one.append(complete(url, prompt, tokens, seed=i))
            for _ in range(2):
                many.append(writers_at_once(studio, writers, tokens))
                peer_many.append(at_once(url, prompt, writers, tokens))
    ours, theirs = _summary(one, many, writers), _summary(peer_one, peer_many, writers)
    return figures | ours | {"peer_figures": theirs,
                             "x_peer_one": ours["one_tokens_per_s"] / theirs["one_tokens_per_s"],
                             "x_peer_many": ours["many_tokens_per_s"] / theirs["many_tokens_per_s"]}


def perplexities(loaded, drafts: list, float_scores: dict[int, tuple[float, int]]) -> dict[str, float]:
    """Perplexity of the same drafts under the float32 weights and under llama.cpp's GGUF."""
    served = {}
    for draft in drafts:
        item = tokenize_example(loaded.tokenizer, draft, MAX_LENGTH)
        first = next(i for i, label in enumerate(item["labels"]) if label != IGNORE_INDEX)
        values = loaded.engine.log_probabilities(item["input_ids"], first)
        served[draft.draft_id] = (sum(values), len(values))
    ids = [d.draft_id for d in drafts]
    ours, theirs = perplexity(served, ids), perplexity(float_scores, ids)
    return {"perplexity_float32": theirs, "perplexity_gguf": ours, "perplexity_x_float32": ours / theirs,
            "perplexity_drafts": len(ids)}


def random_adapter(floats, folder) -> Path:
    """A LoRA adapter as a run saves it (the studio's default rank and layers) with random weights:
    what a promoted version costs to serve does not depend on what it learned."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    config = TrainingConfig()
    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(floats.model), LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.target_modules, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_B" in name:
                weights.normal_(std=0.02)
    model.save_pretrained(folder)
    return gguf_adapter(folder, embedded_gguf_path())


def fine_tune_speed(loaded, adapter: Path, tokens: int, repeats: int) -> dict[str, float]:
    """One writer's tokens/s on llama.cpp with a fine-tune's adapter against the base, interleaved."""
    import torch

    from studio.serving.batch_rows import Request
    from studio.serving.sampling import SamplerSettings

    tuned = GgufEngine(loaded.engine.path, max_batch=1, adapter=adapter)
    prompt = torch.tensor([tuned.tokenize(model_input(loaded, "Write a story about a lighthouse keeper."), special=False)])
    rates: dict[str, list[float]] = {"base": [], "fine_tune": []}
    try:
        for i in range(repeats + 1):  # the first of each is a warm-up
            for label, engine in (("base", loaded.engine), ("fine_tune", tuned)):
                counter = Collected()
                settings = SamplerSettings(max_new_tokens=tokens, seed=i, repetition_penalty=1.0)
                # No end-of-text tokens: every draft is as long as asked, as the peer's are.
                request, started = Request(prompt, settings, counter, counter, set()), time.perf_counter()
                engine.submit(request)
                request.join()
                if i:
                    rates[label].append(counter.tokens / (time.perf_counter() - started))
    finally:
        tuned.close()
    base, tuned_rate = statistics.median(rates["base"]), statistics.median(rates["fine_tune"])
    return {"base_tokens_per_s": base, "fine_tune_tokens_per_s": tuned_rate, "fine_tune_x_base": tuned_rate / base}


def _summary(one: list[dict[str, Any]], many: list[dict[str, Any]], writers: int) -> dict[str, Any]:
    rate = _rate(one)
    together = statistics.median(m["aggregate_tokens_per_s"] for m in many)
    return {"one_tokens_per_s": rate, "many_tokens_per_s": together, "writers": writers, "many_x_one": together / rate}


def print_cpu(figures: dict[str, Any], transformers_one: float) -> None:
    """The section's table: each path's tokens/s and its ratio to the peer."""
    if "skipped" in figures:
        print(f"llama.cpp path: not measured ({figures['skipped']})\n")
        return
    n = figures["writers"]
    if figures["openmp"]:
        print(f"Warning: {OPENMP_WARNING}")
    print(f"{'CPU path':<40}{'1 writer t/s':>14}{f'{n} at once t/s':>16}{f'{n} / 1':>8}")
    rows = [("studio, llama.cpp on the GGUF", figures)]
    if "peer_figures" in figures:
        rows.append(("peer: llama-server, same GGUF", figures["peer_figures"]))
    for name, f in rows:
        print(f"{name:<40}{f['one_tokens_per_s']:>14.1f}{f['many_tokens_per_s']:>16.1f}{f['many_x_one']:>8.2f}")
    print(f"a fine-tune (LoRA r{TrainingConfig().lora_r} adapter) on llama.cpp: {figures['fine_tune_tokens_per_s']:.1f} "
          f"tokens/s against the base's {figures['base_tokens_per_s']:.1f} = {figures['fine_tune_x_base']:.2f}x "
          "(target >= 0.9)")
    print(f"perplexity of {figures['perplexity_drafts']} drafts: GGUF {figures['perplexity_gguf']:.3f}, float32 "
          f"{figures['perplexity_float32']:.3f} = {figures['perplexity_x_float32']:.3f}x (target within 3%)")
    if "peer_figures" not in figures:
        print(f"peer {figures['peer']}\n")
        return
    peer_one = figures["peer_figures"]["one_tokens_per_s"]
    print(f"studio llama.cpp / peer: one writer {figures['x_peer_one']:.2f}x (target >= 1.0), {n} at once "
          f"{figures['x_peer_many']:.2f}x (target >= 1.0); {n} at once / one writer {figures['many_x_one']:.2f}x "
          f"(target >= 3)")
    print(f"studio transformers (float32) / peer, one writer: {transformers_one / peer_one:.2f}x\n")
