"""PostgreSQL away during a job: the job completes once, its metadata waits in Redis and
reaches PostgreSQL when it answers again; a worker's Error clears when its services recover.

The outage is real: the system's database stops taking connections (ALLOW_CONNECTIONS false)
and its sessions are terminated, so every pool in the system (worker, history, control
plane) loses its connections and cannot open new ones; then connections are allowed again.
The database's data survives, so the session's other tests run on as before.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
import ray
from ray_fixtures import System, wait_for

from neo_ray.edge.worker import RECOVERY_CHECK_S, GraphWorker
from neo_ray.models import Task, utcnow_iso
from neo_ray.stores.metadata import Database, ParkedRepository
from neo_ray.stores.queue import Broker

pytestmark = pytest.mark.ray

API = "/api/v1/ingestion"


@contextmanager
def database_refusing(server_url: str, database_url: str) -> Iterator[None]:
    """The database refuses connections, its sessions cut, until the block ends."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false".encode())
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        yield
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true".encode())


def broker_of(settings: Any) -> Broker:
    return Broker.connect(settings.redis_url, prefix=settings.redis_prefix)


def test_postgres_down_during_a_job_parks_its_metadata_and_the_job_completes(
    neo_system: System, postgres_server_url: str
) -> None:
    url_db = neo_system.settings.database_url
    assert url_db
    repo = neo_system.sample_repo("pg-outage")
    url = repo.resolve().as_uri()
    broker = broker_of(neo_system.settings)
    try:
        with database_refusing(postgres_server_url, url_db):
            with neo_system.http() as http:
                reply = http.post(
                    f"{API}/ingest/{quote(str(repo), safe='')}", headers=neo_system.auth()
                )
            assert reply.status_code == 202, reply.text
            job_id = reply.json()["job_id"]
            record = neo_system.wait_job(job_id, 240)

            # Complete, once, with what the run really measured.
            assert record["status"] == "complete", record
            assert record["attempts"] == 1
            assert record["worker_id"] == neo_system.worker_name()
            assert record["duration_seconds"] > 0
            assert {"clone", "parse", "train", "upload"} <= set(record["stage_seconds"])
            assert all(v >= 0 for v in record["stage_seconds"].values())
            assert record["files_processed"] == 38 and record["edges"] > 30
            # The vectors are in the store ...
            keeper = ray.get_actor("store", namespace="neo")
            assert ray.get(keeper.count.remote(url)) == 38
            # ... the metadata waits in Redis, and so does the record's PostgreSQL share.
            parked = broker.parked_metadata(url)
            assert parked is not None and parked[0] == job_id
            metadata = ParkedRepository.decode(parked[1])
            assert len(metadata.graph.nodes) == 38 and len(metadata.graph.edges) == record["edges"]
            # (The history actor makes the record final in Redis first, then tries PostgreSQL
            # for up to its pool timeout before it parks the record.)
            wait_for(lambda: any(r.job_id == job_id for _, r in broker.parked_records()), 60, 0.2)
            # Nothing ran twice, nothing was dead-lettered.
            assert all(d["task"]["job_id"] != job_id for d in broker.dead())

        # PostgreSQL answers again: the history actor writes what waited (within its retry
        # period), and the routes that read PostgreSQL see the repository.
        wait_for(lambda: broker.parked_metadata(url) is None, 180, 0.5)
        db = Database.connect(url_db)
        try:
            found = db.repository(url)
            assert found is not None
            assert (found.files, found.edges, found.last_job_id) == (38, record["edges"], job_id)
            assert found.last_commit_sha == record["commit_sha"]
            job = wait_for(lambda: db.job(job_id), 60, 0.5)
            assert job.attempts == 1 and job.stage_seconds == record["stage_seconds"]
        finally:
            db.close()
        with neo_system.http() as http:
            deps = http.get(
                "/api/v1/graph/dependents",
                params={"repo_url": str(repo), "file_path": "shop/models/order.py"},
                headers=neo_system.auth(),
            )
        assert deps.status_code == 200, deps.text
        files = {f["file_path"] for g in deps.json()["by_depth"] for f in g["files"]}
        assert "shop/services/orders.py" in files
    finally:
        broker.close()


def _info(worker: Any, timeout_s: float = 30) -> dict[str, Any]:
    return dict(ray.get(worker.info.remote(), timeout=timeout_s))


def test_a_transient_error_clears_when_the_database_answers_again(
    neo_system: System, fresh_database_url: str, postgres_server_url: str
) -> None:
    """A worker of its own (not the bridge's), on a database of its own, parking turned off.
    It starts while that database is away; the outage fails its job as a transient error, the
    Error shows while the database stays away, and clears by itself once it answers, with no
    job in between."""
    settings = neo_system.settings.with_(
        database_url=fresh_database_url,
        park_metadata_max_mb=0,
        redis_prefix=f"err-{uuid.uuid4().hex[:8]}:",
    )
    broker = broker_of(settings)
    repo: Path = neo_system.sample_repo("pg-error")
    db_name = urlsplit(fresh_database_url).path.lstrip("/")
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {db_name} WITH (FORCE)".encode())
    name = f"error-worker-{uuid.uuid4().hex[:6]}"
    worker = GraphWorker.options(  # type: ignore[attr-defined]
        name=name, namespace="neo", num_cpus=0, max_restarts=0
    ).remote(settings, name)
    try:
        # It starts without its database (it used to fail in its constructor, over and over).
        assert _info(worker, 180)["state"] == "Idle"
        task = Task(
            job_id=str(uuid.uuid4()),
            repo_url=repo.resolve().as_uri(),
            submitted_at=utcnow_iso(),
            ttl_seconds=3600,
        )
        outcome = ray.get(worker.run.remote(task), timeout=240)
        assert outcome.retry and outcome.record is None
        assert outcome.error.startswith("DatabaseUnavailable")
        assert "NEO_PARK_METADATA_MAX_MB=0: not parked" in outcome.error
        assert broker.parked_metadata(task.repo_url) is None

        info = _info(worker)
        assert info["state"] == "Error" and info["error"] == outcome.error
        assert info["job_id"] is None
        (beat,) = broker.workers()
        assert beat.status == f"Error: {outcome.error}"
        # Several checks later, with the database still away, the Error stands.
        time.sleep(3 * RECOVERY_CHECK_S)
        assert _info(worker)["state"] == "Error"

        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {db_name}".encode())
        wait_for(lambda: _info(worker)["state"] == "Idle", 60, 0.2)
        assert _info(worker)["error"] is None
        wait_for(lambda: [b.status for b in broker.workers()] == ["Idle"], 30, 0.2)
    finally:
        ray.kill(worker, no_restart=True)
        broker.close()
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,))
            if found.fetchone() is None:  # the fixture drops it: it must be there
                conn.execute(f"CREATE DATABASE {db_name}".encode())
