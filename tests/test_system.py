"""The Ray application end to end, through HTTP, on real Ray, Redis, PostgreSQL and Qdrant."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import ray
from conftest import init_repo
from ray.exceptions import RayActorError
from ray_fixtures import System, expected_device, wait_for

from neo_ray.models import JobStatus, Task, WorkerState
from neo_ray.stores import embedded as services
from neo_ray.stores.metadata import Database
from neo_ray.stores.queue import Broker

pytestmark = pytest.mark.ray

API = "/api/v1/ingestion"
RECORD_FIELDS = {
    "repo_url",
    "status",
    "duration_seconds",
    "files_processed",
    "embeddings_generated",
    "timestamp",
    "job_id",
    "ref",
    "commit_sha",
    "edges",
    "files_skipped",
    "stage_seconds",
}


def submit(neo: System, source: str, **params: Any) -> Any:
    with neo.http() as http:
        return http.post(
            f"{API}/ingest/{quote(source, safe='')}", headers=neo.auth(), params=params or None
        )


def broker_of(neo: System) -> Broker:
    assert neo.settings.redis_url
    return Broker.connect(neo.settings.redis_url, prefix=neo.settings.redis_prefix)


def slow_repo(neo: System, name: str) -> Path:
    """A repository big enough (401 files) that its job is still running when we look."""
    files = {f"pkg/m{i}.py": f"from pkg import m{(i * 7 + 1) % 400}\n" for i in range(400)}
    files["pkg/__init__.py"] = ""
    return init_repo_at(neo.repos / name, files)


def init_repo_at(root: Path, files: dict[str, str]) -> Path:
    init_repo(root, files)
    return root


class _StatusWatcher(threading.Thread):
    """Samples /worker/status and /jobs/{id} while a job runs."""

    def __init__(self, neo: System, job_id: str) -> None:
        super().__init__(daemon=True)
        self.neo, self.job_id = neo, job_id
        self.statuses: list[str] = []
        self.jobs: list[dict[str, Any]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with self.neo.http() as http:
            while not self.done.is_set():
                self.statuses.append(http.get(f"{API}/worker/status").json()["status"])
                self.jobs.append(http.get(f"{API}/jobs/{self.job_id}").json())
                time.sleep(0.02)


def test_ingest_end_to_end(neo_system: System) -> None:
    repo = neo_system.sample_repo("e2e")
    url = repo.resolve().as_uri()
    reply = submit(neo_system, str(repo))
    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert set(body) == {
        "job_id",
        "status",
        "repo_url",
        "ref",
        "queue_position",
        "queue_size",
        "max_queue_size",
        "expires_at",
    }
    assert body["status"] == "queued" and body["repo_url"] == url and body["max_queue_size"] == 3
    watcher = _StatusWatcher(neo_system, body["job_id"])
    watcher.start()
    try:
        record = neo_system.wait_job(body["job_id"])
        # Watch a moment longer: the worker's Idle heartbeat may land just after the record.
        wait_for(lambda: watcher.statuses and watcher.statuses[-1] == "Idle", 10, 0.05)
    finally:
        watcher.done.set()
        watcher.join()

    assert record["status"] == "complete", record
    assert set(record) >= RECORD_FIELDS
    assert record["files_processed"] == 38 and record["embeddings_generated"] == 38
    assert record["edges"] > 30 and len(record["commit_sha"]) == 40
    assert {"clone", "parse", "train", "upload"} <= set(record["stage_seconds"])

    # Worker status went Idle → Training Graph on {repo} → Idle, and the job showed its stages.
    busy = f"Training Graph on {url}"
    assert busy in watcher.statuses
    first_busy = watcher.statuses.index(busy)
    assert "Idle" in watcher.statuses[first_busy:]
    running = [j for j in watcher.jobs if j.get("status") == "running"]
    assert running and {"stage", "progress"} <= set(running[0])
    stages = {"cloning", "parsing", "resolving", "training", "uploading", "recording"}
    assert all(j["stage"] in stages and 0 <= j["progress"] <= 1 for j in running)
    # The job moved past cloning while we watched (it runs well under a second here).
    assert {j["stage"] for j in running} - {"cloning"}
    parsing = [j for j in running if j["stage"] == "parsing"]
    assert all(j["total"] == 38 and 0 <= j["done"] <= 38 for j in parsing)

    # Vectors in Qdrant (through the one actor that owns the embedded store) ...
    keeper = ray.get_actor("store", namespace="neo")
    assert ray.get(keeper.count.remote(url)) == 38
    near = ray.get(keeper.similar.remote(url, "shop/models/order.py", 3))
    assert len(near) == 3 and all(n.file_path != "shop/models/order.py" for n in near)
    fused = ray.get(
        keeper.similar.remote(url, "shop/models/order.py", 3, scope="all", mode="hybrid")
    )
    # Reciprocal-rank fusion scores: at most 1/60 from each of the two rankings (the engine
    # sums in float32: a file first in both scores 2/60 plus a rounding error).
    assert len(fused) == 3 and all(0 < n.score <= 2 / 60 + 1e-6 for n in fused)
    # scope=all: other copies of the sample in this session's store may rank; the query
    # file itself (this repository's) never does.
    assert (url, "shop/models/order.py") not in {(n.repo_url, n.file_path) for n in fused}
    # ... rows in PostgreSQL ...
    assert neo_system.settings.database_url
    db = Database.connect(neo_system.settings.database_url)
    try:
        assert "shop/services/orders.py" in db.dependents(url, "shop/models/order.py")
        assert any(j.job_id == body["job_id"] for j in db.jobs(10, repo_url=url))
    finally:
        db.close()
    # ... and the record in Redis history, newest first, with the contract's metrics.
    with neo_system.http() as http:
        history = http.get(f"{API}/jobs/history", params={"limit": 5}).json()
    assert history["jobs"][0]["job_id"] == body["job_id"]
    assert set(history["jobs"][0]) >= RECORD_FIELDS
    assert set(history["metrics"]) == {
        "success_rate",
        "average_duration_s",
        "throughput_per_hour",
        "error_rate",
        "skip_rate",
    }
    assert history["metrics"]["throughput_per_hour"] >= 1


def test_health_reports_every_service(neo_system: System) -> None:
    with neo_system.http() as http:
        reply = http.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "healthy",
        "services": {"redis": "up", "database": "up", "qdrant": "up"},
    }


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("gitlab.example.com/a/b", "not allowed"),
        ("ssh://github.com/a/b", "scheme"),
        ("https://user:pw@github.com/a/b", "credentials"),
        ("github.com/onlyowner", "owner"),
        ("https://[github.com/a/b", "malformed"),
        ("https://]github.com[/a/b", "malformed"),
        ("https://[::1]/a/b", "ip address literals"),
        ("https://0x7f000001/a/b", "ip address literals"),
        ("~/", "absolute"),
        ("./", "absolute"),
        ("/etc", "neo_local_repos_root"),
        ("file://localhost/etc", "neo_local_repos_root"),
    ],
)
def test_invalid_url_is_400_with_reason(neo_system: System, source: str, why: str) -> None:
    reply = submit(neo_system, source)
    assert reply.status_code == 400, reply.text  # JSON, never a plain-text 500
    assert why in reply.json()["detail"].lower()


def test_missing_or_wrong_token_is_401(neo_system: System) -> None:
    with neo_system.http() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            reply = http.post(f"{API}/ingest/github.com/a/b", headers=headers)
            assert reply.status_code == 401
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in reply.json()["detail"]


def test_full_queue_is_429_and_duplicates_return_the_queued_job(neo_system: System) -> None:
    bridge = neo_system.bridge()
    ray.get(bridge.pause.remote())
    try:
        repos = [neo_system.sample_repo(f"cap{i}") for i in range(3)]
        first = submit(neo_system, str(repos[0]))
        assert first.status_code == 202
        again = submit(neo_system, str(repos[0]))
        assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
        assert submit(neo_system, str(repos[0]), ref="main").status_code == 202  # another ref
        assert submit(neo_system, str(repos[1])).status_code == 202
        full = submit(neo_system, str(repos[2]))
        assert full.status_code == 429
        assert int(full.headers["Retry-After"]) > 0 and "full" in full.json()["detail"]
    finally:
        ray.get(bridge.resume.remote())
    broker = broker_of(neo_system)
    wait_for(lambda: broker.queue_size() == 0 and not broker.processing(), 180, 0.2)


def test_expired_task_is_skipped(neo_system: System) -> None:
    broker = broker_of(neo_system)
    bridge = neo_system.bridge()
    ray.get(bridge.pause.remote())
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    task = Task(
        job_id="00000000-0000-4000-8000-000000000001",
        repo_url="https://github.com/a/b",
        submitted_at=old,
        ttl_seconds=60,
    )
    broker.enqueue(task, cap=10, dedupe_key="ttl-test")
    ray.get(bridge.resume.remote())
    record = neo_system.wait_job(task.job_id, 60)
    assert record["status"] == "skipped" and "ttl" in record["reason"].lower()


def test_worker_placed_on_a_gpu_trains_on_the_cpu_torch_finds(neo_system: System) -> None:
    worker = ray.get_actor(neo_system.worker_name(), namespace="neo")
    info = ray.get(worker.info.remote())
    assert info["resources"].get("GPU") == 1
    assert info["device"] == expected_device()


def test_worker_status_has_the_contract_fields(neo_system: System) -> None:
    with neo_system.http() as http:
        body = http.get(f"{API}/worker/status").json()
    assert set(body) == {"status", "workers", "queue_size", "processing", "dead"}
    assert body["dead"] == len(broker_of(neo_system).dead())
    assert body["status"] in ("Idle",) or body["status"].startswith(("Training Graph", "Error"))
    (worker,) = body["workers"]
    assert set(worker) == {
        "worker_id",
        "node",
        "device",
        "state",
        "stage",
        "progress",
        "job_id",
        "repo_url",
        "heartbeat_at",
        "gpu",
    }
    assert worker["worker_id"] == neo_system.worker_name() and worker["device"] == expected_device()
    assert worker["heartbeat_at"].endswith("Z")
    # GPU telemetry comes from NVML where the worker trains on CUDA; on the CPU it says so.
    if worker["device"] == "cpu":
        assert worker["gpu"] is None
    else:
        assert worker["gpu"]["memory_total_bytes"] > 0 and worker["gpu"]["name"]


def test_worker_goes_offline_when_heartbeats_stop(neo_system: System) -> None:
    worker = ray.get_actor(neo_system.worker_name(), namespace="neo")
    pid = ray.get(worker.info.remote())["pid"]
    os.kill(pid, signal.SIGSTOP)  # a frozen worker: alive to the OS, silent to Redis
    try:
        with neo_system.http() as http:

            def offline() -> dict[str, Any] | None:
                # One answer read whole: two control replicas may hold snapshots 0.5 s apart.
                body: dict[str, Any] = http.get(f"{API}/worker/status").json()
                return body if body["status"] == "Offline" else None

            body = wait_for(offline, 20, 0.2)
            assert body["workers"] == []
    finally:
        os.kill(pid, signal.SIGCONT)
    with neo_system.http() as http:
        wait_for(lambda: http.get(f"{API}/worker/status").json()["status"] != "Offline", 20, 0.2)


def test_bridge_killed_mid_run_restarts_and_the_queue_drains(neo_system: System) -> None:
    bridge = neo_system.bridge()
    pid = ray.get(bridge.stats.remote())["pid"]
    jobs = [
        submit(neo_system, str(slow_repo(neo_system, f"kill{i}"))).json()["job_id"]
        for i in range(3)
    ]
    wait_for(lambda: neo_system.job(jobs[0]).get("status") == "running", 60, 0.01)
    os.kill(pid, signal.SIGKILL)
    records = [neo_system.wait_job(j, 240) for j in jobs]
    assert [r["status"] for r in records] == ["complete"] * 3
    # Each ran exactly once: the running one was adopted by the new bridge, not run again.
    assert [r["attempts"] for r in records] == [1, 1, 1]
    with neo_system.http() as http:
        history = http.get(f"{API}/jobs/history", params={"limit": 100}).json()["jobs"]
    assert sorted(j["job_id"] for j in history if j["job_id"] in jobs) == sorted(jobs)
    assert ray.get(neo_system.bridge().stats.remote())["pid"] != pid
    broker = broker_of(neo_system)
    assert broker.queue_size() == 0 and broker.processing() == []


def test_redis_stopped_and_restarted_mid_job_loses_nothing(
    neo_system: System, redis_home: Path
) -> None:
    """Redis, the queue between the planes, stops under a running job and comes back on its
    port with its append-only file: the routes say 503 meanwhile, the job ends once."""
    broker = broker_of(neo_system)
    worker = ray.get_actor(neo_system.worker_name(), namespace="neo")
    pid = ray.get(worker.info.remote())["pid"]
    job_id = submit(neo_system, str(slow_repo(neo_system, "redis-bounce"))).json()["job_id"]

    def running() -> bool:
        job = broker.get_job(job_id)
        return job is not None and job.state == JobStatus.RUNNING

    # The worker is held (SIGSTOP) while Redis stops, so the job surely ends during the outage.
    wait_for(running, 60, 0.002)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert running(), "the job ended before the outage began"
        port = broker_port(neo_system)
        assert services.stop_all(redis_home, only={"redis"}) == ["redis"]
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        with neo_system.http() as http:
            reply = http.get(f"{API}/jobs/{job_id}")
            assert reply.status_code == 503, reply.text
            assert http.get("/health").json()["services"]["redis"] == "down"
        time.sleep(3)  # the worker, bridge and history actor all meet the outage
    finally:
        services.start_redis(redis_home, port=port)
    record = neo_system.wait_job(job_id, 240)
    assert record["status"] == "complete" and record["files_processed"] == 401, record
    # Run once: a job that ended while Redis was away hands over its record when it is back.
    assert record["attempts"] == 1, record
    with neo_system.http() as http:
        history = http.get(f"{API}/jobs/history", params={"limit": 100}).json()["jobs"]
    assert [j["job_id"] for j in history].count(job_id) == 1
    wait_for(lambda: broker.queue_size() == 0 and broker.processing() == [], 60, 0.1)
    assert all(d["task"]["job_id"] != job_id for d in broker.dead())
    # The system keeps working: the next job runs as usual.
    after = submit(neo_system, str(neo_system.sample_repo("after-bounce"))).json()["job_id"]
    assert neo_system.wait_job(after, 120)["status"] == "complete"


def broker_port(neo: System) -> int:
    assert neo.settings.redis_url
    port = urlsplit(neo.settings.redis_url).port
    assert port is not None
    return port


def test_worker_killed_mid_job_is_requeued_and_completes(neo_system: System) -> None:
    worker = ray.get_actor(neo_system.worker_name(), namespace="neo")
    pid = ray.get(worker.info.remote())["pid"]
    broker = broker_of(neo_system)
    job_id = submit(neo_system, str(slow_repo(neo_system, "killed-worker"))).json()["job_id"]

    def running() -> bool:
        job = broker.get_job(job_id)
        return job is not None and job.state == JobStatus.RUNNING

    # Caught running by polling Redis, frozen (SIGSTOP), then killed: a fast machine runs the
    # whole job in about a second, and a kill that lands after its record proves nothing.
    wait_for(running, 60, 0.002)
    os.kill(pid, signal.SIGSTOP)
    caught = broker.get_job(job_id)
    assert caught is not None and caught.state == JobStatus.RUNNING, f"ended first: {caught}"
    os.kill(pid, signal.SIGKILL)
    record = neo_system.wait_job(job_id, 240)
    assert record["status"] == "complete" and record["attempts"] == 2
    assert record["files_processed"] == 401
    # The record lands first, the worker's acknowledgement a moment after it.
    wait_for(lambda: broker.processing() == [], 30, 0.05)
    assert all(d["task"]["job_id"] != job_id for d in broker.dead())


def _history_pid() -> int:
    """The pid of the history actor's process (waits while Ray restarts it)."""

    def pid() -> int | None:
        history = ray.get_actor("history", namespace="neo")
        try:
            return int(ray.get(history.__ray_call__.remote(lambda _: os.getpid()), timeout=60))
        except RayActorError:  # the call met the kill; ask the next one
            return None

    return int(wait_for(pid, 60, 0.1))


def test_history_actor_killed_as_a_job_ends_loses_and_repeats_nothing(
    neo_system: System,
) -> None:
    """The history actor's process dies (SIGKILL) with a finished job's record in flight to it,
    and once more as Ray brings it back: the job completes once, its record reaches Redis and
    PostgreSQL once, nothing is requeued, dead-lettered or left in `ingest_processing`."""
    broker = broker_of(neo_system)
    worker = neo_system.worker_name()
    repo = neo_system.sample_repo("history-killed")
    first = _history_pid()
    # Frozen, the actor takes no call: the worker's hand-over is held in flight to it, which
    # makes "killed at the moment the job ends" exact rather than a race with a ~1 s job.
    os.kill(first, signal.SIGSTOP)
    try:
        job_id = submit(neo_system, str(repo)).json()["job_id"]

        def handing_over() -> bool:
            # The worker says Idle, still holding the job, right before it hands the record
            # over; the job is not final until history has taken it.
            beat = next((hb for hb in broker.workers() if hb.worker_id == worker), None)
            return beat is not None and beat.job_id == job_id and beat.state == WorkerState.IDLE

        wait_for(handing_over, 60, 0.01)
        time.sleep(0.5)  # the call is on its way to the frozen actor
        job = broker.get_job(job_id)
        assert job is not None and job.state == JobStatus.RUNNING, f"recorded first: {job}"
        assert [t.job_id for t in broker.processing()] == [job_id]
    finally:
        os.kill(first, signal.SIGKILL)  # dies with the call in flight
    # Killed again as soon as it is back: Ray's retry of the hand-over, waiting for the restart,
    # may be running in it then (and is retried once more).
    second = _history_pid()
    assert second != first
    os.kill(second, signal.SIGKILL)

    record = neo_system.wait_job(job_id, 120)
    assert record["status"] == "complete" and record["files_processed"] == 38, record
    # Run once, never requeued (a requeue bumps the job's attempts) nor dead-lettered.
    assert record["attempts"] == 1, record
    job = broker.get_job(job_id)
    assert job is not None and job.attempts == 0, job
    assert all(d["task"]["job_id"] != job_id for d in broker.dead())
    wait_for(lambda: broker.processing() == [] and broker.queue_size() == 0, 30, 0.05)
    assert [r.job_id for r in broker.history(100)].count(job_id) == 1
    # PostgreSQL has the same record, once (job_id is its key), written by the actor that came
    # back.
    assert neo_system.settings.database_url
    with Database.connect(neo_system.settings.database_url) as db:
        stored = wait_for(lambda: db.job(job_id), 30, 0.1)
    assert stored.model_dump(mode="json") == record_of(broker, job_id)
    assert _history_pid() not in (first, second)


def record_of(broker: Broker, job_id: str) -> dict[str, Any]:
    """The job's record as Redis history holds it."""
    (record,) = [r for r in broker.history(100) if r.job_id == job_id]
    return record.model_dump(mode="json")


def test_history_actor_gone_when_a_job_ends_parks_its_record_and_the_job_runs_once(
    neo_system: System,
) -> None:
    """No history actor answers when a job ends (gone, or back later than the worker waits):
    the worker writes the record to Redis itself and parks PostgreSQL's share, as the bridge
    does; the job is not run again, and the next history actor writes the parked record."""
    from neo_ray.edge.history import HistoryActor

    broker = broker_of(neo_system)
    ray.kill(ray.get_actor("history", namespace="neo"), no_restart=True)

    def gone() -> bool:
        try:
            ray.get_actor("history", namespace="neo")
        except ValueError:
            return True
        return False

    wait_for(gone, 30, 0.05)
    try:
        job_id = submit(neo_system, str(neo_system.sample_repo("history-gone"))).json()["job_id"]
        record = neo_system.wait_job(job_id, 120)
        assert record["status"] == "complete" and record["attempts"] == 1, record
        job = broker.get_job(job_id)
        assert job is not None and job.attempts == 0, job  # never requeued
        wait_for(lambda: broker.processing() == [] and broker.queue_size() == 0, 30, 0.05)
        assert all(d["task"]["job_id"] != job_id for d in broker.dead())
        assert [r.job_id for r in broker.history(100)].count(job_id) == 1
        assert job_id in {r.job_id for _, r in broker.parked_records()}
    finally:
        HistoryActor.options(  # type: ignore[attr-defined]
            name="history", namespace="neo", lifetime="detached", get_if_exists=True
        ).remote(neo_system.settings)
    # The next history actor writes the parked record with the next one it takes.
    after = submit(neo_system, str(neo_system.sample_repo("history-back"))).json()["job_id"]
    assert neo_system.wait_job(after, 120)["status"] == "complete"
    assert neo_system.settings.database_url
    with Database.connect(neo_system.settings.database_url) as db:
        stored = wait_for(lambda: db.job(job_id), 30, 0.1)
    assert stored.model_dump(mode="json") == record_of(broker, job_id)
    assert job_id not in {r.job_id for _, r in broker.parked_records()}
