"""Rendering writers' own templates without trusting them.

Jinja2's sandbox already keeps templates away from Python internals. What it cannot stop is a
template that loops for hours or builds gigabytes of text. So a writer's template renders in a
short-lived child process (`python -m studio.trust.sandbox`) with a memory cap, a time limit, an
output limit and a bare environment (no secrets); a template that hits a limit gets a clear
TemplateError and the studio carries on.
"""

from __future__ import annotations

import json
import resource
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from studio.config import sandbox_environment
from studio.errors import TemplateError

TIME_LIMIT_SECONDS = 1.0
MAX_OUTPUT_CHARS = 20_000
MEMORY_LIMIT_BYTES = 512 * 2**20
STARTUP_SECONDS = 30.0  # a fresh interpreter importing Jinja2: not the template's time
CPU_LIMIT_SECONDS = 5  # the child's own CPU cap, should the parent's clock not stop it first
_ROOT = Path(__file__).resolve().parents[2]


def _readline(stream, seconds: float) -> str | None:
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if ready else None


def render_untrusted(source: str, values: dict[str, Any], *, name: str = "This template",
                     time_limit: float = TIME_LIMIT_SECONDS, max_chars: int = MAX_OUTPUT_CHARS) -> str:
    """Render a writer's template in a child process; TemplateError when it misbehaves."""
    child = subprocess.Popen([sys.executable, "-m", "studio.trust.sandbox"], cwd=_ROOT, text=True, encoding="utf-8",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=sandbox_environment())
    try:
        child.stdin.write(json.dumps({"source": source, "values": values, "max_chars": max_chars}) + "\n")
        child.stdin.close()
        started = _readline(child.stdout, STARTUP_SECONDS)
        if started is None or started.strip() != "started":
            reply = started
        else:
            reply = _readline(child.stdout, time_limit)
            if reply is None:
                raise TemplateError(f"{name} took too long to render (limit {time_limit:g} s) and was stopped.")
        if not reply:
            raise TemplateError(f"{name} crashed the renderer (too much memory?) and was stopped.")
        result = json.loads(reply)
    finally:
        child.kill()
        child.wait()
    if "error" in result:
        raise TemplateError(f"{name} could not be rendered: {result['error'].rstrip('.')}.")
    return result["text"]


def _child() -> None:
    """The child's side: read one job from stdin, answer with one JSON line on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    job = json.loads(sys.stdin.readline())
    out = sys.stdout
    try:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        # Ready before compiling: compiling folds constants ({{ 7**(7**8) }} takes seconds), and that
        # is the template's time, within the same limit as rendering.
        out.write("started\n")
        out.flush()
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_SECONDS, CPU_LIMIT_SECONDS + 1))
        template = env.from_string(job["source"])
        size, parts = 0, []
        for chunk in template.generate(**job["values"]):  # streamed: the size is checked as it grows
            size += len(chunk)
            if size > job["max_chars"]:
                raise ValueError(f"its output passed the limit of {job['max_chars']:,} characters")
            parts.append(chunk)
        answer = {"text": "".join(parts)}
    except MemoryError:
        answer = {"error": "it needed more memory than a template may use"}
    except RecursionError:
        answer = {"error": "it calls itself without end"}
    except Exception as exc:  # the template's own fault: a sandbox refusal, an undefined variable…
        answer = {"error": str(exc)[:500] or type(exc).__name__}
    out.write(json.dumps(answer) + "\n")
    out.flush()


if __name__ == "__main__":
    _child()
