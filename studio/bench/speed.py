"""Speed benchmark: `python -m studio.bench [--model M] [--tokens N] [--writers 1,4,8,16] [--json FILE]`

Every figure is measured in one run, on the same model and settings, side by side, so the
ratios hold on a noisy machine even when the absolute numbers move:
  1. bare `model.generate` vs the studio's own streaming path (the code the page uses), with
     batching on and off;
  2. several writers streaming at once through Studio.write, batched (one batch engine on the
     model) and unbatched (a generate() thread per writer), side by side: aggregate and per-writer
     tokens/s, time to first token, gaps between tokens;
  3. the fine-tune job's training tokens/s, and serving tokens/s while it trains;
  4. peak memory (RSS, and GPU memory when there is a GPU);
  5. with section 1, the page's path with metrics on against off (what /metrics costs a stream);
  6. quantised serving (--quantize int8, and int4 on CUDA) against none: 1 and 8 writers' tokens/s,
     the weights' and the load's memory, perplexity of the benchmark's drafts (bench/quantized.py);
  7. on a CPU, the studio's llama.cpp path (the default there) against the peer, llama-server on
     the same GGUF file: one writer and 8 at once, and each path's ratio to it (bench/cpu_path.py).
Sections 1-6 measure the transformers path (--engine transformers), which CUDA and training use.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studio.bench.bandwidth import decode_bound, print_bound
from studio.bench.cpu_path import cpu_figures, print_cpu
from studio.bench.quantized import print_quantization, quantization_figures
from studio.bench.scratch import PROMPT_TEMPLATE, scratch_settings, setting, studio_stream, writers_at_once
from studio.config import Settings, add_arguments, child_environment, settings_from
from studio.learning.jobs import REPO_ROOT, train_command
from studio.logs import quiet_libraries
from studio.serving.generation import model_input
from studio.trust.accounts import OPERATOR

# Rated drafts the benchmark's training run learns from: enough for a split and a few dozen
# optimisation steps (training tokens/s and serving beside it are steady long before the end),
# few enough that the whole benchmark takes minutes on a CPU.
TRAINING_DRAFTS = 20


def bare_generate(loaded, text_in: str, tokens: int, seed: int) -> dict[str, float]:
    """transformers' generate as it is, in a thread of its own as the studio runs the model.

    Not in this main thread: on a CPU, torch work that alternates between the main thread and
    other threads makes the other threads ~5% slower (each thread has its own OpenMP team), which
    would be counted against the streaming paths. The page never runs the model in the main thread.
    """
    result: list[dict[str, float]] = []
    worker = threading.Thread(target=lambda: result.append(_bare_generate(loaded, text_in, tokens, seed)))
    worker.start()
    worker.join()
    return result[0]


def _bare_generate(loaded, text_in: str, tokens: int, seed: int) -> dict[str, float]:
    """transformers' generate with a minimal hook to time the first new token."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:  # the first call carries the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    inputs = loaded.tokenizer(text_in, return_tensors="pt", add_special_tokens=not loaded.is_chat).to(loaded.device)
    timer = FirstToken()
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True,
                                    temperature=0.8, top_p=0.95, top_k=50, streamer=timer,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    seconds = time.perf_counter() - started
    new = out.shape[1] - inputs["input_ids"].shape[1]
    return {"tokens": new, "seconds": seconds, "ttft": (timer.first or time.perf_counter()) - started}


PATHS = {"batched": "on", "threads": "off"}  # label -> --batching


def batching(studio, label: str):
    """Run Studio.write with batching on or off (the page reads the same setting per draft)."""
    return setting(studio, "batching", PATHS[label])


@contextmanager
def metrics_off(studio):
    """Stream as --metrics off does: nothing recorded per chunk, per step or per commit."""
    from studio.metrics import Metrics

    engine = studio.pool.load().engine
    saved = studio.drafts.metrics, studio.sessions.on_commit, engine.on_step if engine else None
    studio.drafts.metrics, studio.sessions.on_commit = Metrics(enabled=False), None
    if engine:
        engine.on_step = None
    try:
        yield
    finally:
        studio.drafts.metrics, studio.sessions.on_commit = saved[0], saved[1]
        if engine:
            engine.on_step = saved[2]


def single_writer(studio, tokens: int, repeats: int) -> dict[str, Any]:
    loaded = studio.pool.load()
    template = studio.catalog.get(PROMPT_TEMPLATE)
    text_in = model_input(loaded, template.render(), template.system)
    runs: dict[str, list] = {"bare": [], **{label: [] for label in PATHS}, "metrics_off": []}
    bare_generate(loaded, text_in, 8, seed=0)  # warm-up, every path
    for label in PATHS:
        with batching(studio, label):
            studio_stream(studio, 8, 0)
    for i in range(repeats):  # interleaved, so drift on the machine hits every path alike
        runs["bare"].append(bare_generate(loaded, text_in, tokens, seed=i))
        for label in PATHS:
            with batching(studio, label):
                runs[label].append(studio_stream(studio, tokens, seed=i))
        with metrics_off(studio):  # the page's path without metrics: what they cost
            runs["metrics_off"].append(studio_stream(studio, tokens, seed=i))

    def rate(label):
        return statistics.median(r["tokens"] / r["seconds"] for r in runs[label])

    figures: dict[str, Any] = {}
    for label in runs:
        figures[label] = {"tokens_per_s": rate(label), "ttft_s": statistics.median(r["ttft"] for r in runs[label]),
                          "ratio": rate(label) / rate("bare")}
    figures["ratio"] = figures[studio_path(studio)]["ratio"]  # the target: the path the page uses
    # Metrics on (the page's path as it runs) against off: 1.00 when they cost nothing.
    figures["metrics_on_off"] = rate(studio_path(studio)) / rate("metrics_off")
    return figures


def studio_path(studio) -> str:
    return next(label for label, value in PATHS.items() if value == studio.settings.batching)


def concurrent_writers(studio, writers: int, tokens: int, label: str) -> dict[str, Any]:
    with batching(studio, label):
        return writers_at_once(studio, writers, tokens) | {"path": label}


def training_figures(studio, draft_ids: list[int], tokens: int, drafts: int = TRAINING_DRAFTS) -> dict[str, Any]:
    """Rate the benchmark's drafts, train in a child process, and stream while it trains."""
    draft_ids = draft_ids[:drafts]
    while len(draft_ids) < drafts:  # a short benchmark may not have written enough
        draft_ids.append(studio_stream(studio, tokens, seed=400 + len(draft_ids))["draft_id"])
    for draft_id in draft_ids:
        studio.drafts.rate(draft_id, 5, user=studio.settings.user)
    idle_runs = [studio_stream(studio, tokens, seed=500 + i) for i in range(2)]
    idle = statistics.median(r["tokens"] / r["seconds"] for r in idle_runs)
    run_id, _ = studio.versions.train("cli", user=OPERATOR)
    process = subprocess.Popen(
        [*train_command(studio.settings, run_id), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env=child_environment(studio.settings),
    )
    while "Training: step" not in studio.versions.runs()[0]["message"] and process.poll() is None:
        time.sleep(0.2)
    during = []
    while process.poll() is None and "Training: step" in studio.versions.runs()[0]["message"]:
        r = studio_stream(studio, tokens, seed=600 + len(during))
        during.append(r["tokens"] / r["seconds"])
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"The training run failed:\n{err[-2000:]}")
    summary = json.loads(out)
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "train_tokens_per_s": summary.get("train_tokens_per_second", float("nan")),
        "train_seconds": summary.get("train_seconds", float("nan")),
        "idle_serving_tokens_per_s": idle,
        "serving_while_training_tokens_per_s": statistics.median(during) if during else float("nan"),
        "streams_during_training": len(during),
        "training_drafts": len(draft_ids),
        "ratio": (statistics.median(during) / idle) if during else float("nan"),
        "trainer_peak_rss_mb": child,
        "gate": summary.get("decision"),
    }


def memory() -> dict[str, float]:
    import torch

    figures = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        figures["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return figures


def run(settings: Settings, tokens: int, writers: list[int], repeats: int, training_drafts: int,
        quantization: bool = True, peer: str = "") -> dict[str, Any]:
    from studio.core.studio import Studio

    settings.engine = "transformers"  # sections 1-6; section 7 switches to llama.cpp
    studio = Studio(settings)
    loaded = studio.pool.load()
    report: dict[str, Any] = {"model": settings.model, "device": loaded.device, "tokens": tokens}
    report["path"] = studio_path(studio)
    report["single"] = single_writer(studio, tokens, repeats)
    report["decode_bound"] = decode_bound(loaded, report["single"][report["path"]]["tokens_per_s"])
    # Each writer count on both paths one after the other, so drift on the machine hits both alike.
    report["concurrent"] = [concurrent_writers(studio, n, tokens, label) for n in writers for label in PATHS]
    one = {c["path"]: c for c in report["concurrent"] if c["writers"] == 1}
    for c in report["concurrent"]:  # the targets are ratios against one writer on the same path
        base = one.get(c["path"])
        c["aggregate_x1"] = c["aggregate_tokens_per_s"] / base["aggregate_tokens_per_s"] if base else float("nan")
        c["p95_gap_x1"] = c["p95_gap_s"] / base["p95_gap_s"] if base else float("nan")
    ids = [d for c in report["concurrent"] for d in c.pop("draft_ids")]  # all written by the unquantised model
    report["cpu"] = cpu_figures(studio, tokens, repeats, peer=peer, draft_ids=tuple(ids))
    if quantization:  # before training, which may promote another version
        report["quantization"] = quantization_figures(studio, ids, tokens)
    if training_drafts:
        report["training"] = training_figures(studio, ids, tokens, training_drafts)
    report["memory"] = memory()
    return report


def print_table(report: dict[str, Any]) -> None:
    s = report["single"]
    print(f"\nmodel {report['model']} on {report['device']}, {report['tokens']} new tokens per draft\n")
    print(f"{'path (one writer)':<36}{'tokens/s':>10}{'TTFT s':>10}{'x bare':>8}")
    names = {"bare": "bare model.generate", "batched": "studio streaming, batching on",
             "threads": "studio streaming, batching off", "metrics_off": f"... {report['path']}, metrics off"}
    for label, name in names.items():
        f = s[label]
        print(f"{name:<36}{f['tokens_per_s']:>10.1f}{f['ttft_s']:>10.3f}{f['ratio']:>8.2f}")
    print(f"streaming / bare on the page's path ({report['path']}) = {s['ratio']:.2f}  (target >= 0.95)")
    print(f"metrics on / off on that path = {s['metrics_on_off']:.2f}  (1.00: they cost nothing)")
    print_bound(report["decode_bound"])
    print()
    print_cpu(report["cpu"], s[report["path"]]["tokens_per_s"])
    print(f"{'writers':>8}  {'path':<9}{'aggregate t/s':>14}{'per-writer t/s':>16}{'p50 TTFT s':>12}"
          f"{'p95 TTFT s':>12}{'p95 gap s':>11}{'agg x1':>8}{'gap x1':>8}")
    for c in report["concurrent"]:
        agg, gap = c["aggregate_x1"], c["p95_gap_x1"]
        print(f"{c['writers']:>8}  {c['path']:<9}{c['aggregate_tokens_per_s']:>14.1f}"
              f"{c['per_writer_tokens_per_s']:>16.1f}{c['p50_ttft_s']:>12.3f}{c['p95_ttft_s']:>12.3f}"
              f"{c['p95_gap_s']:>11.3f}{agg:>8.2f}{gap:>8.2f}")
    print("x1 = against one writer on the same path. Targets at 8 writers: aggregate >= 3x one writer on CPU "
          "(6x on GPU), p95 gap <= 3x")
    for c in report["concurrent"]:
        if c["writers"] == 8:
            print(f"  8 writers, {c['path']:<8}: aggregate {c['aggregate_x1']:.2f}x, p95 gap {c['p95_gap_x1']:.2f}x")
    print()
    if "quantization" in report:
        print_quantization(report["quantization"])
    if "training" in report:
        t = report["training"]
        print(f"training on {t['training_drafts']} rated drafts: {t['train_tokens_per_s']:.0f} tokens/s over "
              f"{t['train_seconds']:.0f} s (gate: {t['gate']}); trainer peak RSS {t['trainer_peak_rss_mb']:.0f} MB")
        print(f"serving: idle {t['idle_serving_tokens_per_s']:.1f} tokens/s, while training "
              f"{t['serving_while_training_tokens_per_s']:.1f} tokens/s = {t['ratio']:.2f}x (target >= 0.5)\n")
    m = report["memory"]
    print("memory: peak RSS {:.0f} MB{}".format(
        m["peak_rss_mb"], f", peak GPU {m['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in m else ""))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="python -m studio.bench", description=__doc__.splitlines()[0])
    add_arguments(parser, only=("model", "device", "batching", "max_batch"))
    parser.add_argument("--tokens", type=int, default=64, help="New tokens per draft.")
    parser.add_argument("--writers", default="1,4,8,16", help="Comma-separated writer counts (start with 1).")
    parser.add_argument("--repeats", type=int, default=5, help="Single-writer repeats per path (the median is kept).")
    parser.add_argument("--training-drafts", type=int, default=TRAINING_DRAFTS,
                        help="Rated drafts the training run learns from (0 skips the training figures).")
    parser.add_argument("--no-training", action="store_true", help="Skip the training figures.")
    parser.add_argument("--no-quantization", action="store_true", help="Skip the quantised serving figures.")
    parser.add_argument("--peer", default="", help="llama-server to compare with (default: $LLAMA_SERVER, then "
                                                   "llama-server on the PATH; none: that section is skipped).")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="Where to write the figures.")
    args = parser.parse_args(argv)
    writers = [int(n) for n in args.writers.split(",")]
    if args.training_drafts and args.training_drafts < 8:  # the split needs 4 to train on and 2 held out
        parser.error("--training-drafts must be 0 or at least 8.")
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as scratch:
        settings = scratch_settings(settings_from(args), Path(scratch))
        report = run(settings, args.tokens, writers, args.repeats, 0 if args.no_training else args.training_drafts,
                     quantization=not args.no_quantization, peer=args.peer)
    print_table(report)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
