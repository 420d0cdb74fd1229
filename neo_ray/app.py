"""The Serve application `control`: wires settings, broker and health checks to the routes.

Cloud mode runs only this; it imports no torch, tree-sitter, GitPython or pipeline module.
`serve run serve_config.yaml` builds it from the environment through `app`.
"""

from __future__ import annotations

from typing import Any

import httpx
import ray
from ray import serve

from neo_ray import api
from neo_ray.broker import Broker
from neo_ray.config import Settings, load_settings

STORE_ACTOR = "store"
NAMESPACE = "neo"

fastapi_app = api.create_app()


def _qdrant_check(settings: Settings) -> api.HealthCheck:
    """Ping the Qdrant server, or in local mode the one actor that owns the embedded store."""
    if settings.qdrant_url:
        url = settings.qdrant_url.rstrip("/") + "/readyz"
        key = settings.qdrant_api_key
        headers = {"api-key": key.get_secret_value()} if key else {}
        return lambda: httpx.get(url, headers=headers, timeout=2.0).status_code == 200

    def ping_actor() -> bool:
        keeper = ray.get_actor(STORE_ACTOR, namespace=NAMESPACE)
        return bool(ray.get(keeper.ping.remote(), timeout=2.0))

    return ping_actor


def _database_check(settings: Settings) -> api.HealthCheck:
    if not settings.database_url:
        return lambda: False
    url = settings.database_url

    def ping() -> bool:
        from neo_ray.db import ping_url

        return ping_url(url, timeout_s=2.0)

    return ping


@serve.deployment(name="control", ray_actor_options={"num_cpus": 0.1}, num_replicas=1)
@serve.ingress(fastapi_app)
class Control:
    """The HTTP control plane: one small replica; every job fact lives in Redis."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or load_settings()
        if not settings.redis_url:
            raise ValueError("the control plane needs NEO_REDIS_URL (neo-ray up sets it)")
        broker = Broker.connect(settings.redis_url, prefix=settings.redis_prefix)
        checks: dict[str, api.HealthCheck] = {
            "redis": broker.ping,
            "database": _database_check(settings),
            "qdrant": _qdrant_check(settings),
        }
        api.configure(api.ControlState(settings, broker, checks))


def build(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder for `serve run neo_ray.app:build` (settings from the environment)."""
    return Control.bind(load_settings())  # type: ignore[attr-defined]


app = Control.bind()  # type: ignore[attr-defined]
