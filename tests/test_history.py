"""HistoryActor: Redis first and always; a PostgreSQL outage delays records, loses none."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import psycopg
import pytest
import ray

from neo_ray.config import Settings
from neo_ray.edge.history import HistoryActor
from neo_ray.models import JobRecord, JobStatus, Language, RepoGraph, SourceFile, utcnow_iso
from neo_ray.stores.metadata import Database, ParkedRepository
from neo_ray.stores.queue import Broker

pytestmark = pytest.mark.ray


def _record(status: JobStatus = JobStatus.COMPLETE) -> JobRecord:
    return JobRecord(
        repo_url="https://github.com/o/r",
        status=status,
        duration_seconds=1.5,
        files_processed=3,
        embeddings_generated=3,
        timestamp=utcnow_iso(),
        job_id=str(uuid.uuid4()),
        edges=2,
    )


def test_records_reach_redis_and_survive_a_postgres_outage(
    ray_session: None,
    redis_url: str,
    redis_prefix: str,
    fresh_database_url: str,
    postgres_server_url: str,
) -> None:
    settings = Settings(
        redis_url=redis_url, redis_prefix=redis_prefix, database_url=fresh_database_url
    )
    actor = HistoryActor.options(name=f"history-{uuid.uuid4().hex[:6]}").remote(settings)
    broker = Broker.connect(redis_url, prefix=redis_prefix)
    first = _record()
    ray.get(actor.record.remote(first))
    assert broker.history(10)[0] == first
    assert broker.get_job(first.job_id)["state"] == "complete"

    # PostgreSQL loses the database: the record still lands in Redis and waits for PostgreSQL.
    name = urlsplit(fresh_database_url).path.lstrip("/")
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
    second = _record(JobStatus.FAILED)
    ray.get(actor.record.remote(second))
    assert broker.history(10)[0] == second
    assert ray.get(actor.pending.remote()) == 1

    # The actor restarts while PostgreSQL is still away: the parked record is not lost.
    ray.kill(actor)
    actor = HistoryActor.options(name=f"history-{uuid.uuid4().hex[:6]}").remote(settings)
    assert ray.get(actor.pending.remote()) == 1

    # It comes back: the next record flushes the one that waited.
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    db = Database.connect(fresh_database_url)
    try:
        db.migrate()
        third = _record()
        ray.get(actor.record.remote(third))
        assert ray.get(actor.pending.remote()) == 0
        assert {j.job_id for j in db.jobs(10)} == {second.job_id, third.job_id}
    finally:
        db.close()
        ray.kill(actor)
        broker.close()


def test_parked_metadata_is_written_and_refused_metadata_does_not_block(
    ray_session: None, redis_url: str, redis_prefix: str, fresh_database_url: str
) -> None:
    settings = Settings(
        redis_url=redis_url, redis_prefix=redis_prefix, database_url=fresh_database_url
    )
    broker = Broker.connect(redis_url, prefix=redis_prefix)
    good_url, bad_url = "https://github.com/o/good", "https://github.com/o/bad"
    nodes = (SourceFile("a.py", Language.PYTHON), SourceFile("b.py", Language.PYTHON))
    good = RepoGraph(good_url, "c1", nodes, (("a.py", "b.py"),))
    # PostgreSQL refuses this one (an edge to a file that is no node): no outage can explain
    # it, so waiting for PostgreSQL would hold back everything parked after it for ever.
    bad = RepoGraph(bad_url, "c1", nodes[:1], (("a.py", "zzz.py"),))
    now = datetime.now(UTC)
    broker.park_metadata(bad_url, "j-bad", ParkedRepository(bad_url, bad, "j-bad", now).encode())
    broker.park_metadata(good_url, "j-ok", ParkedRepository(good_url, good, "j-ok", now).encode())
    actor = HistoryActor.options(name=f"history-{uuid.uuid4().hex[:6]}").remote(settings)
    try:
        assert ray.get(actor.pending_metadata.remote()) == 2
        ray.get(actor.metadata_parked.remote())
        ray.get(actor.record.remote(_record()))  # a write flushes what is parked first
        assert ray.get(actor.pending_metadata.remote()) == 0
        with Database.connect(fresh_database_url) as db:
            repo = db.repository(good_url)
            assert repo is not None and (repo.files, repo.edges, repo.last_job_id) == (2, 1, "j-ok")
            assert repo.last_ingested_at == now
            assert db.dependencies(good_url, "a.py") == ["b.py"]
            assert db.repository(bad_url) is None
    finally:
        ray.kill(actor)
        broker.close()
