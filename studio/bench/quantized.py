"""The speed benchmark's quantisation section: the serving version with --quantize none against each
mode the device has a kernel for (int8; int4 on a recent CUDA GPU), side by side in one run:
  - tokens/s of 1 and 8 writers streaming at once through Drafts.write (the page's path), the
    modes taking turns for ROUNDS rounds so drift on the machine hits them alike;
  - perplexity of a fixed set of drafts: the benchmark's own, written by the unquantised model;
  - the weights' bytes, and the memory the load takes, each mode loaded in a fresh process of its
    own (RSS grown by the load and at its peak; GPU memory on CUDA), so memory one mode freed
    cannot hide what the next one needs;
and every figure as a ratio against none.

`python -m studio.bench.quantized SPEC` is that fresh process: it loads one mode and prints its memory.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from storage.repository import get_draft
from studio.bench.scratch import setting, studio_stream, writers_at_once
from studio.learning.dataset import Example
from studio.learning.likelihood import score_held_out
from studio.learning.jobs import REPO_ROOT
from studio.config import QUANTIZE_MODES
from studio.serving.quantize import unsupported, weight_bytes

WRITERS = (1, 8)
ROUNDS = 2  # each mode's throughput is the median of its turns


def quantization_figures(studio, draft_ids: list[int], tokens: int) -> dict[str, Any]:
    drafts = drafts_as_examples(studio, draft_ids)
    max_length = studio.versions.training_config().max_length  # the window the gate scores drafts in
    adapter = next(v["adapter_path"] for v in studio.versions.list() if v["active"])
    device = studio.pool.load().device
    reasons = {mode: unsupported(mode, device) for mode in QUANTIZE_MODES}
    skipped = {mode: reason for mode, reason in reasons.items() if reason}
    modes = tuple(mode for mode in QUANTIZE_MODES if mode not in skipped)
    rates: dict[str, dict[int, list[float]]] = {mode: {n: [] for n in WRITERS} for mode in modes}
    figures: dict[str, dict[str, float]] = {mode: {} for mode in modes}
    for turn in range(ROUNDS):
        for mode in modes:
            with setting(studio, "quantize", mode):
                loaded = studio.pool.load()
                studio_stream(studio, 4, seed=0)  # warm-up on these weights
                for n in WRITERS:
                    rates[mode][n].append(writers_at_once(studio, n, tokens)["aggregate_tokens_per_s"])
                if turn == 0:
                    nll = score_held_out(loaded.model, loaded.tokenizer, drafts, [], max_length).nll
                    figures[mode] = {"perplexity": math.exp(nll), "weight_mb": weight_bytes(loaded.model) / 2**20}
    memory = load_memory(studio.settings, adapter, modes)
    for mode in modes:
        figures[mode] |= {f"writers_{n}_tokens_per_s": statistics.median(rates[mode][n]) for n in WRITERS}
        figures[mode] |= memory[mode]
    ratios = {mode: {key: figures[mode][key] / figures["none"][key] for key in figures[mode]}
              for mode in modes if mode != "none"}
    return {"drafts": len(drafts), "modes": figures, "ratios": ratios, "skipped": skipped}


def drafts_as_examples(studio, draft_ids: list[int]) -> list[Example]:
    with studio.sessions() as session:
        rows = [get_draft(session, i) for i in draft_ids]
        return [Example(draft_id=d.id, context=d.model_input, prompt=d.prompt, completion=d.text, stars=0,
                        user=d.user, template_id=d.template_id) for d in rows]


def load_memory(settings, adapter: str | None, modes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The memory loading each mode takes, each measured in a fresh process of its own (run at once:
    each process counts only its own memory, and the imports take most of their time)."""
    processes = {}
    for mode in modes:
        spec = {"model": settings.model, "data_dir": str(settings.data_path), "device": settings.device,
                "adapter": adapter, "quantize": mode}
        processes[mode] = subprocess.Popen([sys.executable, "-m", "studio.bench.quantized", json.dumps(spec)],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    figures = {}
    for mode, process in processes.items():
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"Loading the model with --quantize {mode} failed:\n{err[-2000:]}")
        figures[mode] = json.loads(out.strip().splitlines()[-1])
    return figures


def _measure_load(spec: dict[str, Any]) -> dict[str, float]:
    import gc
    import resource

    import peft  # noqa: F401  (merges adapters)
    import psutil
    import torch
    import torchao.quantization  # noqa: F401
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from studio.logs import quiet_libraries
    from studio.serving.models import load_model

    quiet_libraries()
    where = (spec["model"], Path(spec["data_dir"]), spec["device"])
    # What every load needs is taken first (tokenizer, config, the model's class and the libraries),
    # so that the figures are the weights' own.
    config = load_model(*where, progress=lambda _: None, weights=False).config
    MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # imports the class
    process = psutil.Process()
    before = process.memory_info().rss
    loaded = load_model(*where, progress=lambda _: None, adapter=spec["adapter"], quantize=spec["quantize"])
    with torch.inference_mode():  # one forward pass: float weights mapped from the file count once read
        loaded.model(**loaded.tokenizer("Once upon a time", return_tensors="pt").to(loaded.device))
    gc.collect()
    figures = {"load_rss_mb": (process.memory_info().rss - before) / 2**20,
               "load_peak_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / 2**20}
    if torch.cuda.is_available():
        figures |= {"gpu_mb": torch.cuda.memory_allocated() / 2**20,
                    "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}
    return figures


def print_quantization(section: dict[str, Any]) -> None:
    modes = section["modes"]
    print(f"quantised serving (--quantize), the serving version; perplexity on {section['drafts']} of the "
          "benchmark's drafts, written by the unquantised model")
    memory = [("weight_mb", "weights MB"), ("load_rss_mb", "load RSS MB"), ("load_peak_rss_mb", "load peak MB")]
    if "gpu_mb" in modes["none"]:
        memory.append(("gpu_mb", "GPU MB"))
    columns = [*((f"writers_{n}_tokens_per_s", f"{n} writer{'s' if n > 1 else ''} t/s") for n in WRITERS),
               ("perplexity", "perplexity"), *memory]
    print(f"{'mode':<6}" + "".join(f"{title:>15}" for _, title in columns))
    for mode, figures in modes.items():
        print(f"{mode:<6}" + "".join(f"{figures[key]:>15.2f}" for key, _ in columns))
    for mode, ratios in section["ratios"].items():
        print(f"{mode} / none: " + ", ".join(f"{title} {ratios[key]:.2f}x" for key, title in columns))
    for mode, reason in section["skipped"].items():
        print(f"{mode}: not measured: {reason}")
    print()


if __name__ == "__main__":
    print(json.dumps(_measure_load(json.loads(sys.argv[1]))))
