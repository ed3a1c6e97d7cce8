"""The run's sampling benchmark: `python -m studio.bench sampling`.

A training run writes drafts (the teacher's picks, both versions' gate samples) and scores drafts
(held-out ratings, the base model reading both versions' drafts); on a CPU these take as long as
training itself. Most of them are many drafts of a few prompts. This times, side by side in one
process on the same model and prompts, the way a run does each now against the way it did before:
drafts written in one batch with each prompt run once for all its drafts, against once per draft;
drafts scored with each prompt read once and its drafts continuing from its cache, against each
draft read whole (both in batched passes). Each way runs twice, interleaved, so a busy machine slows
both alike.
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
    ways = {
        "drafts in one batch, each prompt run once": lambda: samples.write_drafts(
            model, tokenizer, requests, args.drafts, chat=chat),
        "drafts in one batch, each draft's prompt run": lambda: samples.write_drafts(
            model, tokenizer, requests, args.drafts, chat=chat, share_prompts=False),
    }
    scorings = {"scored, each prompt read once": True, "scored, each draft read whole": False}
    seconds: dict[str, list[float]] = {name: [] for name in [*ways, *scorings]}
    written: dict[str, list[list[tuple[str, bool]]]] = {}
    for _ in range(2):
        for name, way in ways.items():
            started = time.perf_counter()
            written[name] = way()
            seconds[name].append(time.perf_counter() - started)
    first = next(iter(ways))
    drafts = [Example(n, r["model_input"], r["prompt"], text, 0, "", r["template_id"], ended=ended)
              for n, (r, (text, ended)) in enumerate((r, d) for r, group in zip(requests, written[first]) for d in group)]
    perplexities = {}
    for _ in range(2):
        for name, share in scorings.items():
            started = time.perf_counter()
            scores = likelihood.score(model, tokenizer, drafts, 512, share_contexts=share)
            seconds[name].append(time.perf_counter() - started)
            perplexities[name] = likelihood.perplexity(scores, list(scores))
    best = {name: min(times) for name, times in seconds.items()}
    return {"model": args.model, "drafts": args.drafts, "prompts": len(requests), "tokens": args.tokens,
            "seconds": best, "perplexity": perplexities,
            # Rounding differs with the batch's shape, so a sampled token may rarely differ where two were near-equal.
            "same_drafts": _same_share(written[first], written["drafts in one batch, each draft's prompt run"]),
            "writing_speedup": best["drafts in one batch, each draft's prompt run"] / best[first],
            "scoring_speedup": best["scored, each draft read whole"] / best["scored, each prompt read once"]}


def _same_share(one: list[list[tuple[str, bool]]], other: list[list[tuple[str, bool]]]) -> float:
    pairs = [(a, b) for group_a, group_b in zip(one, other) for a, b in zip(group_a, group_b)]
    return sum(a == b for a, b in pairs) / len(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.bench sampling", description=__doc__.splitlines()[0])
    settings = settings_from()
    parser.add_argument("--model", default=settings.model, help="The model a run samples with ('embedded' by default).")
    parser.add_argument("--data-dir", default=settings.data_dir, help="Where the converted model is kept.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    parser.add_argument("--drafts", type=int, default=48, help="Drafts written, as a run's gate writes per version.")
    parser.add_argument("--prompts", type=int, default=4, choices=range(1, len(TEMPLATES) + 1), metavar="1-8",
                        help="Prompts (a template each), as a run's gate has.")
    parser.add_argument("--tokens", type=int, default=160, help="New tokens per draft (a run's samples take their prompt's own limit).")
    parser.add_argument("--json", default="sampling-results.json", help="Where to write the figures.")
    args = parser.parse_args(argv)
    if args.drafts < args.prompts or args.tokens < 1:
        parser.error(f"--drafts must be at least --prompts ({args.prompts}) and --tokens at least 1.")
    report = run(args)
    for name, value in report["seconds"].items():
        figure = f", perplexity {report['perplexity'][name]:.4f}" if name in report["perplexity"] else ""
        print(f"{args.drafts} {name}: {value:.1f} s{figure}")
    print(f"each prompt run once: writing x{report['writing_speedup']:.2f}, scoring x{report['scoring_speedup']:.2f} "
          f"(best of two runs each, interleaved); the same drafts both ways: {report['same_drafts']:.0%}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")
    return 0
