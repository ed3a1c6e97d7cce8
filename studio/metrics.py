"""What an operator watches: the studio's Prometheus metrics, one registry per studio.

Events are counted where they happen (a draft in serving.drafting, a rating in core.drafts, a
commit in storage.db); what the database knows (training runs and gate decisions, whichever
process ran them; the serving version; ratings since it was promoted) and what is true now
(requests waiting, drafts streaming) are read when Prometheus scrapes.
With --metrics off nothing is recorded: every metric is a no-op.
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: from a fraction of a second on a GPU to a long wait on a busy CPU.
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
GAP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

DRAFT_OUTCOMES = ("finished", "stopped", "failed")


class _Off:
    """A metric that records nothing (--metrics off)."""

    def labels(self, *args: Any, **kwargs: Any) -> "_Off":
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


class Metrics:
    """The studio's metrics. Counters and histograms are attributes; gauges come from
    `now`, a function called at each scrape that returns what is true at that moment."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self._now: Callable[[], dict[str, Any]] | None = None
        metric = self._metric if enabled else (lambda *args, **kwargs: _Off())
        self.drafts_started = metric(Counter, "studio_drafts_started", "Drafts whose writing started.",
                                     ["template", "version"])
        self.drafts_ended = metric(Counter, "studio_drafts_ended",
                                   "Drafts whose writing ended: finished, stopped (by the writer, or the tab closed) "
                                   "or failed.", ["template", "version", "outcome"])
        self.tokens = metric(Counter, "studio_tokens_generated", "Tokens the model wrote into drafts.", ["version"])
        self.first_token = metric(Histogram, "studio_time_to_first_token_seconds",
                                  "From asking for a draft to its first text.", buckets=FIRST_TOKEN_BUCKETS)
        self.chunk_gap = metric(Histogram, "studio_stream_gap_seconds", "Time between a draft's streamed chunks.",
                                buckets=GAP_BUCKETS)
        self.batch_size = metric(Histogram, "studio_decode_batch_size",
                                 "Drafts decoded together in one step of the batch engine.", buckets=BATCH_BUCKETS)
        self.ratings = metric(Counter, "studio_ratings", "Ratings given, by stars.", ["stars"])
        self.picks = metric(Counter, "studio_picks", "Picks between candidates (chosen over rejected pairs).")
        self.model_load = metric(Histogram, "studio_model_load_seconds", "Time to load a model version.",
                                 buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))
        self.db_commit = metric(Histogram, "studio_db_commit_seconds", "Time to commit a write transaction.",
                                buckets=COMMIT_BUCKETS)
        if enabled:
            self.registry.register(_Now(self))

    def _metric(self, kind, name: str, documentation: str, labels: list[str] = (), **kwargs: Any):
        return kind(name, documentation, labels, registry=self.registry, **kwargs)

    def watch(self, now: Callable[[], dict[str, Any]]) -> None:
        """What the gauges read at each scrape (see _Now for the keys)."""
        self._now = now

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Now:
    """Gauges read at scrape time from the studio: they are true whenever Prometheus looks,
    survive restarts where they come from the database, and cost nothing between scrapes."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # names are known only once the studio is watched; nothing to check at registration

    def collect(self):
        if self.metrics._now is None:
            return
        now = self.metrics._now()
        gauges = {
            "studio_drafts_waiting": ("Requests waiting in the page's queue for a free worker.", "waiting"),
            "studio_queue_capacity": ("The most requests that may wait in the queue (0: no limit).", "capacity"),
            "studio_drafts_streaming": ("Drafts being written now.", "streaming"),
            "studio_last_promotion_timestamp_seconds": ("When the serving version began to serve (Unix time).",
                                                        "last_promotion"),
            "studio_ratings_since_promotion": ("Ratings given since the serving version began to serve.",
                                               "ratings_since_promotion"),
        }
        for name, (documentation, key) in gauges.items():
            if now.get(key) is not None:
                gauge = GaugeMetricFamily(name, documentation)
                gauge.add_metric([], float(now[key]))
                yield gauge
        counts = {
            "studio_training_runs": ("Training runs that ended, by outcome: promoted, rejected, undecided, "
                                     "nothing_to_learn or failed (from the database: every process's runs).",
                                     "outcome", "runs"),
            "studio_gate_decisions": ("The gate's decisions on trained candidates.", "decision", "gate_decisions"),
        }
        for name, (documentation, label, key) in counts.items():
            if now.get(key) is not None:
                counter = CounterMetricFamily(name, documentation, labels=[label])
                for value, count in sorted(now[key].items()):
                    counter.add_metric([value], count)
                yield counter
        if now.get("version"):
            info = InfoMetricFamily("studio_serving_version", "The version the studio serves now, and how its "
                                    "weights serve in this process (quantize: none, int8 or int4).")
            info.add_metric([], {"version": now["version"], "base_model": now.get("base_model", ""),
                                 "quantize": now.get("quantize", "none")})
            yield info
