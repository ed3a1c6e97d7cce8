"""What the benchmarks share: a scratch studio beside the real one, and drafts streamed as the page
streams them, one or several at once."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from studio.config import Settings, settings_from

PROMPT_TEMPLATE = "fantasy"  # what the speed benchmark's drafts are written from


def scratch_settings(settings: Settings, scratch: Path) -> Settings:
    """Settings for a scratch database in `scratch`, reusing the converted model of the real data dir."""
    models = Path(settings_from().data_dir) / "models"
    settings.data_dir = str(scratch)
    settings.db = ""
    settings.auto_train_after = 0  # the benchmark decides when training runs
    settings.rate_limit = settings.streams_per_writer = 0  # it is one "writer" starting many drafts at once
    if models.is_dir() and not (scratch / "models").exists():
        (scratch / "models").symlink_to(models.resolve())
    return settings


@contextmanager
def setting(studio, name: str, value: str) -> Iterator[None]:
    """The studio with one setting changed for the block (--batching, --quantize, --engine): the
    page reads it per draft, and the pool loads the serving model again when it changes how it serves."""
    before = getattr(studio.settings, name)
    setattr(studio.settings, name, value)
    try:
        yield
    finally:
        setattr(studio.settings, name, before)


def write_at_once(studio, template_id: str, fields: dict, samplers: list[dict]) -> list:
    """One draft per sampler setting, all streaming at once (batched as the page batches them):
    the finished Draftings, in order."""
    draftings = [None] * len(samplers)

    def write(i: int) -> None:
        drafting = studio.drafts.write(template_id, fields, samplers[i], user=studio.settings.user)
        for _ in drafting:
            pass
        draftings[i] = drafting

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(samplers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(d is None for d in draftings):
        raise RuntimeError("A draft failed to stream; see the log above.")
    return draftings


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def studio_stream(studio, tokens: int, seed: int, record_gaps: bool = False) -> dict[str, Any]:
    """One draft through Drafts.write, exactly as the page streams it."""
    started = time.perf_counter()
    arrivals = []
    drafting = studio.drafts.write(PROMPT_TEMPLATE, {}, {"max_new_tokens": tokens, "seed": seed, "temperature": 0.8,
                                                         "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.0},
                                   user=studio.settings.user)
    for _ in drafting:
        arrivals.append(time.perf_counter())
    seconds = time.perf_counter() - started
    result = drafting.stream.result
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return {"tokens": result.new_tokens, "seconds": seconds,
            "ttft": (arrivals[0] - started) if arrivals else seconds, "gaps": gaps, "draft_id": drafting.draft_id}


def all_at_once(work: Callable[[int], dict[str, Any]], count: int) -> tuple[list[dict[str, Any]], float]:
    """work(0) ... work(count - 1), each in its own thread, started together: results and wall seconds."""
    results: list[dict[str, Any]] = [{}] * count
    barrier = threading.Barrier(count)

    def one(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def writers_at_once(studio, writers: int, tokens: int) -> dict[str, Any]:
    """`writers` drafts streaming at once through Drafts.write, each in its own thread as on the page."""
    results, wall = all_at_once(lambda i: studio_stream(studio, tokens, seed=100 + i), writers)
    total = sum(r["tokens"] for r in results)
    return {
        "writers": writers, "aggregate_tokens_per_s": total / wall,
        "per_writer_tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in results),
        "p50_ttft_s": percentile([r["ttft"] for r in results], 0.5),
        "p95_ttft_s": percentile([r["ttft"] for r in results], 0.95),
        "p95_gap_s": statistics.median(percentile(r["gaps"], 0.95) for r in results),
        "draft_ids": [r["draft_id"] for r in results],
    }
