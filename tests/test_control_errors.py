"""The control plane's 503s, each on an app of its own: Redis stopped, no admin token.

Each test runs against both forms of the same control plane: the Serve deployment and the
plain ASGI app (uvicorn, no Ray).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from ray import serve
from ray_fixtures import TOKEN, System, free_port

from neo_ray.config import Settings
from neo_ray.control.app import Control
from neo_ray.control.asgi import create_app
from neo_ray.stores import embedded as services

pytestmark = pytest.mark.ray


@pytest.fixture(params=["serve", "asgi"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def plain_asgi(settings: Settings) -> Iterator[str]:
    """The plain ASGI control plane under uvicorn, in a thread, on a free port."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def deployed(neo: System, name: str, settings: Settings, form: str) -> Iterator[str]:
    """The control plane with `settings` in the given form; yields its base URL."""
    if form == "asgi":
        with plain_asgi(settings) as base:
            yield base
        return
    serve.run(Control.bind(settings), name=name, route_prefix=f"/{name}")
    try:
        yield f"{neo.base}/{name}"
    finally:
        serve.delete(name)


@pytest.fixture
def lonely_redis(neo_system: System, service_dir: Path, form: str) -> Iterator[tuple[str, str]]:
    """A control plane whose Redis is a throwaway server this test may stop."""
    url = services.start_redis(service_dir)
    settings = neo_system.settings.model_copy(
        update={"redis_url": url, "redis_prefix": f"lonely-{uuid.uuid4().hex[:6]}:"}
    )
    with deployed(neo_system, "lonely", settings, form) as base:
        yield base, str(service_dir)


def test_redis_down_is_503_and_health_says_which(lonely_redis: tuple[str, str]) -> None:
    base, folder = lonely_redis
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=30) as http:
        assert (
            http.post("/api/v1/ingestion/ingest/github.com/a/b", headers=headers).status_code == 202
        )
        assert http.get("/health").status_code == 200
        services.stop_all(Path(folder))
        reply = http.post("/api/v1/ingestion/ingest/github.com/a/c", headers=headers)
        assert reply.status_code == 503 and "queue unavailable" in reply.json()["detail"]
        assert http.get("/api/v1/ingestion/worker/status").status_code == 503
        health = http.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert health.json()["services"]["redis"] == "down"
        assert health.json()["services"]["database"] == "up"


def test_no_admin_token_is_503_never_open(neo_system: System, form: str) -> None:
    settings = neo_system.settings.model_copy(update={"admin_token": None})
    with (
        deployed(neo_system, "tokenless", settings, form) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        for headers in (
            {},
            {"Authorization": f"Bearer {TOKEN}"},
            {"Authorization": "Bearer x"},
        ):
            reply = http.post("/api/v1/ingestion/ingest/github.com/a/b", headers=headers)
            assert reply.status_code == 503
            assert "PHAROS_ADMIN_TOKEN" in reply.json()["detail"]


def test_placeholder_token_is_refused_at_start() -> None:
    from neo_ray.config import load_settings
    from neo_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(admin_token=SecretStr("changeme"))


def test_cloud_plane_health_skips_stores_it_was_not_given(neo_system: System, form: str) -> None:
    from neo_ray.config import Mode

    settings = neo_system.settings.model_copy(
        update={"mode": Mode.CLOUD, "database_url": None, "qdrant_url": None}
    )
    with deployed(neo_system, "cloudish", settings, form) as base:
        health = httpx.get(f"{base}/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["services"] == {
        "redis": "up",
        "database": "unconfigured",
        "qdrant": "unconfigured",
    }


def test_both_forms_answer_the_same_routes(neo_system: System) -> None:
    """The contract: the same status codes and body keys from Serve and plain ASGI."""
    settings = neo_system.settings
    routes = [
        ("GET", "/api/v1/ingestion/worker/status"),
        ("GET", "/api/v1/ingestion/jobs/history?limit=2"),
        ("GET", "/api/v1/ingestion/jobs/not-a-uuid"),
        ("GET", f"/api/v1/ingestion/jobs/{uuid.uuid4()}"),
        ("GET", "/api/v1/ingestion/jobs/history?limit=0"),
        ("POST", "/api/v1/ingestion/ingest/ftp://x/y"),
        ("GET", "/health"),
    ]
    seen: dict[str, list[tuple[int, list[str]]]] = {}
    for form in ("serve", "asgi"):
        with deployed(neo_system, "same", settings, form) as base:
            with httpx.Client(base_url=base, timeout=30) as http:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                replies = [http.request(m, path, headers=auth) for m, path in routes]
            seen[form] = [(r.status_code, sorted(r.json())) for r in replies]
    assert seen["serve"] == seen["asgi"]
    assert [code for code, _ in seen["asgi"]] == [200, 200, 400, 404, 400, 400, 200]
