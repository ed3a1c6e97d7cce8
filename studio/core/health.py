"""What /metrics and /readyz read from the studio: figures from the database, so
every process (and a restarted one) reports the same runs, decisions and serving version."""

from __future__ import annotations

from typing import Any

from storage import registry
from studio.logs import redact


def stored_figures(sessions) -> dict[str, Any]:
    """The serving version, when it began to serve, ratings given since, and ended runs by outcome
    and the gate's decisions (counts that only grow, as Prometheus counters must)."""
    with sessions() as session:
        active = registry.active_version(session)
        since = active.updated_at if active is not None else None  # activation is its last change
        return {
            "version": active.name if active is not None else "",
            "base_model": active.base_model if active is not None else "",
            "last_promotion": since.timestamp() if since is not None else None,
            "ratings_since_promotion": registry.count_high_ratings_since(session, 1, since),
            "runs": registry.run_outcomes(session),
            "gate_decisions": registry.gate_decisions(session),
        }


def readiness(studio) -> dict[str, tuple[bool, str]]:
    """Each part a draft or a run needs, and whether it is ready: (ready, in words)."""
    parts: dict[str, tuple[bool, str]] = {}
    try:
        with studio.sessions() as session:
            registry.active_version(session)
        parts["database"] = (True, "reachable")
    except Exception as exc:  # any driver error means the same thing to a load balancer
        first_line = (str(exc).splitlines() or [""])[0][:200]
        parts["database"] = (False, redact(f"{type(exc).__name__}: {first_line}"))  # no password in the answer
    parts.update(studio.pool.readiness())
    parts["training_runner"] = studio.jobs.readiness()
    return parts
