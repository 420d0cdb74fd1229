"""The control plane's 503s, each on a Serve app of its own: Redis stopped, no admin token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from ray import serve
from ray_fixtures import TOKEN, System

from neo_ray.config import Settings
from neo_ray.control.app import Control
from neo_ray.stores import embedded as services

pytestmark = pytest.mark.ray


def _deploy(name: str, settings: Settings) -> str:
    serve.run(Control.bind(settings), name=name, route_prefix=f"/{name}")
    return f"/{name}"


@pytest.fixture
def lonely_redis(neo_system: System, service_dir: Path) -> Iterator[tuple[str, str]]:
    """A Serve app whose Redis is a throwaway server this test may stop."""
    url = services.start_redis(service_dir)
    settings = neo_system.settings.model_copy(
        update={"redis_url": url, "redis_prefix": f"lonely-{uuid.uuid4().hex[:6]}:"}
    )
    prefix = _deploy("lonely", settings)
    yield neo_system.base + prefix, str(service_dir)
    serve.delete("lonely")


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


def test_no_admin_token_is_503_never_open(neo_system: System) -> None:
    settings = neo_system.settings.model_copy(update={"admin_token": None})
    base = neo_system.base + _deploy("tokenless", settings)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            for headers in (
                {},
                {"Authorization": f"Bearer {TOKEN}"},
                {"Authorization": "Bearer x"},
            ):
                reply = http.post("/api/v1/ingestion/ingest/github.com/a/b", headers=headers)
                assert reply.status_code == 503
                assert "PHAROS_ADMIN_TOKEN" in reply.json()["detail"]
    finally:
        serve.delete("tokenless")


def test_placeholder_token_is_refused_at_start() -> None:
    from neo_ray.config import load_settings
    from neo_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(admin_token=SecretStr("changeme"))


def test_cloud_plane_health_skips_stores_it_was_not_given(neo_system: System) -> None:
    from neo_ray.config import Mode

    settings = neo_system.settings.model_copy(
        update={"mode": Mode.CLOUD, "database_url": None, "qdrant_url": None}
    )
    base = neo_system.base + _deploy("cloudish", settings)
    try:
        health = httpx.get(f"{base}/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["services"] == {
            "redis": "up",
            "database": "unconfigured",
            "qdrant": "unconfigured",
        }
    finally:
        serve.delete("cloudish")
