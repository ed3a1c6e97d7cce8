"""A draft being written: the stream a writer iterates, saved as it streams and however it ends."""

from __future__ import annotations

import time
import uuid
from typing import Callable, Iterator

from studio.metrics import Metrics
from studio.serving.generation import ActiveStreams, DraftStream, StreamResult

_UNWATCHED = Metrics(enabled=False)

CHECKPOINT_SECONDS = 3.0  # a crash loses at most this much of a draft being written


class Drafting:
    """A draft being written: iterate for text chunks; draft_id is set once the stream has ended.

    However iteration ends (the last token, stop(), or the iterator closed or dropped because a
    tab closed or a request was cancelled), the worker is joined and the draft is saved. With a
    checkpoint, the text so far is also saved every CHECKPOINT_SECONDS while it streams (the
    checkpoint returns the draft's id).
    """

    def __init__(self, stream: DraftStream, save: Callable[[StreamResult], int], active: ActiveStreams,
                 key: str | None = None, draft_id: int | None = None, text: str = "",
                 checkpoint: Callable[[str], int] | None = None, metrics: Metrics = _UNWATCHED,
                 labels: tuple[str, str] = ("", ""), hold: Callable[[], Callable[[], None]] | None = None):
        self.stream = stream
        self.draft_id = draft_id
        self.text = text  # the whole draft so far (for Continue, the earlier text too)
        self._save = save
        self._checkpoint = checkpoint
        self._active = active
        self._key = key or uuid.uuid4().hex
        self._metrics = metrics
        self._labels = labels  # template and version, for the metrics
        self._hold = hold  # takes one of the writer's streaming slots (raises at the cap); returns its release

    def __iter__(self) -> Iterator[str]:
        # A generator method: the iterator refers to the Drafting, not the other way round, so
        # dropping the iterator finalizes it at once (no reference cycle waiting for the GC).
        metrics = self._metrics
        release = self._hold() if self._hold is not None else (lambda: None)  # before any token: a refusal loses nothing
        metrics.drafts_started.labels(*self._labels).inc()
        self._active.add(self._key, self.stream)
        chunks = iter(self.stream)
        asked = saved_at = time.monotonic()
        last = None
        outcome = "failed"  # unless the stream ends or is closed
        try:
            for chunk in chunks:
                now = time.monotonic()
                if last is None:
                    metrics.first_token.observe(now - asked)
                else:
                    metrics.chunk_gap.observe(now - last)
                last = now
                self.text += chunk
                if self._checkpoint is not None and now - saved_at >= CHECKPOINT_SECONDS:
                    self.draft_id = self._checkpoint(self.text)
                    saved_at = time.monotonic()
                yield chunk
            outcome = ""
        except GeneratorExit:  # the reader went away: a closed tab, a cancelled request
            outcome = "stopped"
            raise
        finally:
            chunks.close()  # ends the worker and fills stream.result before saving
            release()
            result = self.stream.result
            try:
                if result.text:
                    self.draft_id = self._save(result)
            finally:
                # Active until saved: whoever waits for the writer's streams to end then finds the draft.
                self._active.remove(self._key, self.stream)
                outcome = outcome or ("stopped" if result.stopped else "finished")
                metrics.drafts_ended.labels(*self._labels, outcome).inc()
                metrics.tokens.labels(self._labels[1]).inc(result.new_tokens or 0)

    def stop(self) -> None:
        self.stream.stop()
