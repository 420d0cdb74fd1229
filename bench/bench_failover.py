"""Serve failover: how long HTTP is out after a replica or the proxy is SIGKILLed (issue: 5 s).

Run from the repository root: `python -m bench.bench_failover`. A fresh local Ray, embedded
Redis in a temporary folder, the control plane as `neo-ray up` deploys it (system.deploy's
Serve options: two replicas, proxy checked every 0.2 s, the 503 middleware, neo-ray's HTTP
front holding the port while the proxy is replaced). Four clients
poll `/worker/status` throughout; for each kill the table gives the requests that did not get
a 200, the longest wait of any request, and the time from the kill to the first 200 sent after
the first failure (0 when nothing failed). Everything is stopped at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import ray
from pydantic import SecretStr
from ray import serve

from neo_ray import system
from neo_ray.config import Mode, Settings
from neo_ray.procs import free_port
from neo_ray.stores import embedded

ROUTE = "/api/v1/ingestion/worker/status"
ROUNDS = 3
WATCH_S = 12.0
GOAL_S = 5.0
KILLS = ("replica", "proxy")


def _pid(name: str) -> int:
    actor = ray.get_actor(name, namespace="serve")
    return int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=60))


def _target(kind: str) -> str:
    prefix = "SERVE_REPLICA::" if kind == "replica" else "SERVE_PROXY_ACTOR"
    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in found if a["name"].startswith(prefix))[0]


def _settled(base: str) -> None:
    """Wait until both replicas run and the route answers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        app = serve.status().applications.get("control")
        running = app.deployments["control"].replica_states.get("RUNNING", 0) if app else 0
        try:
            ok = httpx.get(base + ROUTE, timeout=5).status_code == 200
        except httpx.HTTPError:
            ok = False
        if running == 2 and ok:
            return
        time.sleep(0.2)
    raise RuntimeError("the control plane did not settle")


def _kill_once(base: str, kind: str) -> dict[str, Any]:
    log: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                at = time.monotonic()
                try:
                    reply = http.get(base + ROUTE)
                    retry = reply.headers.get("retry-after")
                    out = f"{reply.status_code}" + (" Retry-After" if retry else "")
                except httpx.HTTPError as exc:
                    out = type(exc).__name__
                log.append((at, time.monotonic() - at, out))
                time.sleep(0.05)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    pid = _pid(_target(kind))
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    time.sleep(WATCH_S)
    stop.set()
    for t in threads:
        t.join(70)
    after = sorted(x for x in log if x[0] >= killed)
    failed = next((at for at, _, out in after if out != "200"), None)
    back = 0.0
    if failed is not None:
        back = next((at - killed for at, _, out in after if at > failed and out == "200"), -1.0)
    outcomes = Counter(out for _, _, out in after if out != "200")
    return {
        "kill": kind,
        "requests": len(after),
        "not 200": dict(outcomes),
        "max wait s": max(d for _, d, _ in after),
        "back s": back,
    }


def run() -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="neo-ray-bench-failover-"))
    rows = []
    try:
        settings = Settings(
            mode=Mode.CLOUD,
            data_dir=root,
            redis_url=embedded.start_redis(root),
            admin_token=SecretStr("bench-" + "x" * 32),
            http_port=free_port(),
        )
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        system.deploy(settings)
        base = system.api_base(settings)
        for _ in range(ROUNDS):
            for kind in KILLS:
                _settled(base)
                rows.append(_kill_once(base, kind))
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            embedded.stop_all(root)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'kill':<8} {'requests':>8} {'max wait s':>10} {'back s':>7}  not 200")
    for r in rows:
        print(
            f"{r['kill']:<8} {r['requests']:>8} {r['max wait s']:>10.2f} {r['back s']:>7.2f}  "
            f"{r['not 200']}"
        )
    for kind in KILLS:
        backs = [r["back s"] for r in rows if r["kill"] == kind]
        print(f"{kind}: back within {max(backs):.2f} s (goal {GOAL_S:g} s)")


if __name__ == "__main__":
    print_table(run())
