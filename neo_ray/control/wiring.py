"""Wiring shared by both forms of the control plane: settings → broker and health checks.

No Ray here: the plain ASGI process (asgi.py) runs from the base install, without ray; the
Serve deployment (app.py) adds its Ray-only check of the local store's owner actor.
"""

from __future__ import annotations

import httpx

from neo_ray.config import Settings
from neo_ray.control import api
from neo_ray.errors import ConfigError
from neo_ray.stores.queue import Broker


def qdrant_server_check(settings: Settings) -> api.HealthCheck | None:
    """Ping the Qdrant server's /readyz; None when no server is configured."""
    if not settings.qdrant_url:
        return None
    url = settings.qdrant_url.rstrip("/") + "/readyz"
    key = settings.qdrant_api_key
    headers = {"api-key": key.get_secret_value()} if key else {}
    return lambda: httpx.get(url, headers=headers, timeout=2.0).status_code == 200


def database_check(settings: Settings) -> api.HealthCheck | None:
    if not settings.database_url:
        return None
    url, ca = settings.database_url, settings.database_ca

    def ping() -> bool:
        from neo_ray.stores.metadata import ping_url

        return ping_url(url, timeout_s=2.0, ca=ca)

    return ping


def control_state(
    settings: Settings, qdrant_check: api.HealthCheck | None = None
) -> api.ControlState:
    """What the routes read: the settings, the broker the settings name, the store checks."""
    if not settings.has_queue:
        raise ConfigError(
            "the control plane needs NEO_REDIS_URL (neo-ray up sets it) or "
            "UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN"
        )
    broker = Broker.from_settings(settings)
    checks: dict[str, api.HealthCheck | None] = {
        "redis": broker.ping,
        "database": database_check(settings),
        "qdrant": qdrant_check or qdrant_server_check(settings),
    }
    return api.ControlState(settings, broker, checks)
