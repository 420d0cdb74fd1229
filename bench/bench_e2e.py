"""End-to-end throughput benchmark (issue 11): repositories through HTTP to one local worker.

Run from the repository root: `python -m bench.bench_e2e [SMALL_COUNT]`. `run()` returns the
table's rows for `python -m bench` to gather. One fresh local Ray with embedded Redis and
PostgreSQL in a temporary folder (as the tests start them), the local-mode system deployed on
it, all stopped at the end.

- small: SMALL_COUNT repositories of 38 files each (the sample repository, one git repository
  per job), POSTed as fast as the queue cap lets them in (a 429 is retried at once); the
  repositories an hour from the first POST to the last job's end, and the worker's job
  duration p50/p95, against the seed's 15 an hour. After a 429 the next POST waits for a
  job to end, so that the benchmark's own requests do not take the worker's cores.
- large: one git repository holding four copies of the installed `ray` package's sources
  (about 10,000 files), submitted alone; its duration and seconds per stage.
"""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "token"  # the project's one auth mode, before ray is imported
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench import bench_control
from bench.bench_control import _loadavg, _wait, machine
from bench.bench_graph import package_folder
from neo_ray import system
from neo_ray.config import Settings
from neo_ray.pipeline.discover import candidates
from neo_ray.pipeline.sample import write_sample_repo
from neo_ray.stores.queue import Broker

API = "/api/v1/ingestion"
SMALL_COUNT = 60
QUEUE_CAP = 10  # the default NEO_MAX_QUEUE_SIZE
LARGE_COPIES = 4
SEED_PER_HOUR = 15.0
# Goals of issue 11.
SMALL_GOAL_PER_HOUR = 10_000.0
LARGE_GOAL_S = 15.0

Row = dict[str, object]


@contextmanager
def _cluster(root: Path) -> Iterator[Settings]:
    """Embedded services, a fresh local Ray and the local-mode system (one worker, the seed's
    Node2Vec settings), started and checked gone as the control benchmark does."""
    with bench_control._cluster(root, floor=False, queue_cap=QUEUE_CAP) as settings:
        yield settings


class _Client:
    """The ingest route and the job hashes (read from Redis: polling through HTTP would load
    the two cores the worker needs)."""

    def __init__(self, settings: Settings) -> None:
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self.http = httpx.Client(base_url=system.api_base(settings), timeout=30.0)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.broker = Broker.connect(settings.redis_url or "", prefix=settings.redis_prefix)

    def submit(self, repo: Path) -> str | None:
        """The job id, or None when the queue is full (429)."""
        reply = self.http.post(
            f"{API}/ingest/{quote(f'file://{repo}', safe='')}", headers=self.auth
        )
        if reply.status_code == 429:
            return None
        if reply.status_code not in (200, 202):
            raise RuntimeError(f"ingest answered {reply.status_code}: {reply.text}")
        return str(reply.json()["job_id"])

    def record(self, job_id: str) -> dict[str, Any] | None:
        """The job's final record once it has one."""
        job = self.broker.get_job(job_id) or {}
        if job.get("state") not in ("complete", "failed", "skipped"):
            return None
        if job["state"] != "complete":
            raise RuntimeError(f"job {job_id} ended {job['state']}: {job.get('record')}")
        return dict(job["record"])

    def close(self) -> None:
        self.http.close()
        self.broker.close()


# --------------------------------------------------------------------------- small


def measure_small(client: _Client, repos: Path, count: int) -> list[Row]:
    """Submit `count` small repositories as fast as the cap admits; wait for every job."""
    paths = [write_sample_repo(repos / f"small{i}") for i in range(count)]
    waiting: dict[str, float] = {}
    records: dict[str, dict[str, Any]] = {}
    rejected = 0
    began = time.perf_counter()
    queue = list(paths)
    full = False  # after a 429, wait for a job to end before the next POST
    while queue or waiting:
        if queue and not full:
            job_id = client.submit(queue[0])
            if job_id is not None:
                waiting[job_id] = time.perf_counter()
                queue.pop(0)
                continue
            rejected += 1
            full = True
        for job_id in list(waiting):
            record = client.record(job_id)
            if record is not None:
                records[job_id] = record
                del waiting[job_id]
                full = False
        time.sleep(0.05)
    wall = time.perf_counter() - began
    durations = sorted(float(r["duration_seconds"]) for r in records.values())
    per_hour = count / wall * 3600
    row: Row = {
        "benchmark": "e2e",
        "what": f"small repositories ({count} × 38 files, cap {QUEUE_CAP})",
        "repos": count,
        "wall_s": round(wall, 2),
        "per_hour": round(per_hour),
        "vs_seed": round(per_hour / SEED_PER_HOUR, 1),
        "goal_per_hour": SMALL_GOAL_PER_HOUR,
        "job_p50_s": round(_quantile(durations, 0.5), 3),
        "job_p95_s": round(_quantile(durations, 0.95), 3),
        "answered_429": rejected,
        "stages_median_s": _median_stages(list(records.values())),
        "machine": machine(),
        "load": _loadavg(),
    }
    return [row]


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _median_stages(records: list[dict[str, Any]]) -> dict[str, float]:
    stages: dict[str, list[float]] = {}
    for record in records:
        for name, seconds in record.get("stage_seconds", {}).items():
            stages.setdefault(name, []).append(float(seconds))
        other = float(record["duration_seconds"]) - sum(record.get("stage_seconds", {}).values())
        stages.setdefault("other", []).append(other)
    return {name: round(statistics.median(values), 3) for name, values in stages.items()}


# --------------------------------------------------------------------------- large


def large_repository(root: Path, copies: int = LARGE_COPIES) -> tuple[Path, int]:
    """A git repository of `copies` copies of the installed ray package's source files."""
    source = package_folder("ray")
    files = [s.path for s in candidates(source, None)]
    repo = root / "large"
    for i in range(copies):
        for rel in files:
            target = repo / f"copy{i}" / "ray" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target)
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "four copies of ray"], check=True)
    return repo, copies * len(files)


def measure_large(client: _Client, root: Path) -> list[Row]:
    repo, files = large_repository(root)
    began = time.perf_counter()
    job_id = None
    while job_id is None:
        job_id = client.submit(repo)
    record = _wait(lambda: client.record(job_id), 900.0, every_s=0.1)
    wall = time.perf_counter() - began
    stages = {k: round(float(v), 2) for k, v in record.get("stage_seconds", {}).items()}
    stages["other"] = round(float(record["duration_seconds"]) - sum(stages.values()), 2)
    return [
        {
            "benchmark": "e2e",
            "what": f"large repository ({LARGE_COPIES} copies of ray, {files} files)",
            "files": record["files_processed"],
            "edges": record["edges"],
            "skipped": record["files_skipped"],
            "vectors": record["embeddings_generated"],
            "wall_s": round(wall, 2),
            "job_s": round(float(record["duration_seconds"]), 2),
            "goal_s": LARGE_GOAL_S,
            "stages_s": stages,
            "machine": machine(),
            "load": _loadavg(),
        }
    ]


# --------------------------------------------------------------------------- run


def run(small_count: int = SMALL_COUNT) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="neo-bench-e2e-"))
    rows: list[Row] = []
    try:
        with _cluster(root) as settings:
            client = _Client(settings)
            try:
                _warm(client, root)
                rows += measure_small(client, root / "repos", small_count)
                rows += measure_large(client, root)
            finally:
                client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _warm(client: _Client, root: Path) -> None:
    """One job first: the worker's first run pays one-time imports no later job pays."""
    job_id = client.submit(write_sample_repo(root / "warm"))
    if job_id is None:
        raise RuntimeError("the queue is full before the benchmark began")
    _wait(lambda: client.record(job_id), 300.0, every_s=0.1)


def print_table(rows: list[Row]) -> None:
    print(f"End to end through HTTP, one local worker ({rows[0]['machine']})")
    for row in rows:
        print(f"\n{row['what']}  (load average {row['load']})")
        if "per_hour" in row:
            print(
                f"  {row['per_hour']} repositories/hour ({row['vs_seed']}× the seed's "
                f"{SEED_PER_HOUR:.0f}; goal {SMALL_GOAL_PER_HOUR:.0f}), wall {row['wall_s']} s, "
                f"job p50 {row['job_p50_s']} s, p95 {row['job_p95_s']} s, "
                f"{row['answered_429']} POSTs answered 429"
            )
            print(f"  median seconds per stage: {row['stages_median_s']}")
        else:
            print(
                f"  {row['files']} files, {row['edges']} edges, {row['vectors']} vectors: "
                f"job {row['job_s']} s (goal {LARGE_GOAL_S:.0f} s), "
                f"POST to record {row['wall_s']} s"
            )
            print(f"  seconds per stage: {row['stages_s']}")


if __name__ == "__main__":
    print_table(run(int(sys.argv[1]) if len(sys.argv) > 1 else SMALL_COUNT))
