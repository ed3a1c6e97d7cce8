"""Loop benchmark: does the studio learn what its writers rate?

`python -m studio.bench loop (--trait REGEX | --category W1,W2,... | --rater ends|no-repeats|random)
[--template fantasy] [--field NAME=VALUE] [--rounds 3] [--drafts 48] [--fresh 48] [--tokens 96]
[--candidates] [--json loop-results.json]`

A synthetic writer (raters.py) gives 5 stars to the drafts it likes and 1 star to the rest: those
whose text matches --trait, those with a word of --category, those that end by themselves on a
finished sentence, those without a repeated 4-gram, or a random share of them.
Each round writes --drafts drafts through the page's own code (the template, batched streaming,
storage), rates them, and runs the training job in a child process, as the app's runner does.
After each round the serving version writes --fresh drafts with seeds no round ever uses; the
share of them the writer likes, against the base model's on the same seeds before any training,
is what a writer would notice (for a category, each word's share too). Beside each round runs a shuffled control: a copy of the database with the
same ratings shuffled among the drafts (no signal left), run against the base. An honest gate
promotes no such candidate (it usually stops before training: its judge finds no consistent
preference in the ratings). With --candidates, a candidate the gate did not promote writes the fresh
drafts too, in a copy of the database that serves it: whether the trainer or the gate fell short.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from storage import registry, repository
from storage.backup import backup_sqlite
from studio.__main__ import parse_fields
from studio.bench.raters import Rater, Written, add_taste_arguments, rater_from
from studio.bench.scratch import scratch_settings, write_at_once
from studio.config import Settings, add_arguments, child_environment, settings_from
from studio.learning.verdict import gate_words
from studio.learning.jobs import REPO_ROOT, train_command
from studio.learning.plan import NOTHING_TO_LEARN
from studio.text import distinct_2
from studio.trust.accounts import OPERATOR
from studio.logs import quiet_libraries

FRESH_SEED = 1_000_000  # fresh drafts use seeds from here; round r writes from 10_000 * (r + 1)
LIKED, DISLIKED = 5, 1


def trait_frequency(trait: re.Pattern, texts: list[str]) -> float:
    return sum(bool(trait.search(t)) for t in texts) / len(texts) if texts else 0.0


@dataclasses.dataclass
class Loop:
    """One benchmark's settings; `studio` is the scratch studio the synthetic writer uses."""

    studio: Any
    rater: Rater
    template: str
    fields: dict[str, str]
    tokens: int

    def write(self, seeds: range) -> list:
        samplers = [{"max_new_tokens": self.tokens, "seed": seed} for seed in seeds]
        return write_at_once(self.studio, self.template, self.fields, samplers)

    def written(self, drafting) -> Written:
        """A draft as the writer reads it: its text, and whether it ended by itself."""
        result = drafting.stream.result
        return Written(drafting.text, ended=result.ended)

    def fresh(self, count: int, last: dict[str, Any] | None = None) -> dict[str, Any]:
        """The serving version's fresh drafts: the share the writer likes and their diversity. When the
        serving version is the one last measured, the same seeds would write the same drafts again."""
        version = self.studio.pool.load().version
        if last is not None and last["version"] == version and last["drafts"] == count:
            return last
        drafts = [self.written(d) for d in self.write(range(FRESH_SEED, FRESH_SEED + count))]
        return {"version": version, "liked_share": self.rater.share(drafts), "words": self.rater.word_shares(drafts),
                "distinct_2": distinct_2([d.text for d in drafts]), "drafts": count}

    def rate(self, draftings: list) -> dict[str, int]:
        """The synthetic writer: 5 stars for a draft it likes, 1 star otherwise."""
        liked = 0
        for drafting in draftings:
            if drafting.draft_id is None:
                continue  # nothing was written, so there is nothing to rate
            stars = LIKED if self.rater.likes(self.written(drafting)) else DISLIKED
            liked += stars == LIKED
            self.studio.drafts.rate(drafting.draft_id, stars, user=self.studio.settings.user)
        return {"rated": sum(d.draft_id is not None for d in draftings), "liked": liked}


def train(studio) -> dict[str, Any]:
    """Queue a run and carry it out in a child process, as the app's runner does: its figures."""
    run_id, _ = studio.versions.train("bench", user=OPERATOR)
    started = time.perf_counter()
    process = subprocess.run([*train_command(studio.settings, run_id), "--json"], capture_output=True, text=True,
                             cwd=REPO_ROOT, env=child_environment(studio.settings))
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        error = next((line for line in process.stderr.splitlines() if line.startswith("error: ")), "")
        error = error.removeprefix("error: ") or process.stderr[-500:]
        if error.startswith(NOTHING_TO_LEARN):  # the gate's first step, checked before training: not promoted
            return {"decision": "rejected", "reason": error, "trained": False, "seconds": seconds}
        return {"decision": "failed", "error": error, "seconds": seconds}
    summary = json.loads(process.stdout)
    return {**summary, "seconds": seconds}


def _copy(studio, folder: str):
    """A studio on a copy of this one's database (the same models and adapters)."""
    from studio.core.studio import Studio

    settings = scratch_settings(dataclasses.replace(studio.settings), Path(folder))
    backup_sqlite(studio.settings.database_url, settings.data_path / "studio.db")
    return Studio(settings)


def candidate_fresh(loop: Loop, version: str, count: int) -> dict[str, Any]:
    """A candidate the gate did not promote, measured as the serving version is, in a copy of the
    database that serves it: what the trainer learned, beside what the gate could show."""
    with tempfile.TemporaryDirectory(prefix="studio-candidate-") as folder:
        copy = _copy(loop.studio, folder)
        try:
            with copy.sessions.begin() as session:
                registry.activate(session, next(v.id for v in registry.list_versions(session) if v.name == version))
            return dataclasses.replace(loop, studio=copy).fresh(count)
        finally:
            copy.close()  # its model and database go before the folder does


def shuffled_control(studio, seed: int) -> dict[str, Any]:
    """The same ratings shuffled among the same drafts, trained against the base in a copy of the database."""
    with tempfile.TemporaryDirectory(prefix="studio-control-") as folder:
        control = _copy(studio, folder)
        with control.sessions.begin() as session:
            ratings = [rating for _, rating in repository.list_rated_drafts(session)]
            stars = [rating.stars for rating in ratings]
            random.Random(seed).shuffle(stars)
            for rating, shuffled in zip(ratings, stars):
                rating.stars = shuffled
            base = next(v for v in registry.list_versions(session) if v.parent_id is None)
            registry.activate(session, base.id)
        return train(control)


def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from studio.core.studio import Studio

    started = time.perf_counter()
    loop = Loop(Studio(settings), rater_from(args), args.template, parse_fields(args.field), args.tokens)
    report: dict[str, Any] = {"rater": loop.rater.name, "template": args.template, "fields": loop.fields,
                              "model": settings.model, "tokens": args.tokens, "rounds": []}
    report["before"] = loop.fresh(args.fresh)
    for r in range(args.rounds):
        round_seed, round_started = 10_000 * (r + 1), time.perf_counter()
        figures: dict[str, Any] = loop.rate(loop.write(range(round_seed, round_seed + args.drafts)))
        figures["write_seconds"] = time.perf_counter() - round_started
        figures["run"] = train(loop.studio)
        figures["round_seconds"] = time.perf_counter() - round_started  # what a writer waits: drafts, a run
        figures["control"] = shuffled_control(loop.studio, seed=r) if args.control else None
        figures["after"] = loop.fresh(args.fresh, last=report["rounds"][-1]["after"] if r else report["before"])
        if args.candidates and figures["run"].get("version") and figures["run"]["decision"] != "promoted":
            figures["candidate"] = candidate_fresh(loop, figures["run"]["version"], args.fresh)
        report["rounds"].append(figures)
        print_round(r + 1, figures, report["before"], flush=True)
    report["minutes"] = (time.perf_counter() - started) / 60
    return report


def _gate_words(run: dict[str, Any]) -> str:
    if run.get("decision") == "failed":
        return f"failed: {run.get('error', '')[:80]}"
    if run.get("trained") is False:
        return f"rejected before training ({run['reason'][len(NOTHING_TO_LEARN) + 2:]})"
    return f"{run['decision']} ({gate_words(run)})"


def _ratio(after: float, before: float) -> float:
    return after / before if before else float("nan")


def print_round(number: int, figures: dict[str, Any], before: dict[str, Any], flush: bool = False) -> None:
    after = figures["after"]
    ratio = _ratio(after["liked_share"], before["liked_share"])
    control = _gate_words(figures["control"]) if figures["control"] else "not run"
    print(f"round {number}: {figures['liked']}/{figures['rated']} drafts liked; run: {_gate_words(figures['run'])}; "
          f"shuffled control: {control}; serving {after['version']}: liked {after['liked_share']:.1%} of fresh "
          f"drafts (x{ratio:.2f} base), distinct-2 {after['distinct_2']:.3f}", flush=flush)
    if figures.get("candidate"):
        candidate = figures["candidate"]
        print(f"  candidate {candidate['version']} ({figures['run']['decision']}, not served): liked "
              f"{candidate['liked_share']:.1%} of fresh drafts (x{_ratio(candidate['liked_share'], before['liked_share']):.2f} "
              f"base), distinct-2 {candidate['distinct_2']:.3f}", flush=flush)
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in figures["run"].get("phase_seconds", {}).items())
    print(f"  round {number} took {figures['round_seconds'] / 60:.1f} minutes: writing and rating "
          f"{figures['write_seconds']:.0f} s, the run {figures['run']['seconds']:.0f} s"
          f"{f' ({phases})' if phases else ''}", flush=flush)


def print_summary(report: dict[str, Any]) -> None:
    before, rounds = report["before"], report["rounds"]
    last = rounds[-1]["after"] if rounds else before
    ratio = _ratio(last["liked_share"], before["liked_share"])
    diversity = _ratio(last["distinct_2"], before["distinct_2"])
    controls = [r["control"]["decision"] for r in rounds if r["control"]]
    print(f"\n{report['rater']} on template {report['template']}: liked {before['liked_share']:.1%} of "
          f"{before['drafts']} fresh base drafts, after {len(rounds)} rounds {last['liked_share']:.1%} = x{ratio:.2f} "
          "(targets: >= 2 for a word, >= 1.5 for a category or a structural taste)")
    rise = last["liked_share"] - before["liked_share"]
    for word, share in sorted(last["words"].items(), key=lambda item: item[0]):  # a category: no word carries it
        word_rise = share - before["words"].get(word, 0.0)
        carried = f", {word_rise / rise:.0%} of the rise" if rise > 0 else ""
        print(f"  {word}: {before['words'].get(word, 0.0):.1%} -> {share:.1%}{carried}")
    print(f"shuffled controls promoted: {controls.count('promoted')} of {len(controls)} (target 0)")
    print(f"distinct-2 {before['distinct_2']:.3f} -> {last['distinct_2']:.3f} = {diversity:.2f} of base "
          "(target >= 0.90)")
    longest = max((r["round_seconds"] for r in rounds), default=0.0) / 60
    print(f"longest round (writing, rating, the run): {longest:.1f} minutes (target <= 10 on a 2-core CPU)")
    print(f"whole benchmark, with the controls and fresh drafts: {report['minutes']:.1f} minutes")
    report["summary"] = {"liked_ratio": ratio, "controls_promoted": controls.count("promoted"),
                         "controls": len(controls), "distinct_2_ratio": diversity, "longest_round_minutes": longest}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="python -m studio.bench loop", description=__doc__.splitlines()[0])
    add_arguments(parser, only=("model", "device", "max_batch", "train_method"))
    add_taste_arguments(parser)
    parser.add_argument("--template", default="fantasy", help="The template the synthetic writer uses.")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="A field value; repeat.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of writing, rating and training.")
    parser.add_argument("--drafts", type=int, default=48, help="Drafts written and rated per round.")
    parser.add_argument("--fresh", type=int, default=48, help="Fresh drafts (unseen seeds) measured per round.")
    parser.add_argument("--tokens", type=int, default=96, help="New tokens per draft.")
    parser.add_argument("--no-control", dest="control", action="store_false", help="Skip the shuffled controls.")
    parser.add_argument("--candidates", action="store_true",
                        help="Also measure each candidate the gate did not promote on the fresh drafts' seeds: what "
                             "the trainer learned, beside what the gate could show.")
    parser.add_argument("--json", type=Path, default=Path("loop-results.json"), help="Where to write the figures.")
    args = parser.parse_args(argv)
    try:
        rater_from(args)
    except re.error as exc:
        parser.error(f"--trait is not a regular expression: {exc}")
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1 or args.drafts < 2 or args.fresh < 1 or args.tokens < 1:
        parser.error("--rounds and --fresh must be at least 1, --drafts at least 2, --tokens at least 1.")
    try:
        parse_fields(args.field)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="studio-loop-") as scratch:
        report = run(scratch_settings(settings_from(args), Path(scratch)), args)
    print_summary(report)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"figures written to {args.json}")
    return 0
