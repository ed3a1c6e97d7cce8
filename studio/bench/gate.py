"""Gate benchmark: can a candidate pass the gate without writing what the writers like?

`python -m studio.bench gate [--template romance] [--drafts 144] [--fresh 96] [--traits 10]
[--seed 0] [--json gate-results.json]`

The base model writes --drafts drafts (the loop benchmark's round seeds) and --fresh more (unseen
seeds). Traits are drawn from the drafts' own words, so none is chosen by hand: one word (in 6-22%
of drafts) or either of two (3-10% each). For each trait and for the ratings of the first third,
two thirds and all of the drafts (a synthetic writer likes the drafts with the trait), the gate's
judge is learned as a run learns it (a quarter held out), and two candidates are built from the
fresh drafts, each against a random half of them as the serving version's:
- "companions": as many drafts with the trait as the serving half has, but those the judge scores
  highest on everything it weights besides the trait (words that merely came with liked drafts,
  or with disliked ones): what a candidate that learned the judge's quirks, not the trait, writes;
- "trait x2": twice as many drafts with the trait, the rest at random.
For each it prints how the judge's ranking of the two sides' drafts (the old gate's statistic)
and its count of liked drafts (the gate's, verdict.py) see them. An honest gate prefers the
second and not the first. No training runs, so it takes the drafts' writing time (minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from studio.bench.loop import FRESH_SEED, trait_frequency
from studio.bench.raters import words_pattern
from studio.bench.scratch import scratch_settings, write_at_once
from studio.config import add_arguments, settings_from
from studio.learning.dataset import Example
from studio.learning.judge import Judge, features
from studio.learning.significance import accuracy, paired_share_difference, permutation_p_value
from studio.logs import quiet_libraries
from studio.text import WORD

ALPHA = 0.05
CANDIDATE_DRAFTS = 48


def draw_traits(texts: list[str], count: int, rng: random.Random) -> list[list[str]]:
    """Half one-word traits, half two-word ones, from the words the drafts use (4 letters or more)."""
    frequency = Counter(w for t in texts for w in {m.group(0).lower() for m in WORD.finditer(t)} if len(w) >= 4
                        and w.isalpha())
    share = {w: c / len(texts) for w, c in frequency.items()}
    single = sorted(w for w, s in share.items() if 0.06 <= s <= 0.22)
    rare = sorted(w for w, s in share.items() if 0.03 <= s <= 0.10)
    traits = [[w] for w in rng.sample(single, min(count - count // 2, len(single)))]
    if len(rare) >= 2:
        traits += [rng.sample(rare, 2) for _ in range(count // 2)]
    return traits


def trait_pattern(words: list[str]) -> re.Pattern:
    return words_pattern(words, endings="s|ed|ing")


def _examples(texts: list[str], liked: list[bool]) -> list[Example]:
    return [Example(draft_id=i, context="", prompt="", completion=t, stars=5 if up else 1, user="", template_id="t")
            for i, (t, up) in enumerate(zip(texts, liked))]


def judge_case(rated: list[str], fresh: list[str], words: list[str], rng: random.Random) -> dict[str, Any] | None:
    """One trait at one number of ratings: the two candidates as the old and the new statistic see them."""
    trait = trait_pattern(words)
    liked = [bool(trait.search(t)) for t in rated]
    train = [i for i in range(len(rated)) if i % 4]  # a quarter held out, as runs hold out
    fresh_liked = [bool(trait.search(t)) for t in fresh]
    if sum(liked[i] for i in train) < 2 or all(liked[i] for i in train) or sum(fresh_liked) < 2:
        return None
    judge = Judge.fit(_examples([rated[i] for i in train], [liked[i] for i in train]), lambda e: e.stars == 5)
    weights = judge.weights()
    stems = {w[:5] for w in words}
    companions = {f: w for f, w in weights.items() if not any(s in f for s in stems)}  # liked or disliked
    read = [(t, True) for t in fresh]  # as the rated texts are read (Example.ended's default)
    score = judge.scores(read)
    companion_score = [sum(companions.get(f, 0.0) for f in set(features(d))) for d in read]
    with_trait = [i for i, up in enumerate(fresh_liked) if up]
    without = [i for i, up in enumerate(fresh_liked) if not up]
    serving = rng.sample(range(len(fresh)), min(CANDIDATE_DRAFTS, len(fresh) // 2))  # a half: room to double
    n = len(serving)
    k = sum(fresh_liked[i] for i in serving)
    if k == 0:  # nothing to double
        return None
    by_companions = sorted(range(len(fresh)), key=lambda i: -companion_score[i])
    candidates = {
        "companions": [i for i in by_companions if fresh_liked[i]][:k] + [i for i in by_companions
                                                                         if not fresh_liked[i]][:n - k],
        "trait x2": rng.sample(with_trait, min(len(with_trait), 2 * k)),
    }
    candidates["trait x2"] += rng.sample(without, n - len(candidates["trait x2"]))
    case: dict[str, Any] = {"trait": words, "ratings": len(rated), "liked": sum(liked),
                            "trait_in_serving": k / n}
    for name, chosen in candidates.items():
        reward = {**{i: score[i] for i in chosen}, **{len(fresh) + i: score[i] for i in serving}}
        pairs = [(a, len(fresh) + b) for a in chosen for b in serving]  # a draft in both halves: two ids
        ranked, ranked_p = accuracy(reward, pairs), permutation_p_value(reward, [pairs])
        cand_liked, serv_liked, _, _, p = paired_share_difference([score[i] > 0 for i in chosen],
                                                                  [score[i] > 0 for i in serving])
        case[name] = {"trait": trait_frequency(trait, [fresh[i] for i in chosen]), "ranked_higher": ranked,
                      "ranked_p_value": ranked_p,
                      "liked": cand_liked, "serving_liked": serv_liked, "p_value": p}
    return case


def run(studio, args: argparse.Namespace) -> dict[str, Any]:
    def write(seeds: range) -> list[str]:
        samplers = [{"max_new_tokens": args.tokens, "seed": seed} for seed in seeds]
        return [d.text for d in write_at_once(studio, args.template, {}, samplers)]

    rated = [t for r in range(3) for t in write(range(10_000 * (r + 1), 10_000 * (r + 1) + args.drafts // 3))]
    fresh = write(range(FRESH_SEED, FRESH_SEED + args.fresh))
    rng = random.Random(args.seed)
    cases = []
    for words in draw_traits(rated, args.traits, rng):
        for third in (1, 2, 3):
            case = judge_case(rated[:len(rated) * third // 3], fresh, words, rng)
            if case:
                cases.append(case)
    return {"template": args.template, "model": studio.settings.model, "drafts": len(rated), "fresh": len(fresh),
            "cases": cases}


def print_report(report: dict[str, Any]) -> None:
    cases = report["cases"]
    print(f"gate benchmark: {report['template']}, {report['drafts']} rated and {report['fresh']} fresh base drafts, "
          f"{len({' '.join(c['trait']) for c in cases})} traits, {len(cases)} cases (a trait at a number of ratings)")
    print(f"{'':12} {'trait in':>9}   {'old gate: pairs ranked':^30}   {'gate: liked drafts counted':^30}")
    print(f"{'candidate':12} {'its drafts':>10} {'ranked higher':>15} {'p <= 0.05':>14}   {'liked, serving':>16} "
          f"{'p <= 0.05':>13}")
    for name in ("companions", "trait x2"):
        trait = statistics.mean(c[name]["trait"] / max(c["trait_in_serving"], 1e-9) for c in cases)
        ranked = statistics.mean(c[name]["ranked_higher"] for c in cases)
        ranked_passed = sum(c[name]["ranked_p_value"] <= ALPHA and c[name]["ranked_higher"] > 0.5 for c in cases)
        liked = statistics.mean(c[name]["liked"] for c in cases)
        serving = statistics.mean(c[name]["serving_liked"] for c in cases)
        passed = sum(c[name]["p_value"] <= ALPHA and c[name]["liked"] > c[name]["serving_liked"] for c in cases)
        print(f"{name:12} {trait:9.2f}x {ranked:15.0%} {ranked_passed:>8} of {len(cases):<3}   "
              f"{liked:7.0%}, {serving:3.0%} {passed:>7} of {len(cases)}")
    print("An honest gate prefers 'trait x2' and not 'companions'.")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="python -m studio.bench gate", description=__doc__.splitlines()[0])
    add_arguments(parser, only=("model", "device", "max_batch"))
    parser.add_argument("--template", default="romance", help="The template the base drafts are written from.")
    parser.add_argument("--drafts", type=int, default=144, help="Rated drafts (in thirds, as three loop rounds).")
    parser.add_argument("--fresh", type=int, default=96, help="Fresh drafts the candidates are drawn from.")
    parser.add_argument("--traits", type=int, default=10, help="Traits drawn from the drafts' words.")
    parser.add_argument("--tokens", type=int, default=96, help="New tokens per draft.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the traits' and candidates' draws.")
    parser.add_argument("--json", type=Path, default=Path("gate-results.json"), help="Where to write the figures.")
    args = parser.parse_args(argv)
    if args.drafts < 12 or args.fresh < 8 or args.traits < 1 or args.tokens < 1:
        parser.error("--drafts must be at least 12, --fresh at least 8, --traits and --tokens at least 1.")
    from studio.core.studio import Studio

    with tempfile.TemporaryDirectory(prefix="studio-gate-") as scratch:
        report = run(Studio(scratch_settings(settings_from(args), Path(scratch))), args)
    if not report["cases"]:
        print("No trait could be judged: the drafts share too few words (write more, or longer, drafts).")
        return 1
    print_report(report)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"figures written to {args.json}")
    return 0
