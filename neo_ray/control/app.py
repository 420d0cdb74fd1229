"""The Serve application `control`: wires settings, broker and health checks to the routes.

Cloud mode runs only this; it imports no torch, tree-sitter, GitPython or pipeline module.
`serve run serve_config.yaml` builds it from the environment through `app`.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve.config import BackpressureConfig

from neo_ray import names
from neo_ray.config import Mode, Settings, load_settings
from neo_ray.control import api, front, metrics, shed
from neo_ray.control.wiring import control_state, qdrant_server_check

fastapi_app = api.create_app()
metrics.install(fastapi_app)  # under Ray only: the plain ASGI app never imports ray


def _qdrant_check(settings: Settings) -> api.HealthCheck | None:
    """Ping the Qdrant server, or outside cloud mode the one actor that owns the local store."""
    if settings.qdrant_url or settings.mode is Mode.CLOUD:
        return qdrant_server_check(settings)

    def ping_actor() -> bool:
        keeper = ray.get_actor(names.STORE, namespace=names.NAMESPACE)
        return bool(ray.get(keeper.ping.remote(), timeout=2.0))

    return ping_actor


# Requests the proxy holds for a free replica slot beyond that, it answers 503 at once.
MAX_QUEUED_REQUESTS = 100


# Serve's default of 5 requests in flight makes its router back off and probe under bursts,
# which collapsed throughput to ~20 req/s in bench_control; the routes are short sync calls
# served by a 40-thread pool, so 64 in flight is safe and keeps p99 near the proxy's floor.
# Past 64 in flight on every replica and MAX_QUEUED_REQUESTS waiting, the proxy answers 503
# with Retry-After instead of queueing without bound. num_replicas here is the default of
# `serve run`; neo-ray's own deployment takes NEO_CONTROL_REPLICAS (system.deploy, build).
@serve.deployment(
    name="control",
    ray_actor_options={"num_cpus": 0.1},
    num_replicas=1,
    max_ongoing_requests=64,
    max_queued_requests=MAX_QUEUED_REQUESTS,
    health_check_period_s=2,  # a dead replica is replaced in seconds (Serve's default: 10)
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=shed.RETRY_AFTER_S),
)
@serve.ingress(fastapi_app)
class Control:
    """The HTTP control plane: small replicas; every job fact lives in Redis."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or load_settings()
        api.configure(control_state(settings, _qdrant_check(settings)))
        hold_replica_grpc_to_loopback()


WIDE = "[::]:0"


def hold_replica_grpc_to_loopback() -> bool:
    """On a node that keeps to 127.0.0.1, bind this replica's gRPC server there too.

    Ray Serve 2.60 binds each replica's inter-deployment gRPC server to `[::]:0` whatever
    the node's address (`Replica._on_initialized`, which runs after this deployment's
    `__init__` and looks `add_port_to_grpc_server` up in its module at call time). On a head
    that `up` keeps to loopback (raycluster.head_env) that one port would listen on every
    interface; the node's own address is what Serve's callers use to reach it. Anywhere else
    nothing changes. Returns whether the bind was moved (Ray pinned to 2.60: a Ray without
    that function leaves it as it is, and the ports test in test_cli_system says so).
    """
    here = ray.get_runtime_context().get_node_id()
    if not any(n["NodeID"] == here and n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes()):
        return False
    from ray.serve._private import replica

    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "neo_ray_loopback", False):
        return original is not None

    def bind_loopback(server: Any, address: str) -> int:
        return int(original(server, "127.0.0.1:0" if address == WIDE else address))

    bind_loopback.neo_ray_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = bind_loopback
    return True


def build(args: dict[str, Any] | None = None) -> serve.Application:
    """Builder for `serve run neo_ray.control.app:build [field=value ...]`.

    Settings come from the environment; Serve's arguments override single fields by name
    (`serve run neo_ray.control.app:build max_queue_size=50`), validated like the rest.
    """
    settings = load_settings(**(args or {}))
    return deployment(settings)


def deployment(settings: Settings) -> serve.Application:
    """The control plane with `settings`, as many replicas as NEO_CONTROL_REPLICAS says."""
    return Control.options(num_replicas=settings.control_replicas).bind(settings)  # type: ignore[attr-defined]


app = Control.bind()  # type: ignore[attr-defined]


FRONT_MARGIN_S = 5.0
"""The front's deadline past the proxy's (shed), whose 503 names the cause."""


@ray.remote(num_cpus=0, max_restarts=-1)
class FrontActor:
    """The HTTP front (control/front.py) on the head node; Ray restarts it if it dies."""

    def __init__(self, settings: Settings, upstream: tuple[str, int]) -> None:
        self.address = (settings.http_host, settings.http_port)
        self.upstream = upstream
        relay = front.Front(
            settings.http_host,
            settings.http_port,
            upstream,
            # The front answers only when the proxy itself is stuck.
            deadline_s=settings.http_deadline_s + FRONT_MARGIN_S,
        )
        front.run_in_thread(relay)

    def ping(self) -> dict[str, Any]:
        return {"listen": list(self.address), "upstream": list(self.upstream)}
