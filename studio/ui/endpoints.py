"""The operator's endpoints beside the page: /metrics (Prometheus), /healthz and /readyz.

They are given to the Gradio app's FastAPI server as its first routes (launch's app_kwargs), so
they work wherever the page does, Spaces included, and no page route can shadow them.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from studio.core.health import readiness, stored_figures


def watch(studio, demo) -> None:
    """Point the metrics' gauges at this studio and its page's queue."""
    settings = studio.settings

    def now() -> dict[str, Any]:
        return {**stored_figures(studio.sessions), "waiting": _queued(demo), "capacity": settings.queue_size,
                "streaming": len(studio.drafts.active), "quantize": settings.quantize}

    studio.metrics.watch(now)


def _queued(demo) -> int | None:
    """Requests waiting in Gradio's queue for a worker (what its /queue/status reports)."""
    queue = getattr(demo, "_queue", None)
    return queue.get_status().queue_size if queue is not None else None


def routes(studio) -> list[APIRoute]:
    settings = studio.settings
    token = settings.metrics_token
    private = settings.auth_mode != "single"  # writers sign in: their counts are not for everyone

    def operator(request: Request) -> JSONResponse | None:
        """None when the caller may read the operator's figures, else the answer saying why not."""
        if token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "Send the metrics token: Authorization: Bearer TOKEN."},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        elif private:
            return JSONResponse({"error": "Writers sign in to this studio, so /metrics needs a token: start it with "
                                          "--metrics-token (or STUDIO_METRICS_TOKEN)."}, status_code=403)
        return None

    def metrics(request: Request) -> Response:
        if not studio.metrics.enabled:
            return JSONResponse({"error": "Metrics are off (--metrics off)."}, status_code=404)
        refused = operator(request)
        if refused is not None:
            return refused
        body, content_type = studio.metrics.exposition()
        return Response(body, media_type=content_type)

    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> JSONResponse:
        """Ready or not, and which part, for anyone (a load balancer); what each part is doing (the
        serving version, a database error's first line) only for whoever may read /metrics."""
        parts = readiness(studio)
        ready = all(ok for ok, _ in parts.values())
        detailed = operator(request) is None
        return JSONResponse({"ready": ready, "parts": {name: {"ready": ok, **({"detail": detail} if detailed else {})}
                                                       for name, (ok, detail) in parts.items()}},
                            status_code=200 if ready else 503)

    return [APIRoute("/metrics", metrics, methods=["GET"], include_in_schema=False),
            APIRoute("/healthz", healthz, methods=["GET"], include_in_schema=False),
            APIRoute("/readyz", readyz, methods=["GET"], include_in_schema=False)]
