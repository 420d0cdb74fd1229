"""Soak: submissions at the queue cap while workers run, 50 status pollers, memory flat.

Run from the repository root: `python -m bench soak --duration 300` (or
`python -m bench.bench_soak --duration 300`); 300 s by default, at most 600. One fresh local
system on the embedded defaults (local Ray, the Serve control plane, embedded Redis and
PostgreSQL, the Qdrant Edge store actor, the bridge and one GraphWorker) with a queue cap of
QUEUE_CAP, and for the whole duration:

- SUBMITTERS clients POST small local git repositories without pause (after a 429 they wait
  FULL_PAUSE_S, not the Retry-After: the point is to stay at the cap); 202, 200 (already
  queued) and 429 are counted;
- POLLERS clients (httpx.AsyncClient) each GET /worker/status and /jobs/{id} of an accepted
  job about once every POLL_EVERY_S;
- a sampler thread reads the queue's length (LLEN) every SAMPLE_EVERY_S and keeps every
  record that passes through Redis history; RSS of every process of the system (psutil) is
  taken before the load, after the warm-up ("start"), at the middle and at the end.

Then the submitters stop, the queue drains, and the invariants are checked: every accepted job
is complete (its hash, one Redis history record, its PostgreSQL row), none lost, none twice,
nothing dead-lettered; the queue never above the cap (every 202's queue_size, every status
answer, every LLEN sample); no request failed; no process's RSS grew more than
max(RSS_GROWTH_MIB, RSS_GROWTH_FRACTION of its start) from start to end. `passed(rows)` is
false when one breaks, and `python -m bench` then exits 1.

A soak has no peer to compare with: the table prints the invariants and the figures only.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import asyncio
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from bench.bench_control import _aio, _cluster, _loadavg, _wait, _worker_listed, machine
from neo_ray import system
from neo_ray.config import Settings
from neo_ray.models import JobRecord
from neo_ray.stores.queue import Broker

API = "/api/v1/ingestion"
DEFAULT_S = 300.0
MAX_S = 600.0
QUEUE_CAP = 8
SUBMITTERS = 4
FULL_PAUSE_S = 0.1
POLLERS = 50
POLL_EVERY_S = 1.0
REPOS = 40
SAMPLE_EVERY_S = 0.05
HISTORY_EVERY_S = 0.5
DRAIN_S = 180.0
REQUEST_TIMEOUT_S = 30.0
# Memory is "flat" when no process grows more than this from start (after warm-up) to end.
RSS_GROWTH_MIB = 64.0
RSS_GROWTH_FRACTION = 0.25
MIB = 2**20
PG_AUX = ("checkpointer", "background", "walwriter", "autovacuum", "logical", "archiver")
# Short-lived helpers (a clone's git and its children) come and go between samples: not counted.
TRANSIENT = ("git", "git-upload-pack", "sh")

Row = dict[str, Any]


@dataclass
class Options:
    duration_s: float = float(os.environ.get("BENCH_SOAK_S", DEFAULT_S))
    pollers: int = POLLERS
    cap: int = QUEUE_CAP


OPTIONS = Options()


def options(argv: list[str]) -> None:
    """Options after the suite's name: `python -m bench soak --duration 300`."""
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=OPTIONS.duration_s, metavar="S")
    parser.add_argument("--pollers", type=int, default=OPTIONS.pollers)
    parser.add_argument("--cap", type=int, default=OPTIONS.cap, help="NEO_MAX_QUEUE_SIZE")
    args = parser.parse_args(argv)
    if not 10 <= args.duration <= MAX_S:
        parser.error(f"--duration must be between 10 and {MAX_S:.0f} seconds")
    OPTIONS.duration_s, OPTIONS.pollers, OPTIONS.cap = args.duration, args.pollers, args.cap


# --------------------------------------------------------------------------- repositories


def tiny_repo(root: Path, i: int) -> str:
    """A committed three-file Python repository (a → b → c); its file:// URL, quoted."""
    root.mkdir(parents=True)
    (root / "a.py").write_text(f"import b\nN = {i}\n")
    (root / "b.py").write_text("import c\n")
    (root / "c.py").write_text("X = 1\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=root, env=env, check=True)
    return quote(root.resolve().as_uri(), safe="")


# --------------------------------------------------------------------------- processes


def system_processes(root: Path) -> list[psutil.Process]:
    """This run's processes: the driver's descendants (Ray's), whatever holds the temp folder
    in its command line (PostgreSQL) with its children, and the daemonized Redis (its title
    names no path: found by its pid file)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for pidfile in root.glob("**/redis.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            found[pid] = psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
    for p in psutil.process_iter():
        try:
            if p.pid != me.pid and any(str(root) in part for part in p.cmdline()):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.Error:
            continue
    return list(found.values())


def kind_of(p: psutil.Process) -> str:
    """A process's kind for the RSS table, from its title or command line."""
    command = p.cmdline()
    title = " ".join(command)
    exe = Path(command[0]).name if command else p.name()
    if title.startswith("ray::"):
        # ray::GraphWorker.run → ray::GraphWorker (the title names the method it runs)
        return title.split(" ", 1)[0].split(".", 1)[0]
    if exe == "redis-server" or "redis-server" in title:
        return "redis-server"
    if title.startswith("postgres:"):
        word = (title.split(":", 1)[1].split() or ["?"])[0]
        return f"postgres: {word if word in PG_AUX else 'backend'}"
    if exe in ("postgres", "postmaster"):
        return "postgres (postmaster)"
    for marker in ("raylet", "gcs_server"):
        if marker in title:
            return marker
    if exe.startswith("python"):  # python -m module / python script.py: name the module
        rest = command[1:]
        if "-m" in rest[:-1]:
            return rest[rest.index("-m") + 1]
        script = next((a for a in rest if a.endswith(".py")), exe)
        return Path(script).name
    return exe


def rss_sample(root: Path) -> dict[int, tuple[str, float]]:
    """pid → (kind, RSS MiB) of every process of the system now."""
    seen = {}
    for p in system_processes(root):
        try:
            kind = kind_of(p)
            if kind not in TRANSIENT:
                seen[p.pid] = (kind, p.memory_info().rss / MIB)
        except psutil.Error:
            continue
    return seen


# --------------------------------------------------------------------------- the load


@dataclass
class Soak:
    """Everything the clients and the sampler saw."""

    cap: int
    submit_ms: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    status_ms: list[float] = field(default_factory=list)
    job_ms: list[float] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # job id → repo
    existing: set[str] = field(default_factory=set)  # job ids named by 200 answers
    errors: Counter[str] = field(default_factory=Counter)
    max_queue_in_202: int = 0
    max_queue_in_status: int = 0
    max_queue_sampled: int = 0
    queue_samples: int = 0
    queue_at_cap: int = 0  # LLEN samples at the cap: how much of the time the queue was full
    states_seen: Counter[str] = field(default_factory=Counter)
    history: dict[str, JobRecord] = field(default_factory=dict)  # record JSON → record
    job_404: int = 0


class Sampler(threading.Thread):
    """LLEN every SAMPLE_EVERY_S; Redis history every HISTORY_EVERY_S (it keeps the newest 100)."""

    def __init__(self, broker: Broker, soak: Soak) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.broker, self.soak, self.stop = broker, soak, threading.Event()

    def run(self) -> None:
        next_history = 0.0
        while not self.stop.is_set():
            try:
                size = self.broker.queue_size()
                self.soak.queue_samples += 1
                self.soak.queue_at_cap += size >= self.soak.cap
                self.soak.max_queue_sampled = max(self.soak.max_queue_sampled, size)
                if time.monotonic() >= next_history:
                    self.watch_history()
                    next_history = time.monotonic() + HISTORY_EVERY_S
            except Exception as exc:  # recorded: a sampler that cannot read is a failure
                self.soak.errors[f"sampler {type(exc).__name__}"] += 1
            self.stop.wait(SAMPLE_EVERY_S)

    def watch_history(self) -> None:
        for record in self.broker.history(100):
            self.soak.history[record.model_dump_json()] = record


async def submitter(
    http: httpx.AsyncClient, auth: dict[str, str], repos: list[str], soak: Soak, until: float
) -> None:
    while time.monotonic() < until:
        repo = random.choice(repos)
        t0 = time.perf_counter()
        try:
            reply = await http.post(f"{API}/ingest/{repo}", headers=auth)
        except httpx.HTTPError as exc:
            soak.errors[f"POST {type(exc).__name__}"] += 1
            continue
        soak.submit_ms[reply.status_code].append((time.perf_counter() - t0) * 1000)
        if reply.status_code == 202:
            body = reply.json()
            soak.accepted[body["job_id"]] = repo
            soak.max_queue_in_202 = max(soak.max_queue_in_202, int(body["queue_size"]))
        elif reply.status_code == 200:  # this repository's job is still queued or running
            # Checked at the end: the 202 that created it may still be on its way to a
            # concurrent submitter.
            soak.existing.add(reply.json()["job_id"])
        elif reply.status_code == 429:
            await asyncio.sleep(FULL_PAUSE_S)
        else:
            soak.errors[f"POST {reply.status_code}"] += 1


async def poller(http: httpx.AsyncClient, soak: Soak, until: float) -> None:
    await asyncio.sleep(random.uniform(0, POLL_EVERY_S))  # spread the pollers over a second
    while time.monotonic() < until:
        began = time.monotonic()
        t0 = time.perf_counter()
        try:
            reply = await http.get(f"{API}/worker/status")
            soak.status_ms.append((time.perf_counter() - t0) * 1000)
            if reply.status_code == 200:
                size = int(reply.json()["queue_size"])
                soak.max_queue_in_status = max(soak.max_queue_in_status, size)
            else:
                soak.errors[f"GET status {reply.status_code}"] += 1
            if soak.accepted:
                job_id = random.choice(list(soak.accepted))
                t0 = time.perf_counter()
                reply = await http.get(f"{API}/jobs/{job_id}")
                soak.job_ms.append((time.perf_counter() - t0) * 1000)
                if reply.status_code == 200:
                    soak.states_seen[reply.json()["status"]] += 1
                elif reply.status_code == 404:
                    soak.job_404 += 1  # an accepted job the system does not know: lost
                else:
                    soak.errors[f"GET job {reply.status_code}"] += 1
        except httpx.HTTPError as exc:
            soak.errors[f"GET {type(exc).__name__}"] += 1
        await asyncio.sleep(max(0.0, POLL_EVERY_S - (time.monotonic() - began)))


async def _load(
    settings: Settings, repos: list[str], soak: Soak, root: Path, rss: dict[str, Any]
) -> float:
    """Run the clients for the duration; RSS at warm-up's end, the middle and the end."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=OPTIONS.pollers + SUBMITTERS + 8)
    began = time.monotonic()
    until = began + OPTIONS.duration_s
    warm = min(30.0, OPTIONS.duration_s / 10)
    async with httpx.AsyncClient(
        base_url=system.api_base(settings), timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as http:
        clients = [submitter(http, auth, repos, soak, until) for _ in range(SUBMITTERS)]
        clients += [poller(http, soak, until) for _ in range(OPTIONS.pollers)]
        running = asyncio.gather(*clients)
        for name, at in (("start", warm), ("middle", (warm + OPTIONS.duration_s) / 2)):
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            rss[name] = await asyncio.to_thread(rss_sample, root)
            _phase(began, f"RSS {name}: {sum(v for _, v in rss[name].values()):.0f} MiB")
        await running
        rss["end"] = await asyncio.to_thread(rss_sample, root)
        _phase(began, f"RSS end: {sum(v for _, v in rss['end'].values()):.0f} MiB")
    return time.monotonic() - began


def _phase(began: float, what: str) -> None:
    print(f"[{time.monotonic() - began:6.1f} s] {what}", flush=True)


def _drain(broker: Broker, soak: Soak, sampler: Sampler) -> float:
    """Seconds until every accepted job has a final state (or DRAIN_S: then some never did)."""
    t0 = time.monotonic()
    pending = set(soak.accepted)
    while pending and time.monotonic() - t0 < DRAIN_S:
        for job_id in list(pending):
            job = broker.get_job(job_id)
            if job is not None and job.final:
                pending.discard(job_id)
        time.sleep(0.5)
    time.sleep(2 * HISTORY_EVERY_S)  # the last records pass through history
    sampler.watch_history()
    return time.monotonic() - t0


# --------------------------------------------------------------------------- the checks


def _final_checks(settings: Settings, broker: Broker, soak: Soak) -> Row:
    import psycopg

    ids = list(soak.accepted)
    states: Counter[str] = Counter()
    for job_id in ids:
        job = broker.get_job(job_id)
        states[job.state.value if job is not None else "missing"] += 1
    records = Counter(r.job_id for r in soak.history.values())
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT job_id, status FROM ingestion_jobs WHERE job_id = ANY(%s)", (ids,)
        ).fetchall()
    in_pg: dict[str, str] = dict(rows)
    return {
        "accepted": len(ids),
        "hash_states": dict(states),
        "history_once": sum(records.get(j, 0) == 1 for j in ids),
        "history_missing": sum(records.get(j, 0) == 0 for j in ids),
        "history_twice": sum(records.get(j, 0) > 1 for j in ids),
        "history_unknown": sum(n for j, n in records.items() if j not in soak.accepted),
        "pg_complete": sum(in_pg.get(j) == "complete" for j in ids),
        "pg_missing": sum(j not in in_pg for j in ids),
        "queue_left": broker.queue_size(),
        "processing_left": broker.processing_count(),
        "dead": broker.dead_size(),
    }


def _rss_rows(rss: dict[str, dict[int, tuple[str, float]]]) -> tuple[list[Row], list[Row]]:
    """Per kind: count and summed RSS at each point; and every process that grew too much."""
    kinds: dict[str, Row] = {}
    for point in ("before", "start", "middle", "end"):
        for kind, mib in rss.get(point, {}).values():
            row = kinds.setdefault(kind, {"kind": kind})
            row[f"{point}_n"] = row.get(f"{point}_n", 0) + 1
            row[f"{point}_mib"] = row.get(f"{point}_mib", 0.0) + mib
    start, middle, end = rss["start"], rss["middle"], rss["end"]
    for row in kinds.values():
        pids = [p for p, (k, _) in start.items() if k == row["kind"]]
        row["replaced"] = sum(p not in end for p in pids)
        growth = [end[p][1] - start[p][1] for p in pids if p in end]
        row["max_pid_growth_mib"] = max(growth, default=0.0)
    grown = []
    for pid, (kind, mib0) in start.items():
        if pid in end and pid != os.getpid():
            allowed = max(RSS_GROWTH_MIB, RSS_GROWTH_FRACTION * mib0)
            if end[pid][1] - mib0 > allowed:
                grown.append(
                    {
                        "pid": pid,
                        "kind": kind,
                        "start_mib": mib0,
                        "middle_mib": middle.get(pid, (kind, float("nan")))[1],
                        "end_mib": end[pid][1],
                        "allowed_mib": allowed,
                    }
                )
    return sorted(kinds.values(), key=lambda r: -r.get("end_mib", 0.0)), grown


def percentiles(values: list[float]) -> Row:
    """n, p50, p95, p99 and max (ms, nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def rank(q: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1],
    }


# --------------------------------------------------------------------------- entry points


def run() -> list[Row]:
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="neo-bench-soak-"))
    began = time.monotonic()
    info: Row = {
        "section": "machine",
        "machine": machine(),
        "load_before": _loadavg(),
        "duration_s": OPTIONS.duration_s,
        "cap": OPTIONS.cap,
        "pollers": OPTIONS.pollers,
    }
    soak = Soak(cap=OPTIONS.cap)
    rss: dict[str, Any] = {}
    try:
        repos = [tiny_repo(root / "repos" / f"r{i}", i) for i in range(REPOS)]
        with _cluster(root, floor=False, queue_cap=OPTIONS.cap) as settings:
            _wait(lambda: _worker_listed(settings), 180.0, every_s=0.2)
            _phase(began, f"system up; {REPOS} repositories; soak for {OPTIONS.duration_s:.0f} s")
            broker = Broker.connect(settings.redis_url or "", prefix=settings.redis_prefix)
            with broker:
                rss["before"] = rss_sample(root)
                sampler = Sampler(broker, soak)
                sampler.start()
                cpu0 = sum(psutil.Process().cpu_times()[:2])
                try:
                    info["load_s"] = _aio(_load(settings, repos, soak, root, rss))
                    info["driver_cpu_s"] = sum(psutil.Process().cpu_times()[:2]) - cpu0
                    info["load_middle"] = _loadavg()
                    info["drain_s"] = _drain(broker, soak, sampler)
                finally:
                    sampler.stop.set()
                    sampler.join(10.0)
                final = _final_checks(settings, broker, soak)
            _phase(began, "teardown")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    info["load_after"] = _loadavg()
    info["seconds"] = time.monotonic() - began
    kinds, grown = _rss_rows(rss)
    latency = {
        "submit 202": percentiles(soak.submit_ms[202]),
        "submit 200 (already queued)": percentiles(soak.submit_ms[200]),
        "submit 429": percentiles(soak.submit_ms[429]),
        "submit, all": percentiles([v for vs in soak.submit_ms.values() for v in vs]),
        "GET worker/status": percentiles(soak.status_ms),
        "GET jobs/{id}": percentiles(soak.job_ms),
    }
    invariants = _invariants(soak, final, grown)
    return [
        info,
        {"section": "counts", **_counts(soak)},
        {"section": "final", **final},
        {"section": "latency", "latency": latency},
        *({"section": "rss", **k} for k in kinds),
        *({"section": "grown", **g} for g in grown),
        *({"section": "invariant", **i} for i in invariants),
    ]


def _counts(soak: Soak) -> Row:
    return {
        "202": len(soak.submit_ms[202]),
        "200": len(soak.submit_ms[200]),
        "429": len(soak.submit_ms[429]),
        "status_polls": len(soak.status_ms),
        "job_polls": len(soak.job_ms),
        "states_seen": dict(soak.states_seen),
        "errors": dict(soak.errors),
        "queue_samples": soak.queue_samples,
        "queue_at_cap": soak.queue_at_cap,
        "max_queue_sampled": soak.max_queue_sampled,
        "max_queue_in_202": soak.max_queue_in_202,
        "max_queue_in_status": soak.max_queue_in_status,
    }


def _invariants(soak: Soak, final: Row, grown: list[Row]) -> list[Row]:
    n = final["accepted"]
    complete = final["hash_states"].get("complete", 0)
    unknown = soak.existing - set(soak.accepted)
    highest = max(soak.max_queue_sampled, soak.max_queue_in_202, soak.max_queue_in_status)
    checks = [
        ("jobs were accepted and the queue was full at times", n > 0 and bool(soak.submit_ms[429])),
        (
            f"every accepted job complete in its hash ({complete}/{n})",
            complete == n,
        ),
        (
            f"none lost: one history record each ({final['history_once']}/{n}), "
            f"PostgreSQL complete ({final['pg_complete']}/{n}), no 404 ({soak.job_404})",
            final["history_once"] == n and final["pg_complete"] == n and soak.job_404 == 0,
        ),
        (
            f"none twice: history records twice {final['history_twice']}, unknown "
            f"{final['history_unknown']}, 200s naming an unknown job {len(unknown)}",
            final["history_twice"] == 0 and final["history_unknown"] == 0 and not unknown,
        ),
        (
            f"drained: queue {final['queue_left']}, processing {final['processing_left']}, "
            f"dead-lettered {final['dead']}",
            final["queue_left"] == 0 and final["processing_left"] == 0 and final["dead"] == 0,
        ),
        (f"queue never above the cap (max seen {highest}, cap {soak.cap})", highest <= soak.cap),
        (f"no request failed ({sum(soak.errors.values())} errors)", not soak.errors),
        (
            f"memory flat: no process grew > max({RSS_GROWTH_MIB:.0f} MiB, "
            f"{RSS_GROWTH_FRACTION:.0%}) start→end ({len(grown)} did)",
            not grown,
        ),
    ]
    return [{"check": what, "ok": bool(ok)} for what, ok in checks]


def passed(rows: list[Row]) -> bool:
    """Whether every invariant held (`python -m bench` exits 1 otherwise)."""
    return all(r["ok"] for r in rows if r["section"] == "invariant")


def print_table(rows: list[Row]) -> None:
    info = next(r for r in rows if r["section"] == "machine")
    counts = next(r for r in rows if r["section"] == "counts")
    final = next(r for r in rows if r["section"] == "final")
    latency = next(r for r in rows if r["section"] == "latency")["latency"]
    print(f"Soak ({info['machine']})")
    print(
        f"{info['duration_s']:.0f} s of load (ran {info['load_s']:.1f} s), queue cap "
        f"{info['cap']}, {SUBMITTERS} submitters, {info['pollers']} pollers at "
        f"1/{POLL_EVERY_S:.0f} s; drained in {info['drain_s']:.1f} s; {info['seconds']:.0f} s "
        f"in all; load average before {info['load_before']}, at the end of the load "
        f"{info['load_middle']}, after {info['load_after']}"
    )
    print(
        f"the clients (this process) used {info['driver_cpu_s']:.0f} CPU s during the load, "
        "on the machine the system runs on"
    )
    print("No peer: a soak checks invariants; the figures below are neo-ray's alone.")
    print(
        f"\nsubmissions: 202 {counts['202']}, 200 (already queued) {counts['200']}, "
        f"429 {counts['429']}; polls: status {counts['status_polls']}, jobs "
        f"{counts['job_polls']} (states seen {counts['states_seen']}); errors "
        f"{counts['errors'] or 'none'}"
    )
    print(
        f"queue length: max {counts['max_queue_sampled']} in {counts['queue_samples']} LLEN "
        f"samples (at the cap in {counts['queue_at_cap'] / max(1, counts['queue_samples']):.0%}"
        f"), max {counts['max_queue_in_202']} in 202 answers, max "
        f"{counts['max_queue_in_status']} in status answers; final {final}"
    )
    print(f"\n{'latency (ms)':<30} {'n':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for what, p in latency.items():
        if p["n"]:
            print(
                f"{what:<30} {p['n']:>7} {p['p50']:>8.1f} {p['p95']:>8.1f} {p['p99']:>8.1f} "
                f"{p['max']:>8.1f}"
            )
    print(
        f"\n{'RSS MiB by kind (n)':<36} {'before':>11} {'start':>11} {'middle':>11} "
        f"{'end':>11} {'max pid Δ':>9} {'replaced':>8}"
    )
    for r in (r for r in rows if r["section"] == "rss"):
        cells = [
            f"{r.get(f'{p}_mib', 0.0):>7.0f} ({r.get(f'{p}_n', 0)})"
            for p in ("before", "start", "middle", "end")
        ]
        print(
            f"{r['kind'][:36]:<36} {' '.join(f'{c:>11}' for c in cells)} "
            f"{r['max_pid_growth_mib']:>+9.1f} {r['replaced']:>8}"
        )
    for g in (r for r in rows if r["section"] == "grown"):
        print(
            f"  GREW: pid {g['pid']} {g['kind']}: {g['start_mib']:.0f} → {g['middle_mib']:.0f} "
            f"→ {g['end_mib']:.0f} MiB (allowed +{g['allowed_mib']:.0f})"
        )
    print("\ninvariants")
    for r in (r for r in rows if r["section"] == "invariant"):
        print(f"  {'ok  ' if r['ok'] else 'FAIL'} {r['check']}")
    print(f"soak {'passed' if passed(rows) else 'FAILED'}")


if __name__ == "__main__":
    options(sys.argv[1:])
    result = run()
    print_table(result)
    sys.exit(0 if passed(result) else 1)
