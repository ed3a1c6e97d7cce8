"""A per-writer limit on how many drafts can be started in a minute."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from studio.errors import GenerationError

WINDOW_SECONDS = 60.0


class RateLimit:
    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._starts: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, user: str) -> None:
        """Count one start for user, or raise GenerationError saying how long to wait."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            starts = self._starts[user]
            while starts and now - starts[0] >= WINDOW_SECONDS:
                starts.popleft()
            if len(starts) >= self.per_minute:
                wait = WINDOW_SECONDS - (now - starts[0])
                raise GenerationError(
                    f"You have started {self.per_minute} drafts in the last minute: "
                    f"wait {wait:.0f} s and try again."
                )
            starts.append(now)
