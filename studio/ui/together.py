"""Several drafts streamed at once (candidates side by side), as one iterator of updates."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

_DONE = object()


def stream_together(draftings: list) -> Iterator[tuple[int, str]]:
    """Yield (index, that draft's whole text so far) as any of the drafts grows.

    Each draft streams in its own thread. Closing this iterator (a cancelled request) stops
    them all; every one is saved however it ends.
    """
    updates: queue.Queue = queue.Queue()
    errors: list[BaseException] = []

    def pump(index: int, drafting) -> None:
        try:
            for _ in drafting:
                updates.put((index, drafting.text))
        except BaseException as exc:  # raised again in the consumer's thread below
            errors.append(exc)
        finally:
            updates.put((index, _DONE))

    threads = [threading.Thread(target=pump, args=(i, d), daemon=True) for i, d in enumerate(draftings)]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            index, text = updates.get()
            if text is _DONE:
                running -= 1
            else:
                yield index, text
    finally:
        for drafting in draftings:
            drafting.stop()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
