"""The control plane's two forms side by side (issue 9): plain ASGI (`neo-ray api`) and Serve.

Run from the repository root: `python -m bench.bench_forms`. For each form, in one run on the
same embedded Redis: whole process tree memory (RSS and PSS, summed), start time (spawn to the
first 200 from /health), latency at 100 requests/s open loop and throughput at 50 clients
closed loop, each for `GET /api/v1/ingestion/worker/status` beside a trivial route in the same
server (`GET /docs`, a constant HTML page). Then, on the plain ASGI form, the same closed loop
while a CPU-bound Node2Vec training runs beside it (as a job does on an edge node in local
mode), and again with that training at the lowest CPU priority (nice 19): if both routes fall
alike, the cause is CPU contention, not the route.
"""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import _load
from bench.bench_control import machine
from neo_ray import raycluster
from neo_ray.models import WorkerHeartbeat, utcnow_iso
from neo_ray.procs import free_port
from neo_ray.stores import embedded as services
from neo_ray.stores.queue import Broker

STATUS = "/api/v1/ingestion/worker/status"
TRIVIAL = "/docs"
RATE, OPEN_S = 100, 6.0
CLIENTS, CLOSED_S = 50, 5.0
TOKEN = "bench-forms-admin-token-0123456789"
Row = dict[str, Any]


def tree_memory(root_pid: int) -> tuple[int, float, float]:
    """(processes, RSS MB, PSS MB) of a process and all its descendants."""
    root = psutil.Process(root_pid)
    procs = [root, *root.children(recursive=True)]
    rss = pss = 0.0
    count = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count += 1
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return count, rss / 2**20, pss / 2**20


def _wait_health(base: str, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{base}/health never answered 200")


async def _routes(port: int, *, open_loop: bool) -> dict[str, _load.Result]:
    results = {}
    for name, path in (("status", STATUS), ("trivial", TRIVIAL)):
        raw = _load.request_bytes("GET", path, f"127.0.0.1:{port}", {})

        def make(_: int, raw: bytes = raw) -> bytes:
            return raw

        pool = _load.Pool("127.0.0.1", port)
        await pool.warm(8)
        await _load.closed_loop(pool, make, 8, 1.0, 2000)  # warm the path
        if open_loop:
            results[name] = await _load.open_loop(pool, make, RATE, OPEN_S)
        else:
            results[name] = await _load.closed_loop(pool, make, CLIENTS, CLOSED_S, 50_000)
        pool.close()
    return results


def _load_rows(form: str, port: int, condition: str = "") -> list[Row]:
    rows = []
    for kind, is_open in (("open 100/s", True), ("closed 50", False)):
        if condition and is_open:
            continue
        results = asyncio.run(_routes(port, open_loop=is_open))
        for route, r in results.items():
            rows.append(
                {
                    "form": form,
                    "load": kind + (f", {condition}" if condition else ""),
                    "route": route,
                    "rps": round(r.achieved_rps, 1),
                    "p50_ms": round(r.percentile(0.5), 1),
                    "p99_ms": round(r.percentile(0.99), 1),
                    "errors": sum(r.errors.values())
                    + sum(n for s, n in r.statuses.items() if s != 200),
                }
            )
    return rows


@contextmanager
def _plain_asgi(redis_url: str) -> Iterator[tuple[int, subprocess.Popen[bytes], float]]:
    port = free_port()
    env = {**os.environ, "NEO_MODE": "cloud", "NEO_REDIS_URL": redis_url}
    env["PHAROS_ADMIN_TOKEN"] = TOKEN
    exe = [sys.executable, "-m", "neo_ray.cli", "api", "--port", str(port)]
    spawned = time.monotonic()
    proc = subprocess.Popen(exe, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_health(f"http://127.0.0.1:{port}", 60)
        yield port, proc, time.monotonic() - spawned
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


@contextmanager
def _serve(redis_url: str, root: Path) -> Iterator[tuple[int, int, float]]:
    """`neo-ray up --mode cloud` against a Ray head of its own (as `up` starts one)."""
    port = free_port()
    env = {**os.environ, "NEO_MODE": "cloud", "NEO_REDIS_URL": redis_url}
    env.update(PHAROS_ADMIN_TOKEN=TOKEN, NEO_HTTP_PORT=str(port), NEO_DATA_DIR=str(root))
    env.pop("RAY_ADDRESS", None)
    spawned = time.monotonic()
    up = subprocess.run(
        [sys.executable, "-m", "neo_ray.cli", "up", "--mode", "cloud"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if up.returncode != 0:
        raise RuntimeError(f"neo-ray up --mode cloud failed: {up.stderr[-2000:]}")
    started = _wait_health(f"http://127.0.0.1:{port}", 120) + (time.monotonic() - spawned)
    head_pid = int(json.loads((root / raycluster.HEAD_FILE).read_text())["pid"])
    try:
        yield port, head_pid, started
    finally:
        subprocess.run(
            [sys.executable, "-m", "neo_ray.cli", "down"], env=env, capture_output=True, timeout=300
        )


@contextmanager
def _trainer(root: Path, nice: int) -> Iterator[None]:
    """A CPU-bound Node2Vec training (`neo-ray embed`), as a job's train stage."""
    edges = root / "graph.tsv"
    if not edges.exists():
        rng = random.Random(0)
        lines = [f"{rng.randrange(20_000)}\t{rng.randrange(20_000)}" for _ in range(120_000)]
        edges.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "neo_ray.cli", "embed", str(edges), "--out", str(root / "e.npy")]
    cmd += ["--epochs", "200"]
    proc = subprocess.Popen(
        ["nice", "-n", str(nice), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(8.0)  # past start-up and walks: into training
        if proc.poll() is not None:
            raise RuntimeError("the training ended before the measurement")
        yield
    finally:
        proc.kill()
        proc.wait(30)


def _seed_status(redis_url: str) -> None:
    """One live worker heartbeat, so the status route reads a worker as it does in use."""
    with Broker.connect(redis_url) as broker:
        hb = WorkerHeartbeat(
            worker_id="worker-0",
            node="bench",
            device="cpu",
            state="Idle",
            heartbeat_at=utcnow_iso(),
        )
        broker.heartbeat(hb, ttl_s=3600)


def run(forms: tuple[str, ...] = ("asgi", "serve")) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="neo-ray-bench-forms-"))
    rows: list[Row] = []
    try:
        redis_url = services.start_redis(root / "services")
        _seed_status(redis_url)
        if "asgi" in forms:
            rows += _measure_plain_asgi(redis_url, root)
        if "serve" in forms:
            rows += _measure_serve(redis_url, root)
    finally:
        services.stop_all(root / "services")
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _measure_plain_asgi(redis_url: str, root: Path) -> list[Row]:
    rows: list[Row] = []
    with _plain_asgi(redis_url) as (port, proc, start_s):
        count, rss, pss = tree_memory(proc.pid)
        rows += _load_rows("plain ASGI", port)
        after = tree_memory(proc.pid)
        rows.append(_mem_row("plain ASGI", start_s, count, rss, pss, after))
        for nice in (0, 19):
            with _trainer(root, nice):
                rows += _load_rows("plain ASGI", port, f"training nice {nice}")
    return rows


def _measure_serve(redis_url: str, root: Path) -> list[Row]:
    rows: list[Row] = []
    with _serve(redis_url, root / "serve") as (port, head, start_s):
        count, rss, pss = tree_memory(head)
        rows += _load_rows("Serve", port)
        rows.append(_mem_row("Serve", start_s, count, rss, pss, tree_memory(head)))
    return rows


def _mem_row(
    form: str, start_s: float, count: int, rss: float, pss: float, after: tuple[int, float, float]
) -> Row:
    return {
        "form": form,
        "start_s": round(start_s, 2),
        "processes": count,
        "rss_mb": round(rss),
        "pss_mb": round(pss),
        "rss_after_load_mb": round(after[1]),
        "pss_after_load_mb": round(after[2]),
    }


def print_table(rows: list[Row]) -> None:
    print(f"machine: {machine()}")
    for row in rows:
        if "start_s" in row:
            print(
                f"{row['form']:<11} start {row['start_s']:>6.2f} s  {row['processes']:>3} processes"
                f"  RSS {row['rss_mb']:>5} MB  PSS {row['pss_mb']:>5} MB"
                f"  (after load: RSS {row['rss_after_load_mb']} MB,"
                f" PSS {row['pss_after_load_mb']} MB)"
            )
    head = f"{'form':<11} {'load':<28} {'route':<8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
    print(head + " err")
    for row in rows:
        if "route" in row:
            print(
                f"{row['form']:<11} {row['load']:<28} {row['route']:<8} {row['rps']:>7} "
                f"{row['p50_ms']:>7} {row['p99_ms']:>7} {row['errors']}"
            )
    by = {(r["form"], r["load"], r["route"]): r for r in rows if "route" in r}
    for form, load in sorted({(f, ld) for f, ld, _ in by}):
        status, trivial = by.get((form, load, "status")), by.get((form, load, "trivial"))
        if status and trivial and trivial["rps"]:
            ratio = status["rps"] / trivial["rps"]
            print(f"status / trivial throughput, {form}, {load}: {ratio:.2f}")


if __name__ == "__main__":
    print_table(run(tuple(sys.argv[1:]) or ("asgi", "serve")))
