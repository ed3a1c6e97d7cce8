"""The run's sampling benchmark: `python -m studio.bench sampling`.

A training run writes drafts (the teacher's picks, both versions' gate samples) and scores drafts
(held-out ratings, the base model reading both versions' drafts); on a CPU these take as long as
training itself. This times, side by side in one process on the same model and prompts, the way a
run does each now against the way it did before: all prompts' drafts in one batch of the serving
engine against a generate() call per prompt, and drafts scored in batched passes against one at a
time. Each way runs twice, interleaved, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from studio.config import settings_from

TEMPLATES = ("flash_fiction", "fantasy", "mystery", "romance", "horror", "science_fiction", "fairy_tale", "poetry")


def requests_for(loaded, prompts: int, tokens: int) -> list[dict[str, Any]]:
    """One request per template (its default fields), as a run's requests look: prompt, model input, sampler."""
    from studio.core.templates import TemplateCatalog
    from studio.serving.generation import model_input

    catalog = TemplateCatalog.load()
    requests = []
    for index, template_id in enumerate(TEMPLATES[:prompts]):
        template = catalog.get(template_id)
        prompt = template.render()
        sampler = template.sampler.updated({"max_new_tokens": tokens, "seed": 1_000 + index})
        requests.append({"draft_id": index, "template_id": template_id, "prompt": prompt,
                         "model_input": model_input(loaded, prompt, template.system), "sampler": sampler.to_dict()})
    return requests


def run(args: argparse.Namespace) -> dict[str, Any]:
    from studio.learning import likelihood, samples
    from studio.learning.dataset import Example
    from studio.serving.models import load_model

    loaded = load_model(args.model, Path(args.data_dir), args.device)
    model, tokenizer, chat = loaded.model, loaded.tokenizer, loaded.is_chat
    requests = requests_for(loaded, args.prompts, args.tokens)
    counts = [args.drafts // len(requests) + (i < args.drafts % len(requests)) for i in range(len(requests))]
    ways = {
        "drafts in one batch": lambda: samples.write_drafts(model, tokenizer, requests, args.drafts, chat=chat),
        "drafts by a generate() call per prompt": lambda: [
            samples._write_one_prompt(model, tokenizer, r, n, chat=chat) for r, n in zip(requests, counts)],
    }
    seconds: dict[str, list[float]] = {name: [] for name in [*ways, "scored in batched passes", "scored one at a time"]}
    written: list[list[tuple[str, bool]]] = []
    for _ in range(2):
        for name, way in ways.items():
            started = time.perf_counter()
            written = way()
            seconds[name].append(time.perf_counter() - started)
    drafts = [Example(n, r["model_input"], r["prompt"], text, 0, "", r["template_id"], ended=ended)
              for n, (r, (text, ended)) in enumerate((r, d) for r, group in zip(requests, written) for d in group)]
    budget, perplexities = likelihood.SCORE_BATCH_TOKENS, {}
    try:
        for _ in range(2):
            for name, tokens in (("scored in batched passes", budget), ("scored one at a time", 1)):
                likelihood.SCORE_BATCH_TOKENS = tokens
                started = time.perf_counter()
                scores = likelihood.score(model, tokenizer, drafts, 512)
                seconds[name].append(time.perf_counter() - started)
                perplexities[name] = likelihood.perplexity(scores, list(scores))
    finally:
        likelihood.SCORE_BATCH_TOKENS = budget
    best = {name: min(times) for name, times in seconds.items()}
    return {"model": args.model, "drafts": args.drafts, "prompts": len(requests), "tokens": args.tokens,
            "seconds": best, "perplexity": perplexities,
            "writing_speedup": best["drafts by a generate() call per prompt"] / best["drafts in one batch"],
            "scoring_speedup": best["scored one at a time"] / best["scored in batched passes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.bench sampling", description=__doc__.splitlines()[0])
    settings = settings_from()
    parser.add_argument("--model", default=settings.model, help="The model a run samples with ('embedded' by default).")
    parser.add_argument("--data-dir", default=settings.data_dir, help="Where the converted model is kept.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    parser.add_argument("--drafts", type=int, default=48, help="Drafts written, as a run's gate writes per version.")
    parser.add_argument("--prompts", type=int, default=4, choices=range(1, len(TEMPLATES) + 1), metavar="1-8",
                        help="Prompts (a template each), as a run's gate has.")
    parser.add_argument("--tokens", type=int, default=160, help="New tokens per draft (a run caps its samples at 160).")
    parser.add_argument("--json", default="sampling-results.json", help="Where to write the figures.")
    args = parser.parse_args(argv)
    if args.drafts < args.prompts or args.tokens < 1:
        parser.error(f"--drafts must be at least --prompts ({args.prompts}) and --tokens at least 1.")
    report = run(args)
    for name, value in report["seconds"].items():
        figure = f", perplexity {report['perplexity'][name]:.4f}" if name in report["perplexity"] else ""
        print(f"{args.drafts} {name}: {value:.1f} s{figure}")
    print(f"writing in one batch: x{report['writing_speedup']:.2f}; scoring in batched passes: "
          f"x{report['scoring_speedup']:.2f} (best of two runs each, interleaved)")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")
    return 0
