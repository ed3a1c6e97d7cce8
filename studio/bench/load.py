"""Load benchmark: does the database keep up with a busy studio?

`python -m studio.bench load [--writers 8] [--tabs 4] [--seconds 120] [--tokens 48] [--train-method sft]
[--json load-results.json]`

For --seconds, on a scratch database: --writers writers each write a draft (saved as it streams)
and rate it, again and again; a training run is always going in a child process (a new one is
queued as soon as one ends), recording its progress; and --tabs open Training tabs read what the
tab shows every 2 seconds. The writers' stars are random, so with the default method runs mostly
stop early (nothing consistent to learn); `--train-method sft` keeps one training. It prints the
"database is locked" errors (the target is 0), whether every rating the writers were told was
saved is in the database, and how long this process's write transactions and the writers'
ratings took (p50, p95, max).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from studio.bench.scratch import scratch_settings
from studio.config import Settings, add_arguments, child_environment, settings_from
from studio.learning.jobs import REPO_ROOT, train_command
from studio.trust.accounts import OPERATOR
from studio.logs import quiet_libraries

WARM_UP_DRAFTS = 12  # rated before the clock starts, so the first training run has data
TAB_SECONDS = 2.0  # how often an open Training tab refreshes


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "count": 0}
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1], "count": len(ordered)}


class WriteTimer:
    """How long each write transaction of this process took, BEGIN (waiting for the lock
    included) to COMMIT: SQLAlchemy's engine events."""

    def __init__(self, engine):
        self.seconds: list[float] = []
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)

    def _begin(self, connection) -> None:
        self._started[id(connection)] = time.perf_counter()

    def _commit(self, connection) -> None:
        started = self._started.pop(id(connection), None)
        if started is not None:
            with self._lock:
                self.seconds.append(time.perf_counter() - started)


class Load:
    def __init__(self, studio, tokens: int, until: float):
        self.studio, self.tokens, self.until = studio, tokens, until
        self.locked: list[str] = []
        self.errors: list[str] = []
        self.confirmed: dict[int, tuple[str, int]] = {}  # draft id -> the writer, and the stars they were told
        self.rating_seconds: list[float] = []
        self.tab_reads = 0
        self.runs = 0
        self._lock = threading.Lock()

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            (self.locked if "locked" in str(exc).lower() else self.errors).append(f"{type(exc).__name__}: {exc}")

    def writer(self, number: int) -> None:
        rng = random.Random(number)
        while time.monotonic() < self.until:
            try:
                drafting = self.studio.drafts.write("fantasy", {}, {"max_new_tokens": self.tokens}, user=f"w{number}")
                for _ in drafting:
                    pass
                stars = rng.randint(1, 5)
                started = time.perf_counter()
                self.studio.drafts.rate(drafting.draft_id, stars, user=f"w{number}")
                with self._lock:
                    self.rating_seconds.append(time.perf_counter() - started)
                    self.confirmed[drafting.draft_id] = (f"w{number}", stars)
            except Exception as exc:  # counted and printed: the benchmark's whole point
                self._failed(exc)

    def tab(self) -> None:
        while time.monotonic() < self.until:
            try:
                self.studio.versions.list(), self.studio.versions.runs()  # what the tab's refresh reads
                with self._lock:
                    self.tab_reads += 1
            except Exception as exc:
                self._failed(exc)
            time.sleep(TAB_SECONDS)

    def trainer(self) -> None:
        """A training run always going, in a child process as the app's runner starts them."""
        while time.monotonic() < self.until:
            try:
                run_id, _ = self.studio.versions.train("bench", user=OPERATOR)
            except Exception as exc:
                self._failed(exc)
                time.sleep(1)
                continue
            child = subprocess.Popen(train_command(self.studio.settings, run_id), cwd=REPO_ROOT,
                                     env=child_environment(self.studio.settings), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            while child.poll() is None and time.monotonic() < self.until:
                time.sleep(0.2)
            if child.poll() is None:
                child.kill()  # the clock ran out mid-run
            _, stderr = child.communicate()
            if "locked" in stderr:
                with self._lock:
                    self.locked.append(f"training run {run_id}: {stderr.strip().splitlines()[-1]}")
            with self._lock:
                self.runs += 1


def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from studio.core.studio import Studio

    studio = Studio(settings)
    studio.pool.load()
    for i in range(WARM_UP_DRAFTS):  # ratings both ways, so a run has something to learn from
        drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": args.tokens}, user="warm-up")
        for _ in drafting:
            pass
        studio.drafts.rate(drafting.draft_id, 5 if i % 2 else 1, user="warm-up")
    timer = WriteTimer(studio.sessions.kw["bind"])
    load = Load(studio, args.tokens, time.monotonic() + args.seconds)
    threads = ([threading.Thread(target=load.writer, args=(n,)) for n in range(args.writers)]
               + [threading.Thread(target=load.tab) for _ in range(args.tabs)] + [threading.Thread(target=load.trainer)])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lost = []
    for draft_id, (writer, stars) in load.confirmed.items():
        if studio.drafts.get(draft_id, user=writer)["stars"] != stars:
            lost.append(draft_id)
    return {"writers": args.writers, "tabs": args.tabs, "seconds": args.seconds, "model": settings.model,
            "locked_errors": load.locked, "other_errors": load.errors[:20], "ratings_confirmed": len(load.confirmed),
            "ratings_missing": lost, "tab_reads": load.tab_reads, "training_runs": load.runs,
            "write_transaction_seconds": percentiles(timer.seconds),
            "rating_seconds": percentiles(load.rating_seconds)}


def print_report(report: dict[str, Any]) -> None:
    def ms(figures: dict[str, Any]) -> str:
        if not figures["count"]:
            return "none"
        return (f"p50 {1000 * figures['p50']:.1f} ms, p95 {1000 * figures['p95']:.1f} ms, max "
                f"{1000 * figures['max']:.1f} ms ({figures['count']})")

    print(f"{report['writers']} writers, {report['tabs']} Training tabs and a training run for {report['seconds']} s")
    print(f'"database is locked" errors: {len(report["locked_errors"])} (target 0)')
    for line in report["locked_errors"][:5] + report["other_errors"][:5]:
        print(f"  {line[:200]}")
    print(f"ratings confirmed: {report['ratings_confirmed']}, missing from the database: "
          f"{len(report['ratings_missing'])} (target 0)")
    print(f"write transactions (lock wait included): {ms(report['write_transaction_seconds'])}")
    print(f"a writer's rating, end to end: {ms(report['rating_seconds'])}")
    print(f"Training tab refreshes: {report['tab_reads']}; training runs started: {report['training_runs']}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="python -m studio.bench load", description=__doc__.splitlines()[0])
    add_arguments(parser, only=("model", "device", "max_batch", "train_method"))
    parser.add_argument("--writers", type=int, default=8, help="Writers writing and rating at once.")
    parser.add_argument("--tabs", type=int, default=4, help="Open Training tabs, each refreshing every 2 s.")
    parser.add_argument("--seconds", type=float, default=120, help="How long the load lasts.")
    parser.add_argument("--tokens", type=int, default=48, help="New tokens per draft.")
    parser.add_argument("--json", type=Path, default=Path("load-results.json"), help="Where to write the figures.")
    args = parser.parse_args(argv)
    if args.writers < 1 or args.tabs < 0 or args.seconds <= 0 or args.tokens < 1:
        parser.error("--writers and --tokens must be at least 1, --tabs at least 0, --seconds above 0.")
    with tempfile.TemporaryDirectory(prefix="studio-load-") as scratch:
        report = run(scratch_settings(settings_from(args), Path(scratch)), args)
    print_report(report)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")
    return 0 if not report["locked_errors"] and not report["ratings_missing"] else 1
