"""The run's training benchmark: `python -m studio.bench training`.

A run's KTO training (the reference model's pass over every row, then the optimisation steps) is
half of a run's time on a CPU, and it is bound by matrix products. This trains the same LoRA on the
same drafts, side by side in one process, in float32 and in bf16 mixed precision (autocast: the
adapter's weights and the optimiser stay float32), each --repeats times, interleaved, so a busy machine slows
both alike; it prints each one's time, tokens a second, the ratio, and both loss curves (which
should stay close). The drafts are ones the model writes of the templates' default prompts, liked
when the model ended them, so their lengths are a run's. Which precision a run uses by default is
`trains_in_bf16("auto")`: bf16 on CUDA and on CPUs that compute it natively.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from studio.config import settings_from

PRECISIONS = ("fp32", "bf16")


def drafts_for(loaded, prompts: int, drafts: int, tokens: int) -> list:
    """Drafts the model writes now, rated as a writer who likes a draft the model ended would rate them."""
    from studio.bench.sampling import requests_for
    from studio.learning import samples
    from studio.learning.dataset import Example

    requests = requests_for(loaded, prompts, tokens)
    written = samples.write_drafts(loaded.model, loaded.tokenizer, requests, drafts, chat=loaded.is_chat)
    return [Example(n, r["model_input"], r["prompt"], text, 5 if ended else 1, "", r["template_id"], ended=ended)
            for n, (r, (text, ended)) in enumerate((r, d) for r, group in zip(requests, written) for d in group)]


def fit(loaded, drafts: list, steps: int, precision: str) -> dict[str, Any]:
    from studio.learning import finetune
    from studio.learning.config import TrainingConfig

    config = TrainingConfig(kto_steps=steps, kto_max_steps=steps, precision=precision).resolved("kto")
    model = copy.deepcopy(loaded.model)  # each fit starts from the same weights
    with tempfile.TemporaryDirectory(prefix="studio-training-bench-") as scratch:
        started = time.perf_counter()
        _, curve, figures = finetune.train_kto_adapter(model, loaded.tokenizer, drafts, lambda e: e.stars >= 4, config,
                                                       Path(scratch), lambda *_: None)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "steps_seconds": figures["train_seconds"], "tokens": figures["train_tokens"],
            "loss": [round(p["loss"], 4) for p in curve if p["split"] == "train"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from studio.learning.finetune import trains_in_bf16
    from studio.serving.models import load_model

    loaded = load_model(args.model, Path(args.data_dir), "cpu" if args.device == "cpu" else "auto")
    drafts = drafts_for(loaded, args.prompts, args.drafts, args.tokens)
    fits: dict[str, list[dict[str, Any]]] = {p: [] for p in PRECISIONS}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            fits[precision].append(fit(loaded, drafts, args.steps, precision))
    best = {p: min(fits[p], key=lambda f: f["seconds"]) for p in PRECISIONS}
    return {"model": args.model, "drafts": len(drafts), "liked": sum(d.stars >= 4 for d in drafts), "steps": args.steps,
            "device": loaded.device, "auto_uses_bf16": trains_in_bf16("auto"), "fits": fits,
            "seconds": {p: best[p]["seconds"] for p in PRECISIONS},
            "tokens_per_second": {p: best[p]["tokens"] / best[p]["steps_seconds"] for p in PRECISIONS},
            "speedup": best["fp32"]["seconds"] / best["bf16"]["seconds"],
            "loss": {p: best[p]["loss"] for p in PRECISIONS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.bench training", description=__doc__.splitlines()[0])
    settings = settings_from()
    parser.add_argument("--model", default=settings.model, help="The model a run trains ('embedded' by default).")
    parser.add_argument("--data-dir", default=settings.data_dir, help="Where the converted model is kept.")
    parser.add_argument("--device", default="auto", help="auto or cpu.")
    parser.add_argument("--drafts", type=int, default=32, help="Drafts written and trained on.")
    parser.add_argument("--prompts", type=int, default=4, help="Prompts (a template each) the drafts answer.")
    parser.add_argument("--tokens", type=int, default=150, help="New tokens per draft at most.")
    parser.add_argument("--steps", type=int, default=8, help="KTO steps per fit (a run takes 32).")
    parser.add_argument("--repeats", type=int, default=2, help="Fits per precision, interleaved; the best counts.")
    parser.add_argument("--json", default="training-results.json", help="Where to write the figures.")
    args = parser.parse_args(argv)
    if args.drafts < args.prompts or args.prompts < 1 or args.tokens < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--drafts must be at least --prompts, and --prompts, --tokens, --steps and --repeats at least 1.")
    report = run(args)
    print(f"{report['drafts']} drafts ({report['liked']} liked: the model ended them), {args.steps} KTO steps on {report['device']}, "
          f"best of {args.repeats} fits each, interleaved:")
    for precision in PRECISIONS:
        print(f"  {precision}: {report['seconds'][precision]:.1f} s in all (reference pass and steps), "
              f"{report['tokens_per_second'][precision]:.0f} training tokens/s; loss {report['loss'][precision]}")
    print(f"bf16 mixed precision: x{report['speedup']:.2f} the float32 speed; a run's default here: "
          f"{'bf16' if report['auto_uses_bf16'] else 'fp32'}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")
    return 0
