"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import time


def wait_for(condition, seconds: float = 10.0, interval: float = 0.05):
    """Poll condition until it holds or the time is up; returns its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()
