"""Store timings that tests used to assert: queue hand-off, claim timeouts, bulk metadata writes.

Run from the repository root: `python -m bench.bench_stores`. Each row sets neo-ray's figure
beside the goal the tests once held it to (a budget, not a peer), and their ratio. Embedded
Redis and PostgreSQL run in a temporary folder and are stopped at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from neo_ray.errors import DatabaseError, QueueUnavailable
from neo_ray.models import Language, RepoGraph, SourceFile, Task, utcnow_iso
from neo_ray.stores import embedded
from neo_ray.stores.metadata import Database
from neo_ray.stores.queue import Broker, dedupe_key_for

ROUNDS = 20


def _task() -> Task:
    return Task(
        job_id=uuid.uuid4().hex,
        repo_url=f"https://github.com/bench/{uuid.uuid4().hex[:8]}",
        ref=None,
        submitted_at=utcnow_iso(),
        ttl_seconds=3600,
        attempts=0,
    )


def _handoff_ms(broker: Broker) -> float:
    """Milliseconds from a push to the blocked consumer holding the task."""
    got: list[float] = []

    def consume() -> None:
        if broker.claim(10.0) is not None:
            got.append(time.perf_counter())

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.1)  # the consumer is now blocked in BLMOVE
    pushed = time.perf_counter()
    task = _task()
    broker.enqueue(task, cap=1000, dedupe_key=dedupe_key_for(task.repo_url, None))
    consumer.join(10.0)
    return (got[0] - pushed) * 1000


def _claim_timeout_s(redis_url: str) -> float:
    with Broker.connect(redis_url, prefix=f"b{uuid.uuid4().hex}:", socket_timeout=0.2) as b:
        started = time.perf_counter()
        b.claim(0.5)
        return time.perf_counter() - started


def _graph(n: int) -> RepoGraph:
    files = [f"pkg/m{i}.py" for i in range(n)]
    edges = {(files[i], files[(i * 7 + 1) % n]) for i in range(n)}
    edges |= {(files[i], files[(i * 13 + 5) % n]) for i in range(n)}
    nodes = tuple(SourceFile(path=f, language=Language.PYTHON) for f in files)
    return RepoGraph(
        repo="https://github.com/bench/big", commit=None, nodes=nodes, edges=tuple(sorted(edges))
    )


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    with contextlib.suppress(DatabaseError, QueueUnavailable):
        fn()
    return time.perf_counter() - started


def run() -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="neo-ray-bench-stores-"))
    try:
        redis_url = embedded.start_redis(root)
        database_url = embedded.start_postgres(root)
        with Broker.connect(redis_url, prefix=f"b{uuid.uuid4().hex}:") as broker:
            hand = [_handoff_ms(broker) for _ in range(ROUNDS)]
        waits = [_claim_timeout_s(redis_url) for _ in range(5)]
        db = Database.connect(database_url)
        try:
            db.migrate()
            save = _timed(lambda: db.save_repository("https://github.com/bench/big", _graph(5000)))
        finally:
            db.close()
        missing = "postgresql://postgres@/postgres?host=/nonexistent-neo-ray-socket-dir"
        unreachable = _timed(lambda: Database.connect(missing, timeout_s=1.0))
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            taken = _timed(lambda: embedded.start_redis(root / "taken", port=port))
    finally:
        embedded.stop_all(root)
        embedded.stop_all(root / "taken")
        shutil.rmtree(root, ignore_errors=True)
    return [
        _row("queue hand-off p50 (ms)", statistics.median(hand), 100.0),
        _row("queue hand-off max (ms)", max(hand), 100.0),
        _row("claim(0.5 s) returns after (s)", max(waits), 1.5),
        _row("save_repository 5,000 files (s)", save, 5.0),
        _row("unreachable PostgreSQL refused after (s)", unreachable, 5.0),
        _row("taken Redis port refused after (s)", taken, 3.0),
    ]


def _row(what: str, value: float, goal: float) -> dict[str, Any]:
    return {"measure": what, "neo-ray": value, "goal": goal, "ratio": value / goal}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'measure':<42} {'neo-ray':>10} {'goal':>8} {'× goal':>8}")
    for r in rows:
        print(f"{r['measure']:<42} {r['neo-ray']:>10.3f} {r['goal']:>8.1f} {r['ratio']:>8.2f}")


if __name__ == "__main__":
    print_table(run())
