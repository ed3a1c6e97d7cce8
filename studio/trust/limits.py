"""Limits that keep one writer (or one guesser) from taking what others need: drafts started per
minute, drafts streaming at once, and repeated failed sign-ins."""

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


class FailureThrottle:
    """Slows repeated failures per key (a name, an address): the first `free` failures within
    `window` seconds cost nothing; after each later one the next attempt waits twice as long as
    after the one before (1 s, 2 s, 4 s... up to `longest`). An attempt refused while waiting is
    not counted (it cost nothing); a success clears the key."""

    def __init__(self, free: int = 5, window: float = 900.0, longest: float = 300.0, clock=time.monotonic):
        self.free, self.window, self.longest = free, window, longest
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until key may try again (0: now)."""
        now = self._clock()
        with self._lock:
            failures = self._failures[key]
            while failures and now - failures[0] >= self.window:
                failures.popleft()
            over = len(failures) - self.free
            if over <= 0:
                return 0.0
            return max(0.0, min(2.0 ** (over - 1), self.longest) - (now - failures[-1]))

    def failed(self, key: str) -> None:
        with self._lock:
            self._failures[key].append(self._clock())

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
