"""The trainer benchmark: `python -m studio.bench learning (--trait REGEX | --category W1,... | --rater NAME)
[--template flash_fiction] [--pool 192] [--liked 14] [--disliked 47] [--disliked-per-liked 0,2]
[--seeds 2] [--kto-beta B]`

Does a run's trainer, alone, teach the model what a writer rated? No judge, no gate, no database:
the model writes --pool drafts of one template, the synthetic writer (raters.py) rates them, and
--liked of its liked drafts and --disliked of the others (a round's ratings and picks: the loop
benchmark's third round had 6 liked and 39 disliked ratings and 8 picks a side) train a run's
KTO LoRA, once per --disliked-per-liked (the run's kto_disliked_per_liked: 0 trains them all) and
LoRA seed, each from the same base. Each trained model then writes --fresh drafts with seeds no
rated draft used; the share the writer likes against the base's on the same seeds is what a writer
would notice, and the base's perplexity of them (fluency) and their distinct-2 against the base's
say what it cost. The arms train on the same drafts, one after another in one process, so a busy
machine slows them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from studio.bench.raters import Rater, Written, add_taste_arguments, rater_from
from studio.config import settings_from

POOL_SEED, FRESH_SEED = 10_000, 1_000_000  # as the loop benchmark's first round and its fresh drafts


def request_for(loaded, template_id: str, fields: dict[str, str], tokens: int, seed: int) -> dict[str, Any]:
    """What a run writes again: the template's prompt for these fields, as the model reads it, and its sampler."""
    from studio.core.templates import TemplateCatalog
    from studio.serving.generation import model_input

    template = TemplateCatalog.load().get(template_id)
    prompt = template.render(fields)
    return {"draft_id": 0, "template_id": template_id, "prompt": prompt,
            "model_input": model_input(loaded, prompt, template.system),
            "sampler": template.sampler.updated({"max_new_tokens": tokens, "seed": seed}).to_dict()}


def write(model, loaded, request: dict[str, Any], count: int) -> list[Written]:
    from studio.learning.samples import write_drafts

    return [Written(text, ended) for text, ended in write_drafts(model, loaded.tokenizer, [request], count,
                                                                 chat=loaded.is_chat)[0]]


def measure(model, loaded, request: dict[str, Any], drafts: list[Written], rater: Rater) -> dict[str, Any]:
    from studio.learning.samples import fluency
    from studio.text import distinct_2

    # The base reads the drafts: how naturally they read.
    with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
        perplexity = fluency(model, loaded.tokenizer, [request], [[d.text for d in drafts]], 512)
    return {"liked": rater.share(drafts), "fluency": perplexity, "distinct_2": distinct_2([d.text for d in drafts])}


def training_drafts(request: dict[str, Any], pool: list[Written], rater: Rater, liked: int, disliked: int,
                    seed: int) -> list:
    """liked of the pool's liked drafts (5 stars) and disliked of the others (1 star), drawn by seed."""
    from studio.learning.dataset import Example

    up = [d for d in pool if rater.likes(d)]
    down = [d for d in pool if not rater.likes(d)]
    random.Random(seed).shuffle(up)
    random.Random(seed).shuffle(down)
    if len(up) < liked or len(down) < disliked:
        raise ValueError(f"The pool of {len(pool)} drafts has {len(up)} the writer likes and {len(down)} it does not: "
                         f"fewer than --liked {liked} or --disliked {disliked}. Give a larger --pool.")
    chosen = [(d, 5) for d in up[:liked]] + [(d, 1) for d in down[:disliked]]
    return [Example(n + 1, request["model_input"], request["prompt"], d.text, stars, "", request["template_id"],
                    ended=d.ended) for n, (d, stars) in enumerate(chosen)]


def fit(loaded, examples: list, ratio: float, seed: int, steps: int | None, beta: float) -> tuple[Any, int, float]:
    """A run's KTO LoRA on these drafts, kept in proportion as a run keeps them: the trained model,
    how many disliked drafts it trained on, and the seconds it took."""
    from studio.learning import finetune
    from studio.learning.config import TrainingConfig
    from studio.learning.plan import in_proportion

    def liked(e) -> bool:
        return e.stars >= 4

    fixed = {} if steps is None else {"kto_steps": steps, "kto_max_steps": steps}  # None: as a run chooses
    config = TrainingConfig(seed=seed, kto_disliked_per_liked=ratio, kto_beta=beta, **fixed)
    kept = in_proportion(examples, liked, ratio)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="studio-learning-bench-") as scratch:
        model, _, _ = finetune.train_kto_adapter(copy.deepcopy(loaded.model), loaded.tokenizer, kept, liked, config,
                                                 Path(scratch), lambda *_: None)
    return model, sum(not liked(e) for e in kept), time.perf_counter() - started


def run(args: argparse.Namespace, rater: Rater) -> dict[str, Any]:
    from studio.serving.models import load_model

    loaded = load_model(args.model, Path(args.data_dir), "cpu" if args.device == "cpu" else "auto")
    pool_request = request_for(loaded, args.template, dict(args.fields), args.tokens, POOL_SEED)
    fresh_request = {**pool_request, "sampler": {**pool_request["sampler"], "seed": FRESH_SEED}}
    pool = write(loaded.model, loaded, pool_request, args.pool)
    examples = training_drafts(pool_request, pool, rater, args.liked, args.disliked, seed=0)
    base = measure(loaded.model, loaded, fresh_request, write(loaded.model, loaded, fresh_request, args.fresh), rater)
    arms = []
    for ratio in args.disliked_per_liked:
        for seed in range(args.seeds):
            model, disliked, seconds = fit(loaded, examples, ratio, seed, args.steps, args.kto_beta)
            figures = measure(model, loaded, fresh_request, write(model, loaded, fresh_request, args.fresh), rater)
            arms.append({"disliked_per_liked": ratio, "seed": seed, "trained_liked": args.liked,
                         "trained_disliked": disliked, "train_seconds": seconds, **figures,
                         "x_liked": figures["liked"] / base["liked"] if base["liked"] else None,
                         "diversity_vs_base": figures["distinct_2"] / (base["distinct_2"] or 1.0)})
    return {"rater": rater.name, "template": args.template, "model": args.model, "pool": len(pool),
            "pool_liked": rater.share(pool), "fresh": args.fresh, "steps": args.steps, "kto_beta": args.kto_beta,
            "base": base, "arms": arms,
            "by_ratio": {str(r): {key: statistics.fmean(a[key] for a in arms if a["disliked_per_liked"] == r)
                                  for key in ("liked", "fluency", "distinct_2")} for r in args.disliked_per_liked}}


def ratios(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of numbers, each at least 0")
    return values


def print_report(report: dict[str, Any]) -> None:
    base = report["base"]
    print(f"{report['rater']}, {report['template']}: {report['pool_liked']:.0%} of {report['pool']} base drafts "
          f"liked; of {report['fresh']} fresh drafts the base writes {base['liked']:.0%} liked, fluency "
          f"{base['fluency']:.1f}, distinct-2 {base['distinct_2']:.3f}")
    for arm in report["arms"]:
        times = f"x{arm['x_liked']:.2f}" if arm["x_liked"] is not None else "base wrote none"
        print(f"  {arm['disliked_per_liked']:g} disliked per liked (trained {arm['trained_liked']} liked, "
              f"{arm['trained_disliked']} disliked), seed {arm['seed']}: {arm['liked']:.0%} liked ({times}), "
              f"fluency {arm['fluency']:.1f}, distinct-2 {arm['diversity_vs_base']:.2f} of the base's, "
              f"{arm['train_seconds']:.0f} s")
    for ratio, mean in report["by_ratio"].items():
        print(f"  mean at {float(ratio):g} disliked per liked: {mean['liked']:.0%} liked, "
              f"fluency {mean['fluency']:.1f}, distinct-2 {mean['distinct_2']:.3f}")


def main(argv: list[str] | None = None) -> int:
    from studio.__main__ import parse_fields
    from studio.learning.config import TrainingConfig

    parser = argparse.ArgumentParser(prog="python -m studio.bench learning", description=__doc__.splitlines()[0])
    settings = settings_from()
    add_taste_arguments(parser)
    parser.add_argument("--model", default=settings.model, help="The model a run trains ('embedded' by default).")
    parser.add_argument("--data-dir", default=settings.data_dir, help="Where the converted model is kept.")
    parser.add_argument("--device", default="auto", help="auto or cpu.")
    parser.add_argument("--template", default="flash_fiction", help="The template the drafts answer.")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="A field value; repeat.")
    parser.add_argument("--tokens", type=int, default=96, help="New tokens per draft.")
    parser.add_argument("--pool", type=int, default=192, help="Base drafts written and rated.")
    parser.add_argument("--liked", type=int, default=14, help="Liked drafts trained on.")
    parser.add_argument("--disliked", type=int, default=47, help="Disliked drafts offered to the trainer.")
    parser.add_argument("--disliked-per-liked", type=ratios, default=[0.0, 2.0],
                        help="Comma-separated: the run's kto_disliked_per_liked of each arm (0: every disliked draft).")
    parser.add_argument("--seeds", type=int, default=2, help="LoRA seeds per arm.")
    parser.add_argument("--steps", type=int, default=None,
                        help="KTO steps per fit (by default as a run chooses: kto_steps, more for many drafts).")
    parser.add_argument("--kto-beta", type=float, default=TrainingConfig.kto_beta, help="A run's kto_beta.")
    parser.add_argument("--fresh", type=int, default=96, help="Fresh drafts each model writes to be measured.")
    parser.add_argument("--json", type=Path, default=Path("learning-results.json"), help="Where to write the figures.")
    args = parser.parse_args(argv)
    try:
        rater = rater_from(args)
        args.fields = parse_fields(args.field)
    except re.error as exc:
        parser.error(f"--trait is not a regular expression: {exc}")
    except ValueError as exc:
        parser.error(str(exc))
    if args.kto_beta <= 0:
        parser.error("--kto-beta must be above 0.")
    if min(args.tokens, args.liked, args.disliked, args.seeds, 1 if args.steps is None else args.steps, args.fresh) < 1 or \
            args.pool < args.liked + args.disliked:
        parser.error("--tokens, --liked, --disliked, --seeds, --steps and --fresh must be at least 1, and --pool at "
                     "least --liked plus --disliked.")
    try:
        report = run(args, rater)
    except ValueError as exc:
        parser.error(str(exc))
    print_report(report)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"figures written to {args.json}")
    return 0
