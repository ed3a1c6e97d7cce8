"""What both batch engines share (transformers' in batching.py, llama.cpp's in gguf.py): drafts
waiting to join, a loop thread that runs only while there is work (the next submit starts a new
one, so an engine whose model was swapped out needs no shutdown of its own), health and close."""

from __future__ import annotations

import threading

from studio.errors import GenerationError
from studio.serving.batch_rows import Request


class DraftQueue:
    """Subclasses decode in _loop, take newcomers with _take, and say what is running in _running."""

    thread_name = "batch-engine"
    label = ""  # what /readyz says decodes: "" or "llama.cpp, "

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def _running(self) -> list[Request]:
        raise NotImplementedError

    def _loop(self) -> None:
        raise NotImplementedError

    def _take(self, room: int) -> list[Request] | None:
        """Up to room waiting drafts for the loop, or None when it has nothing left to do and ends."""
        with self._lock:
            joining, self._pending = self._pending[:room], self._pending[room:]
            if not joining and not self._running():
                self._thread = None  # idle: the next submit starts a new thread
                return None
            return joining

    def submit(self, *requests: Request) -> None:
        """Queue drafts; those submitted in one call join the batch at the same step."""
        with self._lock:
            if self._closed:
                raise GenerationError("The model was unloaded; start the draft again.")
            self._pending.extend(requests)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
                self._thread.start()

    def __len__(self) -> int:
        """Drafts waiting or running (not yet finished)."""
        with self._lock:
            return sum(not r.done.is_set() for r in [*self._pending, *self._running()])

    def health(self) -> tuple[bool, str]:
        """Whether drafts submitted now will be decoded: not closed, and drafts waiting have a thread
        (the thread ends when the batch is empty and the next draft starts another)."""
        with self._lock:
            if self._closed:
                return False, "closed: the model was unloaded"
            waiting = len(self._pending) + len(self._running())
            if waiting and (self._thread is None or not self._thread.is_alive()):
                return False, f"{waiting} draft(s) waiting and no thread decoding them"
            return True, f"{self.label}{waiting} draft(s) in the batch" if waiting else f"{self.label}idle"

    def close(self) -> None:
        """Refuse new requests, stop the running ones, and wait for the loop thread to end."""
        with self._lock:
            self._closed = True
            requests, thread = [*self._pending, *self._running()], self._thread
        for request in requests:
            request.progress.event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
