"""The token-choosing benchmark: `python -m studio.bench choosing`.

After each forward pass the batch engine chooses every draft's next token with that draft's own
settings and seed (studio/serving/batch_sampling.py), exactly as generate() would for the draft
alone. This times, side by side in one process on the same logits, the engine's choose() against
each row alone through transformers' own processors and draw (generate()'s per-draft path, which
the engine must match), and checks that both draw the same tokens. Each way runs in turns,
interleaved, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _alone(sampler, ids, row) -> int:
    """One row as generate() chooses for it: the sampler's processors, softmax, its generator's draw."""
    import torch

    if sampler.penalty is not None:
        row = sampler.penalty(ids, row)
    if not sampler.do_sample:
        return int(row.argmax(-1))
    return int(torch.multinomial(torch.softmax(sampler.warpers(None, row), dim=-1), 1, generator=sampler.generator))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from studio.serving.batch_sampling import RowSampler, choose
    from studio.serving.sampling import SamplerSettings

    torch.manual_seed(0)
    settings = [SamplerSettings(seed=seed, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                repetition_penalty=args.repetition_penalty) for seed in range(args.rows)]
    # Logits as spread as a small model's (a standard deviation of about 3), and a draft's tokens so far.
    steps = [torch.randn(args.rows, args.vocab) * 3 for _ in range(args.steps)]
    ids = [torch.randint(0, args.vocab, (1, args.context)) for _ in range(args.rows)]
    ways = {
        "choose(): the batch at once": lambda samplers, logits: choose(samplers, ids, logits),
        "each row alone, as generate()": lambda samplers, logits: [
            _alone(s, ids[i], logits[i:i + 1]) for i, s in enumerate(samplers)],
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    drawn: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):
        for name, way in ways.items():
            samplers = [RowSampler(s, "cpu") for s in settings]  # each way from the same seeds
            started = time.perf_counter()
            drawn[name] = [way(samplers, logits.clone()) for logits in steps]
            seconds[name].append((time.perf_counter() - started) / args.steps)
    best = {name: min(times) for name, times in seconds.items()}
    batched, alone = ways
    return {"rows": args.rows, "vocab": args.vocab, "steps": args.steps, "threads": torch.get_num_threads(),
            "seconds_per_step": best, "speedup": best[alone] / best[batched], "same_tokens": drawn[batched] == drawn[alone]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.bench choosing", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48, help="Drafts in the batch (a run's gate writes 48 a version).")
    parser.add_argument("--vocab", type=int, default=49152, help="Vocabulary size (the embedded model's: 49152).")
    parser.add_argument("--context", type=int, default=150, help="Tokens each draft has so far (the penalty reads them).")
    parser.add_argument("--steps", type=int, default=20, help="Steps timed in each turn.")
    parser.add_argument("--repeats", type=int, default=3, help="Turns of each way, interleaved; the best counts.")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.92)
    parser.add_argument("--repetition-penalty", type=float, default=1.15)
    parser.add_argument("--json", default="choosing-results.json", help="Where to write the figures.")
    args = parser.parse_args(argv)
    if min(args.rows, args.vocab, args.context, args.steps, args.repeats) < 1:
        parser.error("--rows, --vocab, --context, --steps and --repeats must be at least 1.")
    report = run(args)
    for name, value in report["seconds_per_step"].items():
        print(f"{args.rows} rows, {name}: {value * 1000:.1f} ms a step")
    print(f"choose() x{report['speedup']:.2f} on {report['threads']} threads (best of {args.repeats} turns each, "
          f"interleaved); the same tokens both ways: {report['same_tokens']}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")
    return 0
