"""Random studios: how often does a studio whose ratings mean nothing ever promote a version?

`python -m studio.bench studios [--studios 20] [--rounds 8] [--drafts 48] [--liked-share 0.3]
[--template fantasy] [--tokens 96] [--json studios-results.json]`

The base model writes a pool of --rounds x --drafts drafts once, through the page's own code. Each
studio then gets a database of its own; every round, --drafts drafts of the pool (in an order of
the studio's own) are saved in it, a random rater likes --liked-share of them (its own seed), and
a training run is carried out, in this process, by the same code the app's runner starts (a run
that stops before training costs a second; one that trains costs minutes, and is what this
measures). The figure is the share of studios that promoted anything in --rounds rounds, with its
exact 95% interval (Clopper-Pearson); the gate's target is at most gate_alpha (0.05).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from storage import repository
from studio.bench.scratch import scratch_settings, write_at_once
from studio.config import Settings, add_arguments, settings_from
from studio.errors import USER_ERRORS
from studio.learning.jobs import execute_run
from studio.logs import quiet_libraries
from studio.trust.accounts import OPERATOR

POOL_SEED = 2_000_000  # the pool's drafts use seeds from here


def write_pool(settings: Settings, template: str, count: int, tokens: int) -> list[dict[str, Any]]:
    """count base drafts of the template, as saved: what each studio's rounds draw from."""
    from studio.core.studio import Studio

    studio = Studio(settings)
    samplers = [{"max_new_tokens": tokens, "seed": POOL_SEED + i} for i in range(count)]
    pool = []
    for start in range(0, count, 48):  # a batch at a time, as the page would
        for drafting in write_at_once(studio, template, {}, samplers[start:start + 48]):
            with studio.sessions() as session:
                draft = repository.get_draft(session, drafting.draft_id)
                pool.append({column: getattr(draft, column) for column in (
                    "template_id", "template_name", "fields", "prompt", "model_input", "settings", "seed",
                    "model_name", "text", "stopped", "ended")})
    studio.close()
    return pool


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
    from scipy.stats import beta

    low = float(beta.ppf(0.025, successes, trials - successes + 1)) if successes else 0.0
    high = float(beta.ppf(0.975, successes + 1, trials - successes)) if successes < trials else 1.0
    return low, high


def one_studio(settings: Settings, pool: list[dict[str, Any]], index: int, rounds: int, drafts: int,
               liked_share: float) -> dict[str, Any]:
    """One studio's rounds: what each run decided, and whether the studio ever promoted."""
    from studio.core.studio import Studio

    studio = Studio(settings)
    rng = random.Random(f"studio:{index}")
    order = rng.sample(range(len(pool)), rounds * drafts)
    saved_at = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=index)  # the held-out draw differs by studio
    runs = []
    for r in range(rounds):
        with studio.sessions.begin() as session:
            for n, i in enumerate(order[r * drafts:(r + 1) * drafts]):
                draft = repository.add_draft(session, **pool[i], model_version="base", user=settings.user,
                                             created_at=saved_at + timedelta(minutes=r * drafts + n))
                repository.rate_draft(session, draft.id, 5 if rng.random() < liked_share else 1, user=settings.user)
        run_id, _ = studio.versions.train("bench", user=OPERATOR)
        started = time.perf_counter()
        try:
            summary = execute_run(studio.sessions, studio.settings, studio.versions.training_config(), run_id)
            runs.append({"decision": summary["decision"], "trained": True, "reason": summary["reason"]})
        except USER_ERRORS as exc:
            runs.append({"decision": "stopped", "trained": False, "reason": str(exc)})
        runs[-1]["seconds"] = time.perf_counter() - started
    studio.close()
    return {"studio": index, "runs": runs, "promoted": any(run["decision"] == "promoted" for run in runs)}


def summary(args: argparse.Namespace, settings: Settings, studios: list[dict[str, Any]], started: float,
            pool_minutes: float) -> dict[str, Any]:
    promoted = sum(s["promoted"] for s in studios)
    low, high = clopper_pearson(promoted, len(studios)) if studios else (0.0, 1.0)
    return {"template": args.template, "model": settings.model, "tokens": args.tokens, "rounds": args.rounds,
            "drafts": args.drafts, "liked_share": args.liked_share, "studios": studios, "promoted": promoted,
            "promoted_share": promoted / len(studios) if studios else float("nan"), "interval": [low, high],
            "trained_runs": sum(run["trained"] for s in studios for run in s["runs"]),
            "runs": sum(len(s["runs"]) for s in studios), "pool_minutes": pool_minutes,
            "minutes": (time.perf_counter() - started) / 60}


def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Every studio in turn; the figures so far are written to --json after each, so a benchmark
    stopped early keeps what it measured."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="studio-pool-") as folder:
        pool = write_pool(scratch_settings(dataclasses.replace(settings), Path(folder)), args.template,
                          args.rounds * args.drafts, args.tokens)
    pool_minutes = (time.perf_counter() - started) / 60
    studios: list[dict[str, Any]] = []
    for index in range(args.studios):
        with tempfile.TemporaryDirectory(prefix="studio-random-") as folder:
            studio = one_studio(scratch_settings(dataclasses.replace(settings), Path(folder)), pool, index,
                                args.rounds, args.drafts, args.liked_share)
        studios.append(studio)
        decisions = ", ".join(run["decision"] for run in studio["runs"])
        print(f"studio {index + 1}: {decisions}{' -> PROMOTED' if studio['promoted'] else ''}", flush=True)
        args.json.write_text(json.dumps(summary(args, settings, studios, started, pool_minutes), indent=2,
                                        ensure_ascii=False))
    return summary(args, settings, studios, started, pool_minutes)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="python -m studio.bench studios", description=__doc__.splitlines()[0])
    add_arguments(parser, only=("model", "device", "max_batch", "train_method", "gate_alpha"))
    parser.add_argument("--studios", type=int, default=20, help="Studios, each with its own random rater.")
    parser.add_argument("--rounds", type=int, default=8, help="Rounds of rating and training per studio.")
    parser.add_argument("--drafts", type=int, default=48, help="Drafts rated per round.")
    parser.add_argument("--liked-share", type=float, default=0.3, help="Share of drafts the random rater likes.")
    parser.add_argument("--template", default="fantasy", help="The template the pool is written from.")
    parser.add_argument("--tokens", type=int, default=96, help="New tokens per draft.")
    parser.add_argument("--json", type=Path, default=Path("studios-results.json"), help="Where to write the figures.")
    args = parser.parse_args(argv)
    if args.studios < 1 or args.rounds < 1 or args.drafts < 2 or args.tokens < 1:
        parser.error("--studios and --rounds must be at least 1, --drafts at least 2, --tokens at least 1.")
    if not 0 < args.liked_share < 1:
        parser.error(f"--liked-share must be between 0 and 1, not {args.liked_share}.")
    with tempfile.TemporaryDirectory(prefix="studio-studios-") as scratch:
        report = run(scratch_settings(settings_from(args), Path(scratch)), args)
    print(f"\n{report['promoted']} of {len(report['studios'])} studios rated at random promoted a version in "
          f"{args.rounds} rounds of {args.drafts} drafts ({report['promoted_share']:.1%}, 95% interval "
          f"{report['interval'][0]:.1%} to {report['interval'][1]:.1%}; target at most {settings_from(args).gate_alpha:.0%}); "
          f"{report['trained_runs']} of {report['runs']} runs trained; {report['minutes']:.1f} minutes "
          f"({report['pool_minutes']:.1f} writing the pool)")
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"figures written to {args.json}")
    return 0
