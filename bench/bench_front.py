"""What neo-ray's HTTP front costs: the same route through the front and straight to Serve.

Run from the repository root: `python -m bench front`. A fresh local Ray (2 CPUs), embedded
Redis, the control plane as `neo-ray up` deploys it (cloud mode: no worker competes for the
CPUs). `/worker/status` is loaded through the front (the API port) and directly through
Serve's proxy behind it (its loopback port), alternating, in the same run: open loop at fixed
rates (latency from each request's scheduled send time) and closed loop with 8 clients.
The ratio is front / direct. Then the resident memory of the front's process beside the
proxy's. Everything is stopped at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import psutil
import ray
from pydantic import SecretStr
from ray import serve
from ray.serve.context import _get_global_client

from bench import _load
from bench.bench_control import machine
from neo_ray import names, system
from neo_ray.config import Mode, Settings
from neo_ray.procs import free_port
from neo_ray.stores import embedded

ROUTE = "/api/v1/ingestion/worker/status"
RATES = (50, 100)
OPEN_S = 5.0
CLIENTS = 8
CLOSED_S = 5.0
ROUNDS = 3


def _rss_mb(actor: Any) -> float:
    pid = int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=60))
    return psutil.Process(pid).memory_info().rss / 2**20


def _row(path: str, mode: str, level: int, result: _load.Result) -> dict[str, Any]:
    return {
        "path": path,
        "load": f"{level}/s" if mode == "open" else f"c={level}",
        "n": len(result.latencies),
        "failed": sum(result.errors.values())
        + sum(n for status, n in result.statuses.items() if status != 200),
        "p50": result.percentile(0.50),
        "p99": result.percentile(0.99),
        "rps": result.achieved_rps,
    }


async def _measure(ports: dict[str, int]) -> list[dict[str, Any]]:
    raw = _load.request_bytes("GET", ROUTE, "127.0.0.1", {})
    pools = {path: _load.Pool("127.0.0.1", port) for path, port in ports.items()}
    rows = []
    try:
        for pool in pools.values():  # warm-up: connections, replicas
            await _load.closed_loop(pool, lambda _: raw, 4, 1.0, 300)
        for _ in range(ROUNDS):
            for rate in RATES:
                for path, pool in pools.items():
                    result = await _load.open_loop(pool, lambda _: raw, rate, OPEN_S)
                    rows.append(_row(path, "open", rate, result))
            for path, pool in pools.items():
                result = await _load.closed_loop(pool, lambda _: raw, CLIENTS, CLOSED_S, 100_000)
                rows.append(_row(path, "closed", CLIENTS, result))
    finally:
        for pool in pools.values():
            pool.close()
    return rows


def run() -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="neo-ray-bench-front-"))
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
        system.wait_healthy(system.api_base(settings))
        client = _get_global_client()
        assert client is not None
        ports = {"front": settings.http_port, "direct": int(client.http_config.port)}
        rows = asyncio.run(_measure(ports))
        front = ray.get_actor(names.FRONT, namespace=names.NAMESPACE)
        (proxy,) = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_PROXY_ACTOR")
        ]
        rows.append(
            {
                "memory": True,
                "front_mb": _rss_mb(front),
                "proxy_mb": _rss_mb(ray.get_actor(proxy, namespace="serve")),
                "machine": machine(),
            }
        )
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            embedded.stop_all(root)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    memory = next(r for r in rows if r.get("memory"))
    print(f"HTTP front vs straight to Serve's proxy ({memory['machine']})")
    print(
        f"{'load':>6} {'path':<7} {'n':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6}"
    )
    load = [r for r in rows if not r.get("memory")]
    for r in load:
        print(
            f"{r['load']:>6} {r['path']:<7} {r['n']:>6} {r['failed']:>6} {r['p50']:>7.1f} "
            f"{r['p99']:>7.1f} {r['rps']:>6.1f}"
        )
    print("\nfront / direct, median over rounds:")
    for level in dict.fromkeys(r["load"] for r in load):
        pairs = [r for r in load if r["load"] == level]
        for key in ("p50", "p99", "rps"):
            ratios = sorted(
                f[key] / d[key] for f, d in zip(pairs[0::2], pairs[1::2], strict=True) if d[key]
            )
            if ratios:
                print(f"  {level:>6} {key}: {ratios[len(ratios) // 2]:.2f}")
    print(
        f"\nresident memory: front {memory['front_mb']:.0f} MiB, "
        f"Serve's proxy {memory['proxy_mb']:.0f} MiB"
    )


if __name__ == "__main__":
    print_table(run())
