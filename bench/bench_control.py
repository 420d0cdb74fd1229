"""Control-plane benchmark (issue 4): route latency beside Serve's floor, replica RSS, hand-off.

Run from the repository root: `python -m bench.bench_control`. `run()` returns the table's
rows for `python -m bench` to gather. Everything runs on loopback in one fresh local Ray with
embedded Redis and PostgreSQL in a temporary folder, all stopped at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import asyncio
import logging
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import psutil
import ray
from pydantic import SecretStr
from ray import serve

from bench import _load
from neo_ray import system
from neo_ray.config import Mode, Settings
from neo_ray.errors import QueueFull
from neo_ray.models import Task, utcnow_iso
from neo_ray.pipeline.sample import write_sample_repo
from neo_ray.procs import free_port, pid_alive
from neo_ray.stores import embedded as services
from neo_ray.stores.queue import Broker, dedupe_key_for
from neo_ray.timeutil import parse_utc

API = "/api/v1/ingestion"
FLOOR_PREFIX = "/floor"
RATES = (25, 50, 100, 200)
OPEN_S = 5.0
CONCURRENCY = (1, 4, 16)
CLOSED_S = 3.0
CLOSED_MAX = 5_000
GOAL_RATE = 100
GOAL_ROUNDS = 3
SUBMITS = 10
QUEUE_CAP = 10
# Goals of issue 4.
STATUS_P99_MS = 20.0
POST_P99_MS = 30.0
RSS_MB = 250.0
START_MS = 100.0
# Modules a cloud-mode replica must never hold, and the shared objects that would betray them.
FORBIDDEN = ("torch", "tree_sitter", "git", "neo_ray.pipeline")
FORBIDDEN_SO = ("libtorch", "/torch/", "tree_sitter")
# Allowed, but large: reported so that the RSS figure can be explained.
HEAVY = (
    "qdrant_client",
    "numpy",
    "grpc",
    "psycopg",
    "neo_ray.stores.vectors",
    "neo_ray.edge.storekeeper",
)
# max_ongoing_requests tried against the deployed Control's when the proxy queues requests.
TUNED_ONGOING = 64

T = TypeVar("T")
Row = dict[str, object]


def machine() -> str:
    """CPU model, cores, memory, Python and Ray: where the figures were measured."""
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(os.sched_getaffinity(0))
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {cores} cores, {ram:.1f} GiB RAM, Python {platform.python_version()}, "
        f"Ray {ray.__version__}"
    )


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _aio(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _floor_app() -> Any:
    """A trivial Serve app (FastAPI ingress, one sync route) like Control: Serve's own cost.

    Built inside a function so that cloudpickle ships it by value (bench is no installed
    package the replica could import).
    """
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    @serve.deployment(name="floor", ray_actor_options={"num_cpus": 0.1}, num_replicas=1)
    @serve.ingress(app)
    class Floor:
        pass

    return Floor.bind()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the system


@contextmanager
def _cluster(
    root: Path, *, floor: bool = True, queue_cap: int = QUEUE_CAP, **overrides: Any
) -> Iterator[Settings]:
    """Embedded services, a fresh local Ray, the local-mode system (and, with `floor`, the
    trivial floor app); every process it started is checked gone at the end."""
    ours: list[psutil.Process] = []
    try:
        redis_url = services.start_redis(root)
        database_url = services.start_postgres(root)
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=1,
            resources={"edge": 1},
            namespace="neo",
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        ours += psutil.Process().children(recursive=True)
        settings = Settings(
            data_dir=root / "data",
            redis_url=redis_url,
            redis_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
            database_url=database_url,
            admin_token=SecretStr("bench-" + uuid.uuid4().hex),
            allow_local_repos=True,
            local_repos_root=root,
            http_port=free_port(),
            max_queue_size=queue_cap,
            control_replicas=1,  # the figures are one replica's (RSS, latency as before)
            **overrides,
        )
        system.deploy(settings)
        if floor:
            serve.run(_floor_app(), name="floor", route_prefix=FLOOR_PREFIX)
        system.wait_healthy(system.api_base(settings), timeout_s=180)
        yield settings
    finally:
        ours += psutil.Process().children(recursive=True)
        if ray.is_initialized():
            system.teardown(shutdown_serve=True)
            ray.shutdown()
        services.stop_all(root)
        _check_gone(ours, root)


def _check_gone(procs: list[psutil.Process], root: Path, timeout_s: float = 30.0) -> None:
    """Every process this run started (Ray's, Redis, PostgreSQL) must be gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in procs if _alive(p)]
        alive += [p for p in psutil.process_iter() if _holds_path(p, root)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if alive:
        names = sorted({f"{p.pid}:{p.name()}" for p in alive if _alive(p)})
        raise RuntimeError(f"processes left behind: {names}")
    print("teardown: no process of this run is left (Ray, Redis, PostgreSQL)")


def _alive(p: psutil.Process) -> bool:
    return pid_alive(p.pid)


def _holds_path(p: psutil.Process, root: Path) -> bool:
    try:
        return any(str(root) in part for part in p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _wait(predicate: Callable[[], T], timeout_s: float, every_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise RuntimeError(f"condition not met within {timeout_s} s")


# --------------------------------------------------------------------------- submit to start


def measure_submit_to_start(settings: Settings, repos: Path) -> list[Row]:
    """POST an ingest to an idle worker; time from the POST's send to the job's started_at."""
    base = system.api_base(settings)
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    auth = {"Authorization": f"Bearer {token}"}
    broker = Broker.connect(settings.redis_url or "", prefix=settings.redis_prefix)
    starts, posts = [], []
    with broker, httpx.Client(base_url=base, timeout=30.0) as http:
        http.get(f"{API}/worker/status")  # open the keep-alive connection before timing
        for i in range(SUBMITS):
            repo = write_sample_repo(repos / f"r{i}")
            path = f"{API}/ingest/{quote(f'file://{repo}', safe='')}"
            time.sleep(1.0)  # the worker has been idle a while, the bridge waits in BLMOVE
            sent, t0 = time.time(), time.perf_counter()
            reply = http.post(path, headers=auth)
            posts.append((time.perf_counter() - t0) * 1000)
            if reply.status_code != 202:
                raise RuntimeError(f"ingest answered {reply.status_code}: {reply.text}")
            job_id = reply.json()["job_id"]
            job = _wait(partial(_started, broker, job_id), 30.0, every_s=0.005)
            started = parse_utc(job["started_at"])
            starts.append((started.timestamp() - sent) * 1000)
            done = _wait(partial(_finished, broker, job_id), 180.0, every_s=0.05)
            if done["state"] != "complete":
                raise RuntimeError(f"job {job_id} ended {done['state']}: {done.get('record')}")
    return [
        _summary_row("submit→start (POST send → started_at)", starts, START_MS),
        _summary_row("  of which POST answer", posts, None),
    ]


def _started(broker: Broker, job_id: str) -> dict[str, Any]:
    job = broker.get_job(job_id) or {}
    return job if job.get("started_at") else {}


def _finished(broker: Broker, job_id: str) -> dict[str, Any]:
    job = broker.get_job(job_id) or {}
    return job if job.get("state") in ("complete", "failed", "skipped") else {}


def _summary_row(what: str, values_ms: list[float], goal: float | None) -> Row:
    ordered = sorted(values_ms)
    p50 = ordered[(len(ordered) - 1) // 2]
    return {
        "benchmark": "control",
        "section": "handoff",
        "target": what,
        "n": len(ordered),
        "p50_ms": round(p50, 1),
        "max_ms": round(ordered[-1], 1),
        "min_ms": round(ordered[0], 1),
        "goal": f"≤ {goal:.0f} ms" if goal else "",
        "met": (ordered[-1] <= goal) if goal else None,
    }


# --------------------------------------------------------------------------- load


class Targets:
    """The three routes under load: floor, worker status, and ingest into a full queue."""

    def __init__(self, settings: Settings) -> None:
        host = f"127.0.0.1:{settings.http_port}"
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        auth = {"Authorization": f"Bearer {token}"}
        floor = _load.request_bytes("GET", f"{FLOOR_PREFIX}/", host, {})
        status = _load.request_bytes("GET", f"{API}/worker/status", host, {})
        run = uuid.uuid4().hex[:6]
        self.requests: dict[str, _load.RequestBytes] = {
            "floor": lambda i: floor,
            "status": lambda i: status,
            "post429": lambda i: _load.request_bytes(
                "POST", f"{API}/ingest/github.com/o/r{run}x{i}", host, auth
            ),
        }
        self.expect = {"floor": 200, "status": 200, "post429": 429}
        self.port = settings.http_port


def fill_queue(settings: Settings) -> None:
    """Pause the bridge and fill the queue to its cap, so every further POST is a 429."""
    ray.get(ray.get_actor("bridge", namespace="neo").pause.remote())
    base = system.api_base(settings)
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30.0) as http:
        for k in range(QUEUE_CAP):
            reply = http.post(f"{API}/ingest/github.com/o/fill{k}", headers=auth)
            if reply.status_code != 202:
                raise RuntimeError(f"filling the queue: {reply.status_code} {reply.text}")
        reply = http.post(f"{API}/ingest/github.com/o/one-more", headers=auth)
        if reply.status_code != 429 or "retry-after" not in reply.headers:
            raise RuntimeError(f"a full queue answered {reply.status_code}, not 429")


class CpuMeter:
    """CPU seconds by process group during a run: Serve's proxy, each replica, Redis, the
    generator, and everything else on the machine (other people's work skews the figures)."""

    GROUPS = (
        ("ray::ProxyActor", "proxy"),
        ("ray::ServeReplica:control", "control"),
        ("ray::ServeReplica:floor", "floor"),
        ("ray::ServeReplica:tuned", "tuned"),
        ("redis-server", "redis"),
    )

    def __init__(self, root: Path) -> None:
        self._root = str(root)
        self._me = psutil.Process()

    def _group(self, proc: psutil.Process) -> str:
        if proc.pid == self._me.pid:
            return "generator"
        command = " ".join(proc.cmdline())
        for marker, group in self.GROUPS:
            if command.startswith(marker) or (group == "redis" and marker in command):
                return group
        return "ours"  # raylet, GCS, Serve's controller, the bridge, the worker, PostgreSQL

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """pid → (group, CPU seconds so far) for this run's processes; pid 0: the machine."""
        procs = [self._me, *self._me.children(recursive=True)]
        procs += [p for p in psutil.process_iter() if _holds_path(p, Path(self._root))]
        seen: dict[int, tuple[str, float]] = {}
        for proc in procs:
            try:
                group = self._group(proc)
                times = proc.cpu_times()
            except psutil.Error:
                continue
            seen[proc.pid] = (group, times.user + times.system)
        total = psutil.cpu_times()
        # guest time is already inside user time; idle and iowait are not work.
        unbusy = ("idle", "iowait", "guest", "guest_nice")
        busy = sum(v for k, v in total._asdict().items() if k not in unbusy)
        seen[0] = ("machine", busy)
        return seen

    @staticmethod
    def delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict:
        """CPU seconds spent per group between two snapshots; 'other' is not this run's."""
        spent: dict[str, float] = {}
        for pid, (group, cpu) in after.items():
            spent[group] = spent.get(group, 0.0) + cpu - before.get(pid, (group, 0.0))[1]
        spent["other"] = spent.pop("machine") - sum(spent.values())
        return spent


def _load_row(
    name: str, mode: str, level: int, res: _load.Result, expect: int, cpu: dict[str, float]
) -> Row:
    wrong = {code: n for code, n in res.statuses.items() if code != expect}
    if wrong:
        raise RuntimeError(f"{name} {mode} {level}: expected only {expect}, got {wrong}")
    answered = max(1, len(res.latencies))
    replica = {"floor": "floor", "t": "tuned"}.get(name, "control")
    return {
        "benchmark": "control",
        "section": "load",
        "target": name,
        "mode": mode,
        "level": level,
        "n": len(res.latencies),
        "failed": sum(res.errors.values()),
        "p50_ms": round(res.percentile(0.50), 2),
        "p99_ms": round(res.percentile(0.99), 2),
        "max_ms": round(res.percentile(1.0), 2),
        "rps": round(res.achieved_rps, 1),
        "gen_lag_ms": round(res.max_lag_s * 1000, 1),
        "proxy_cpu_ms": round(cpu.get("proxy", 0.0) * 1000 / answered, 2),
        "replica_cpu_ms": round(cpu.get(replica, 0.0) * 1000 / answered, 2),
        "redis_cpu_ms": round(cpu.get("redis", 0.0) * 1000 / answered, 3),
        "gen_cpu_ms": round(cpu.get("generator", 0.0) * 1000 / answered, 2),
        "other_cores": round(max(0.0, cpu.get("other", 0.0)) / max(res.wall_s, 1e-9), 2),
    }


async def _one(
    meter: CpuMeter, targets: Targets, pool: _load.Pool, name: str, mode: str, level: int
) -> Row:
    """One measured run (open loop at `level` req/s, or closed loop with `level` clients)."""
    before = meter.snapshot()
    if mode == "open":
        res = await _load.open_loop(pool, targets.requests[name], level, OPEN_S)
    else:
        res = await _load.closed_loop(pool, targets.requests[name], level, CLOSED_S, CLOSED_MAX)
    cpu = CpuMeter.delta(before, meter.snapshot())
    row = _load_row(name, mode, level, res, targets.expect[name], cpu)
    print(f"  {name} {mode} {level}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", flush=True)
    return row


async def _measure_load(meter: CpuMeter, targets: Targets, rates: tuple[int, ...]) -> list[Row]:
    pools = {name: _load.Pool("127.0.0.1", targets.port) for name in targets.requests}
    rows: list[Row] = []
    try:
        for name, pool in pools.items():  # warm-up: connections, replicas, Redis scripts
            await _load.closed_loop(pool, targets.requests[name], 4, 1.0, 300)
        for rate in rates:
            for name, pool in pools.items():
                rows.append(await _one(meter, targets, pool, name, "open", rate))
            if any(_choked(r, rate) for r in rows[-len(pools) :]):
                print(f"  stopping the rate ladder at {rate}/s: the machine cannot keep up")
                break
        for conc in CONCURRENCY:
            for name, pool in pools.items():
                rows.append(await _one(meter, targets, pool, name, "closed", conc))
        # The goals' rate again: other people's jobs come and go on this machine, so one
        # round may catch a busy moment; every round is reported, with the CPU others took.
        for round_ in range(2, GOAL_ROUNDS + 1):
            await asyncio.sleep(2.0)  # let whatever queued in the last run drain
            for name, pool in pools.items():
                row = await _one(meter, targets, pool, name, "open", GOAL_RATE)
                rows.append({**row, "round": round_})
    finally:
        for pool in pools.values():
            pool.close()
    _add_floor_ratios(rows)
    return rows


def _choked(row: Row, rate: int) -> bool:
    return bool(
        float(str(row["rps"])) < 0.8 * rate
        or float(str(row["p99_ms"])) > 1000
        or int(str(row["failed"]))
    )


def _add_floor_ratios(rows: list[Row]) -> None:
    def key(r: Row) -> tuple[object, ...]:
        return r["mode"], r["level"], r.get("round", 1)

    floors = {key(r): r for r in rows if r["target"] == "floor"}
    for r in rows:
        floor = floors.get(key(r))
        if floor and float(str(floor["p99_ms"])) > 0:
            r["p99_vs_floor"] = round(float(str(r["p99_ms"])) / float(str(floor["p99_ms"])), 2)
        goal = {"status": STATUS_P99_MS, "post429": POST_P99_MS}.get(str(r["target"]))
        if goal is not None and r["mode"] == "open" and r["level"] == GOAL_RATE:
            r["goal"] = f"p99 ≤ {goal:.0f} ms"
            r["met"] = float(str(r["p99_ms"])) <= goal


def measure_redis_share(settings: Settings, repeats: int = 500) -> list[Row]:
    """The routes' Redis work timed from the driver (same client, same server): their share."""
    broker = Broker.connect(settings.redis_url or "", prefix=settings.redis_prefix)
    status_ms, post_ms = [], []
    with broker:
        for i in range(repeats):
            t0 = time.perf_counter()
            broker.workers(), broker.queue_size(), broker.processing()
            status_ms.append((time.perf_counter() - t0) * 1000)
            task = Task(
                job_id=str(uuid.uuid4()),
                repo_url=f"https://github.com/o/redis{i}",
                submitted_at=utcnow_iso(),
                ttl_seconds=settings.task_ttl_s,
            )
            t0 = time.perf_counter()
            try:
                broker.enqueue(task, cap=QUEUE_CAP, dedupe_key=dedupe_key_for(task.repo_url, None))
                raise RuntimeError("the queue should be full")
            except QueueFull:
                post_ms.append((time.perf_counter() - t0) * 1000)
    return [
        _redis_row("status: SCAN+MGET, LLEN, LRANGE + parsing", status_ms),
        _redis_row("ingest at the cap: the Lua gate", post_ms),
    ]


def _redis_row(what: str, values: list[float]) -> Row:
    ordered = sorted(values)
    return {
        "benchmark": "control",
        "section": "redis",
        "target": what,
        "n": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[int(0.99 * len(ordered))], 3),
    }


def measure_ongoing(meter: CpuMeter, settings: Settings) -> list[Row]:
    """The status route past the proxy's queueing point: Control as deployed beside the same
    class with a larger max_ongoing_requests (Serve's default is 5), both in this Serve."""
    from neo_ray.control.app import Control

    deployment: Any = Control  # serve.deployment's object; its stub types it as the class
    deployed = int(deployment.max_ongoing_requests)
    tuned = deployment.options(name="control_tuned", max_ongoing_requests=TUNED_ONGOING)
    serve.run(tuned.bind(settings), name="tuned", route_prefix="/tuned")
    targets = Targets(settings)
    host = f"127.0.0.1:{settings.http_port}"
    tuned_status = _load.request_bytes("GET", f"/tuned{API}/worker/status", host, {})
    names = {f"status (ongoing={deployed})": "status", f"status (ongoing={TUNED_ONGOING})": "t"}
    targets.requests["t"] = lambda i: tuned_status
    targets.expect["t"] = 200
    try:
        rows = _aio(_compare_ongoing(meter, targets, names))
    finally:
        serve.delete("tuned")
    return rows


async def _compare_ongoing(meter: CpuMeter, targets: Targets, names: dict[str, str]) -> list[Row]:
    rows = []
    pools = {key: _load.Pool("127.0.0.1", targets.port) for key in names.values()}
    try:
        await _load.closed_loop(pools["t"], targets.requests["t"], 4, 1.0, 300)  # warm-up
        for mode, level in (("closed", 16), ("open", 150)):
            for label, key in names.items():
                row = await _one(meter, targets, pools[key], key, mode, level)
                rows.append({**row, "target": label, "section": "ongoing"})
    finally:
        for pool in pools.values():
            pool.close()
    return rows


# --------------------------------------------------------------------------- replica RSS


def _replica(app: str) -> Any:
    """The handle of the one live replica actor of a Serve app."""
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#")
    ]
    if len(names) != 1:
        raise RuntimeError(f"expected one replica of {app}, found {names}")
    return ray.get_actor(names[0], namespace="serve")


def probe_replica(app: str) -> dict[str, Any]:
    """The replica's pid, RSS/USS, forbidden modules in its sys.modules and in its maps."""

    def inside(_: object, forbidden: tuple[str, ...], heavy: tuple[str, ...]) -> dict[str, Any]:
        # Runs in the replica process (Ray's __ray_call__): its own sys.modules.
        import os
        import sys

        return {
            "pid": os.getpid(),
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
            + sorted(m for m in forbidden if "." in m and m in sys.modules),
            "neo_modules": sorted(m for m in sys.modules if m.startswith("neo_ray")),
            "heavy": sorted(m for m in heavy if m in sys.modules),
        }

    seen = ray.get(_replica(app).__ray_call__.remote(inside, FORBIDDEN, HEAVY), timeout=30)
    proc = psutil.Process(seen["pid"])
    maps = Path(f"/proc/{seen['pid']}/maps").read_text()
    mapped = sorted(
        {line.split()[-1] for line in maps.splitlines() if any(s in line for s in FORBIDDEN_SO)}
    )
    full = proc.memory_full_info()
    return {
        **seen,
        "title": " ".join(proc.cmdline())[:60],
        "rss_mb": round(full.rss / 2**20, 1),
        "uss_mb": round(full.uss / 2**20, 1),
        "mapped": mapped,
    }


def _rss_row(what: str, probe: dict[str, Any], goal: float | None) -> Row:
    return {
        "benchmark": "control",
        "section": "rss",
        "target": what,
        "pid": probe["pid"],
        "rss_mb": probe["rss_mb"],
        "uss_mb": probe["uss_mb"],
        "forbidden_modules": ",".join(probe["loaded"]) or "none",
        "forbidden_maps": len(probe["mapped"]),
        "neo_modules": ",".join(m.removeprefix("neo_ray.") for m in probe["neo_modules"]),
        "heavy_modules": ",".join(probe["heavy"]) or "none",
        "goal": f"≤ {goal:.0f} MB" if goal else "",
        "met": (probe["rss_mb"] <= goal and not probe["loaded"] and not probe["mapped"])
        if goal
        else None,
    }


def measure_cloud(meter: CpuMeter, settings: Settings) -> list[Row]:
    """Redeploy Control in cloud mode; its replica's RSS cold and after load, and its modules."""
    rows = [_rss_row("floor replica (Serve's own cost)", probe_replica("floor"), None)]
    rows.append(_rss_row("control replica, local mode, after load", probe_replica("control"), None))
    serve.delete(system.SERVE_APP)
    with _qdrant_stub() as qdrant_url:
        # Cloud mode talks to a Qdrant server (Qdrant Cloud); only /health reads it, here a
        # stub's /readyz. Without a URL the route would ping the local store actor instead.
        cloud = settings.with_(mode=Mode.CLOUD, qdrant_url=qdrant_url)
        system.check_mode(cloud)
        system.deploy(cloud)
        system.wait_healthy(system.api_base(cloud), timeout_s=120)
        probe = probe_replica("control")
        rows.append(_rss_row("control replica, cloud mode, idle", probe, RSS_MB))
        load = _aio(_cloud_load(meter, Targets(cloud)))
        for _ in range(20):  # /health too, the one route that reads Qdrant and PostgreSQL
            httpx.get(f"{system.api_base(cloud)}/health", timeout=10.0)
        probe = probe_replica("control")
        rows.append(_rss_row("control replica, cloud mode, after load", probe, RSS_MB))
    return rows + load


@contextmanager
def _qdrant_stub() -> Iterator[str]:
    """An HTTP server answering Qdrant's readiness probe, on loopback."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    thread = Thread(target=server.serve_forever, name="qdrant-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


async def _cloud_load(meter: CpuMeter, targets: Targets) -> list[Row]:
    """Warm-up load on the cloud replica: 100 req/s on both routes, 16 clients on status."""
    rows = []
    for name in ("status", "post429"):
        pool = _load.Pool("127.0.0.1", targets.port)
        try:
            for mode, level in (("open", GOAL_RATE), ("closed", 16))[
                : 2 if name == "status" else 1
            ]:
                row = await _one(meter, targets, pool, name, mode, level)
                rows.append({**row, "target": f"{name} (cloud)"})
        finally:
            pool.close()
    return rows


# --------------------------------------------------------------------------- entry points


def run() -> list[Row]:
    """The whole benchmark in one run, on loopback: rows of every section."""
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="neo-bench-control-"))
    began = time.monotonic()
    info: Row = {
        "benchmark": "control",
        "section": "machine",
        "machine": machine(),
        "load_before": _loadavg(),
    }
    try:
        with _cluster(root, epochs=1) as settings:
            _wait(lambda: _worker_listed(settings), 120.0, every_s=0.2)
            _phase(began, "system up; submit-to-start")
            rows = measure_submit_to_start(settings, root / "repos")
            fill_queue(settings)
            meter = CpuMeter(root)
            _phase(began, "queue full; load")
            rows += _aio(_measure_load(meter, Targets(settings), RATES))
            rows += measure_redis_share(settings)
            _phase(began, "max_ongoing_requests comparison")
            rows += measure_ongoing(meter, settings)
            _phase(began, "cloud mode")
            rows += measure_cloud(meter, settings)
            _phase(began, "teardown")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    info["load_after"] = _loadavg()
    info["seconds"] = round(time.monotonic() - began, 1)
    return [info, *rows]


def _phase(began: float, what: str) -> None:
    print(f"[{time.monotonic() - began:6.1f} s] {what}", flush=True)


def _worker_listed(settings: Settings) -> bool:
    reply = httpx.get(f"{system.api_base(settings)}{API}/worker/status", timeout=5.0)
    return bool(reply.status_code == 200 and reply.json()["workers"])


def print_table(rows: list[Row]) -> None:
    info = next(r for r in rows if r["section"] == "machine")
    print(f"Control plane ({info['machine']})")
    print(
        f"load average before {info['load_before']}, after {info['load_after']}; "
        f"{info['seconds']} s in all"
    )
    _print_load([r for r in rows if r["section"] == "load"])
    _print_goals([r for r in rows if r["section"] == "load"])
    print("\nQueueing at Serve's proxy: Control as deployed vs. max_ongoing_requests raised")
    _print_load([r for r in rows if r["section"] == "ongoing"], header=False)
    _print_handoff([r for r in rows if r["section"] in ("handoff", "redis")])
    _print_rss([r for r in rows if r["section"] == "rss"])


def _print_load(rows: list[Row], *, header: bool = True) -> None:
    if header:
        print(
            "\nLoad: latency from the scheduled send time in open loop (no coordinated\n"
            "omission); floor = a trivial Serve app (FastAPI, one sync route) in the same Serve;\n"
            "proxy, replica, gen = CPU ms per request in Serve's proxy, in the replica and in the\n"
            "load generator; lag = the generator's worst lateness (ms); other = cores busy with\n"
            "work not of this run (other people's jobs on the machine, hypervisor steal)"
        )
    head = (
        f"{'target':<20} {'level':>7} {'n':>5} {'fail':>4} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'max ms':>8} {'req/s':>6} {'p99/floor':>9} {'proxy':>6} {'replica':>7} {'gen':>5} "
        f"{'lag':>5} {'other':>5}  goal"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        level = f"{r['level']}/s" if r["mode"] == "open" else f"c={r['level']}"
        level += f"#{r['round']}" if r.get("round") else ""
        goal = f"{r['goal']} {'met' if r['met'] else 'MISSED'}" if r.get("goal") else ""
        print(
            f"{r['target']!s:<20} {level:>7} {r['n']!s:>5} {r['failed']!s:>4} "
            f"{r['p50_ms']!s:>7} {r['p99_ms']!s:>8} {r['max_ms']!s:>8} {r['rps']!s:>6} "
            f"{r.get('p99_vs_floor', '')!s:>9} {r['proxy_cpu_ms']!s:>6} "
            f"{r['replica_cpu_ms']!s:>7} {r['gen_cpu_ms']!s:>5} {r['gen_lag_ms']!s:>5} "
            f"{r['other_cores']!s:>5}  {goal}"
        )


def _print_goals(rows: list[Row]) -> None:
    """Each latency goal over every round at its rate, and in the quietest round."""
    at_rate = [r for r in rows if r["mode"] == "open" and r["level"] == GOAL_RATE]
    floors = {r.get("round", 1): r for r in at_rate if r["target"] == "floor"}
    for target in ("status", "post429"):
        runs = [r for r in at_rate if r["target"] == target and "goal" in r]
        if not runs:
            continue
        quiet = min(runs, key=lambda r: float(str(r["other_cores"])))
        floor = floors.get(quiet.get("round", 1), {})
        met = sum(bool(r["met"]) for r in runs)
        listed = ", ".join(f"{r['p99_ms']} ms (other {r['other_cores']})" for r in runs)
        print(
            f"goal {target} {quiet['goal']} at {GOAL_RATE}/s: met in {met} of {len(runs)} "
            f"rounds [{listed}]; quietest round: {quiet['p99_ms']} ms, floor "
            f"{floor.get('p99_ms', '?')} ms"
        )


def _print_handoff(rows: list[Row]) -> None:
    print("\nHand-off and Redis share")
    for r in rows:
        goal = f"  goal {r['goal']} {'met' if r['met'] else 'MISSED'}" if r.get("goal") else ""
        spread = (
            f"p50 {r['p50_ms']} ms, min {r['min_ms']}, max {r['max_ms']}"
            if r["section"] == "handoff"
            else f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
        )
        print(f"{r['target']!s:<44} n={r['n']!s:<4} {spread}{goal}")


def _print_rss(rows: list[Row]) -> None:
    print("\nServe replica memory (psutil; forbidden = torch, tree_sitter, git, neo_ray.pipeline)")
    for r in rows:
        goal = f"  goal {r['goal']} {'met' if r['met'] else 'MISSED'}" if r.get("goal") else ""
        print(
            f"{r['target']!s:<42} pid {r['pid']!s:<7} RSS {r['rss_mb']!s:>6} MB  "
            f"USS {r['uss_mb']!s:>6} MB  forbidden modules: {r['forbidden_modules']}, "
            f"forbidden .so mapped: {r['forbidden_maps']}{goal}"
        )
        print(f"{'':<42} neo_ray modules loaded: {r['neo_modules']}")
        print(f"{'':<42} large libraries loaded: {r['heavy_modules']}")


if __name__ == "__main__":
    print_table(run())
