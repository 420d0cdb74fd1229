"""HTTP requests by route and status on Ray's Prometheus endpoint, for the Serve app only.

The plain ASGI control plane never imports this module (it would pull in ray): `app.py`, the
Serve deployment, installs the middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache

from fastapi import FastAPI, Request, Response
from ray.util.metrics import Counter, Histogram

_LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


@cache
def _metrics() -> tuple[Counter, Histogram]:
    tags = ("route", "method", "status")
    requests = Counter("neo_http_requests_total", description="HTTP requests", tag_keys=tags)
    seconds = Histogram(
        "neo_http_request_seconds",
        description="HTTP request latency",
        boundaries=_LATENCY_BOUNDARIES,
        tag_keys=("route", "method"),
    )
    return requests, seconds


def route_of(request: Request) -> str:
    """The matched route's template (`/api/v1/ingestion/jobs/{job_id}`), never the raw path,
    so that job ids and repository URLs do not each become a time series."""
    route = request.scope.get("route")  # path_format: the template without its convertors
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")


def install(app: FastAPI) -> None:
    """Count every request by route, method and status, and time it."""
    import time

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            requests, seconds = _metrics()
            route = route_of(request)
            requests.inc(1, tags={"route": route, "method": request.method, "status": str(status)})
            seconds.observe(
                time.perf_counter() - started, tags={"route": route, "method": request.method}
            )
