"""Per-writer limits: how many drafts one writer may start in a minute, and have streaming at once."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Callable

from studio.errors import GenerationError

WINDOW_SECONDS = 60.0


class RateLimit:
    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._starts: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, user: str, drafts: int = 1) -> None:
        """Count `drafts` starts for user, or raise GenerationError saying how long to wait."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            starts = self._starts[user]
            while starts and now - starts[0] >= WINDOW_SECONDS:
                starts.popleft()
            if len(starts) + drafts > self.per_minute:
                wait = WINDOW_SECONDS - (now - starts[0]) if starts else WINDOW_SECONDS
                more = f" (this asks for {drafts} more)" if drafts > 1 else ""
                raise GenerationError(f"You have started {len(starts)} drafts in the last minute, and a writer may "
                                      f"start {self.per_minute}{more}: wait {wait:.0f} s and try again.")
            starts.extend([now] * drafts)


class StreamCap:
    """At most `per_writer` drafts streaming at once for one writer (0 = no cap), so that one client
    cannot hold every generation slot while other writers wait."""

    def __init__(self, per_writer: int):
        self.per_writer = per_writer
        self._live: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def check(self, user: str, drafts: int = 1) -> None:
        """Raise GenerationError if `drafts` more would pass the cap (checked before any rendering)."""
        with self._lock:
            self._refuse(user, drafts)

    def hold(self, user: str) -> Callable[[], None]:
        """Count one more draft streaming for user, or raise; returns the call that lets it go."""
        with self._lock:
            self._refuse(user, 1)
            self._live[user] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._live[user] -= 1

        return release

    def _refuse(self, user: str, drafts: int) -> None:
        if self.per_writer > 0 and self._live[user] + drafts > self.per_writer:
            raise GenerationError(f"You have {self._live[user]} drafts being written, and a writer may have "
                                  f"{self.per_writer} at once: wait for one to finish, or stop one.")
