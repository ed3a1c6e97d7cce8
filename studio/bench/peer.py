"""The peer the speed benchmark measures the studio against: llama.cpp's own server, llama-server,
on the same GGUF file, with as many parallel slots as writers (what KoboldCpp and most local
writing tools run). It is found as --peer PATH, $LLAMA_SERVER, or llama-server on the PATH; where
none is, the benchmark says so and skips it.

Its requests ask for what the studio's drafts ask for (the same prompt text, temperature, top-p,
top-k, no repetition penalty, and no min-p, which llama-server adds by default) and ignore the
end of text, so every draft is as long as asked."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from studio.bench.scratch import all_at_once

STARTUP_SECONDS = 120


def find_server(explicit: str = "") -> str | None:
    """The llama-server binary to run, or None."""
    for candidate in (explicit, os.environ.get("LLAMA_SERVER", ""), shutil.which("llama-server") or ""):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(binary: str, gguf: Path, threads: int, slots: int, context: int = 8192) -> Iterator[str]:
    """A llama-server on gguf for the duration: its base URL."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                                   "-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(context)],
                                  stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(server, url, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


def _wait_ready(server: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama-server exited ({server.returncode}):\n{log.read()[-2000:].decode(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"llama-server did not become ready within {STARTUP_SECONDS} s")


def complete(url: str, prompt: str, tokens: int, seed: int) -> dict[str, float]:
    """One draft streamed from the server: its tokens, seconds and time to the first token."""
    body = {"prompt": prompt, "n_predict": tokens, "ignore_eos": True, "stream": True, "seed": seed,
            "temperature": 0.8, "top_p": 0.95, "top_k": 50, "min_p": 0.0, "repeat_penalty": 1.0,
            "cache_prompt": False}
    request = urllib.request.Request(f"{url}/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started, first, count = time.perf_counter(), None, 0
    with urllib.request.urlopen(request, timeout=600) as answer:
        for line in answer:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event.get("content"):
                first = first or time.perf_counter()
            if event.get("stop"):
                count = int(event.get("timings", {}).get("predicted_n", tokens))
                break
    seconds = time.perf_counter() - started
    return {"tokens": count, "seconds": seconds, "ttft": (first or started + seconds) - started}


def at_once(url: str, prompt: str, writers: int, tokens: int) -> dict[str, Any]:
    """writers drafts at once, each in its own thread: aggregate and per-writer tokens/s."""
    results, wall = all_at_once(lambda i: complete(url, prompt, tokens, seed=100 + i), writers)
    return {"writers": writers, "aggregate_tokens_per_s": sum(r["tokens"] for r in results) / wall,
            "per_writer_tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in results)}
