"""Start and stop the whole system in a Ray cluster: services, actors and the Serve app.

`neo-ray up` and the tests call this; it picks the planes by mode and never imports the
pipeline in cloud mode.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ray

from neo_ray import procs
from neo_ray.config import Mode, Settings, check_deployment
from neo_ray.errors import NeoRayError
from neo_ray.names import BRIDGE, FRONT, HISTORY, NAMESPACE, SERVE_APP, STORE, WORKER_PREFIX

ACTOR_NAMES = (BRIDGE, HISTORY, STORE, FRONT)
TOKEN_FILE = "admin-token"
ACTOR_TIMEOUT_S = 120.0
"""How long `deploy` waits for each actor that must answer before the app starts."""
HEALTH_TIMEOUT_S = 120.0
"""How long `neo-ray up` waits for /health to answer 200."""

log = logging.getLogger(__name__)


def with_services(settings: Settings) -> Settings:
    """Settings whose Redis and PostgreSQL URLs point at running servers (embedded if unset)."""
    from neo_ray.stores import embedded as services

    urls = services.ensure_local_services(settings)
    return settings.with_(redis_url=urls.redis_url, database_url=urls.database_url)


def ensure_token(settings: Settings) -> Settings:
    """Local mode without a token: make one, kept in the data dir (0600). Cloud needs its own."""
    if settings.admin_token is not None or settings.mode is not Mode.LOCAL:
        return settings
    path = settings.data_dir / TOKEN_FILE
    if not path.exists():  # private from its first byte, never chmod-ed after the fact
        procs.write_private(path, secrets.token_urlsafe(32))
    return settings.with_(admin_token=read_token(settings.data_dir))


def read_token(data_dir: Path) -> Any:
    from pydantic import SecretStr

    path = data_dir / TOKEN_FILE
    return SecretStr(path.read_text(encoding="utf-8").strip()) if path.exists() else None


def deploy(settings: Settings, say: Callable[[str], None] | None = None) -> None:
    """Create this mode's actors and Serve app in the connected Ray cluster (idempotent).

    `say` hears what is waited for, and for how long at most, before each wait.
    """
    check_deployment(settings)
    say = say or (lambda what: log.info("waiting %s", what))
    if settings.mode in (Mode.LOCAL, Mode.EDGE):
        _deploy_edge(settings, say)
    if settings.mode in (Mode.LOCAL, Mode.CLOUD):
        say("for the Serve app to deploy")
        _deploy_control(settings, say)


def _detached(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True}


def migrate(settings: Settings) -> list[str]:
    """Apply PostgreSQL migrations before any actor writes (idempotent, safe concurrently)."""
    if not settings.database_url:
        return []
    from neo_ray.stores.metadata import Database

    db = Database.from_settings(settings)
    try:
        return db.migrate()
    finally:
        db.close()


def _deploy_edge(settings: Settings, say: Callable[[str], None]) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    say("for the database migrations")
    migrate(settings)

    from neo_ray.edge.bridge import QueueBridge
    from neo_ray.edge.history import HistoryActor

    if not settings.qdrant_url:
        from neo_ray.edge.storekeeper import StoreKeeper

        # The embedded store's folder is on this node: pin its one owner here.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        keeper = StoreKeeper.options(scheduling_strategy=here, **_detached(STORE))  # type: ignore[attr-defined]
        say(f"for the vector store actor (at most {ACTOR_TIMEOUT_S:.0f} s)")
        ray.get(keeper.remote(settings).ping.remote(), timeout=ACTOR_TIMEOUT_S)
    # Bridge and history stay on this node while it lives (soft): edge nodes come and go.
    near = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    history = HistoryActor.options(scheduling_strategy=near, **_detached(HISTORY)).remote(settings)  # type: ignore[attr-defined]
    say(f"for the history actor (at most {ACTOR_TIMEOUT_S:.0f} s)")
    ray.get(history.ping.remote(), timeout=ACTOR_TIMEOUT_S)
    QueueBridge.options(scheduling_strategy=near, **_detached(BRIDGE)).remote(settings)  # type: ignore[attr-defined]


# Serve's controller checks its HTTP proxy every 10 s and replaces it after 3 failed checks:
# a killed proxy left the port refusing connections for ~30 s. Checked every 0.2 s, a dead
# proxy (whose check fails at once) is replaced in ~4 s; a slow but live one still has
# Serve's 10 s per check before it counts as failed. The user's own environment wins.
PROXY_HEALTH_CHECK_PERIOD_S = "0.2"


def serve_controller_env(settings: Settings) -> dict[str, str]:
    """Environment of the Serve controller neo-ray starts, which its proxies inherit: the
    proxy check period and the middleware that answers 503 when no replica does."""
    from neo_ray.control import shed

    period = "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S"
    return {
        period: os.environ.get(period, PROXY_HEALTH_CHECK_PERIOD_S),
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": shed.CALLBACK,
        shed.DEADLINE_ENV: str(settings.http_deadline_s),
    }


def _deploy_control(settings: Settings, say: Callable[[str], None]) -> None:
    from ray import serve
    from ray.serve.context import _get_global_client

    from neo_ray.control.app import deployment

    if settings.http_front:
        http = {"host": "127.0.0.1", "port": settings.serve_port or procs.free_port()}
    else:
        http = {"host": settings.http_host, "port": settings.http_port}
    serve.start(
        http_options=http,
        controller_options={"runtime_env": {"env_vars": serve_controller_env(settings)}},
    )
    serve.run(deployment(settings), name=SERVE_APP, route_prefix="/")
    if settings.http_front:
        # A Serve that already ran keeps the port it had: relay to the one it listens on.
        client = _get_global_client()
        assert client is not None  # serve.start made it
        proxy = ("127.0.0.1", int(client.http_config.port))
        say(
            f"for the HTTP front on {settings.http_host}:{settings.http_port} "
            f"(at most {ACTOR_TIMEOUT_S:.0f} s)"
        )
        _start_front(settings, proxy)


def _start_front(settings: Settings, proxy: tuple[str, int]) -> None:
    """The front on this node, relaying to Serve's proxy; replaced if it relays elsewhere."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from neo_ray.control.app import FrontActor

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    options = {"scheduling_strategy": here, **_detached(FRONT)}
    front = FrontActor.options(**options).remote(settings, proxy)  # type: ignore[attr-defined]
    answer = ray.get(front.ping.remote(), timeout=ACTOR_TIMEOUT_S)
    if answer["upstream"] != list(proxy) or answer["listen"] != [
        settings.http_host,
        settings.http_port,
    ]:
        ray.kill(front, no_restart=True)
        # The kill is asynchronous: until the old one is gone, its name would hand it back
        # and its socket would hold the port.
        deadline = time.monotonic() + ACTOR_TIMEOUT_S
        while _named(FRONT) and time.monotonic() < deadline:
            time.sleep(0.1)
        front = FrontActor.options(**options).remote(settings, proxy)  # type: ignore[attr-defined]
        ray.get(front.ping.remote(), timeout=ACTOR_TIMEOUT_S)


def _named(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def teardown(*, workers: bool = True, shutdown_serve: bool = False) -> list[str]:
    """Remove the Serve app and kill neo-ray's named actors; return what was removed.

    `shutdown_serve` also stops Serve itself (controller and proxies): right when the cluster
    is neo-ray's own, wrong on a shared one where other applications may run.
    """
    removed = []
    try:
        # Before its workers go: the jobs they hold are free for the next bridge at once.
        ray.get(ray.get_actor(BRIDGE, namespace=NAMESPACE).release.remote(), timeout=30)
    except Exception:  # no bridge (cloud mode), or one that cannot answer: it is killed below
        log.debug("the bridge did not release its claims", exc_info=True)
    try:
        from ray import serve

        serve.delete(SERVE_APP)
        removed.append(f"serve:{SERVE_APP}")
        if shutdown_serve:
            serve.shutdown()
    except Exception:  # Serve may not be running in this cluster (edge mode)
        log.debug("no Serve app to delete", exc_info=True)
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE
    ]
    for name in names:
        if name in ACTOR_NAMES or (workers and name.startswith(WORKER_PREFIX)):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                removed.append(name)
            except ValueError:
                pass
    return removed


def wait_healthy(base_url: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll /health until it answers 200; raise with the last answer when it never does."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{base_url}/health", timeout=2.0)
            last = reply.json()
            if reply.status_code == 200:
                return dict(last)
        except (httpx.HTTPError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise NeoRayError(f"{base_url}/health did not become healthy in {timeout_s:.0f} s: {last}")


def api_base(settings: Settings) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return f"http://{host}:{settings.http_port}"


def check_mode(settings: Settings) -> None:
    """Refuse a mode whose shared settings are missing (config.check_deployment)."""
    check_deployment(settings)
