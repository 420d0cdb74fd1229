"""PostgreSQL layer against a real server: migrations, job records, repository graphs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
import pytest

from neo_ray.errors import DatabaseError, DatabaseUnavailable
from neo_ray.models import JobRecord, JobStatus, Language, RepoGraph, SkippedFile, SourceFile
from neo_ray.stores.metadata import Database, ParkedRepository, ping_url

pytest_plugins = ["services_fixtures"]

REPO = "https://github.com/o/r"
SHIPPED = ["001_init", "002_search"]


def graph(files: list[str], edges: list[tuple[str, str]], commit: str = "c1") -> RepoGraph:
    nodes = tuple(SourceFile(path, Language.PYTHON) for path in files)
    return RepoGraph(repo=REPO, commit=commit, nodes=nodes, edges=tuple(edges))


def record(job_id: str, status: JobStatus, timestamp: str, **kw: object) -> JobRecord:
    fields: dict[str, object] = {
        "repo_url": REPO,
        "status": status,
        "duration_seconds": 2.5,
        "timestamp": timestamp,
        "job_id": job_id,
        **kw,
    }
    return JobRecord.model_validate(fields)


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def test_migrate_applies_once_and_then_is_a_no_op(fresh_database_url: str) -> None:
    with Database.connect(fresh_database_url) as db:
        assert db.migrate() == SHIPPED
        assert db.migrate() == []
        assert db.jobs(10) == []
    tables = rows(
        fresh_database_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert {t[0] for t in tables} == {
        "schema_migrations",
        "repositories",
        "ingestion_jobs",
        "files",
        "dependencies",
    }


def test_two_processes_migrating_at_once_apply_each_migration_once(
    fresh_database_url: str,
) -> None:
    start = threading.Barrier(2)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            with Database.connect(fresh_database_url) as db:
                start.wait()
                applied.append(db.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == [[], SHIPPED]


def test_save_repository_replaces_files_and_edges(database: Database, database_url: str) -> None:
    database.save_repository(
        REPO,
        graph(["a.py", "b.py", "c.py"], [("a.py", "b.py"), ("b.py", "c.py"), ("a.py", "c.py")]),
    )
    assert database.dependents(REPO, "c.py") == ["a.py", "b.py"]
    assert database.dependencies(REPO, "a.py") == ["b.py", "c.py"]

    # c.py is deleted, d.py appears.
    database.save_repository(
        REPO, graph(["a.py", "b.py", "d.py"], [("a.py", "b.py"), ("a.py", "d.py")], commit="c2")
    )
    assert database.dependencies(REPO, "a.py") == ["b.py", "d.py"]
    assert database.dependents(REPO, "c.py") == []
    assert database.dependencies(REPO, "b.py") == []
    files = rows(database_url, "SELECT path, in_degree, out_degree, commit_sha FROM files")
    assert sorted(files) == [("a.py", 0, 2, "c2"), ("b.py", 1, 0, "c2"), ("d.py", 1, 0, "c2")]
    assert rows(database_url, "SELECT count(*) FROM dependencies") == [(2,)]
    repo = database.repository(REPO)
    assert repo is not None
    assert (repo.last_commit_sha, repo.files, repo.edges) == ("c2", 3, 2)
    assert rows(database_url, "SELECT count(*) FROM repositories") == [(1,)]


def test_queries_are_scoped_to_their_repository(database: Database) -> None:
    database.save_repository(REPO, graph(["a.py", "b.py"], [("a.py", "b.py")]))
    other = "https://github.com/o/other"
    database.save_repository(other, graph(["a.py", "b.py"], [("b.py", "a.py")]))
    assert database.dependents(REPO, "b.py") == ["a.py"]
    assert database.dependents(other, "b.py") == []
    assert database.dependencies(other, "b.py") == ["a.py"]
    assert database.repository("https://github.com/o/never") is None


def test_an_edge_to_a_missing_file_is_refused_and_nothing_changes(database: Database) -> None:
    database.save_repository(REPO, graph(["a.py", "b.py"], [("a.py", "b.py")]))
    with pytest.raises(DatabaseError, match="not a node"):
        database.save_repository(REPO, graph(["a.py"], [("a.py", "zzz.py")]))
    assert database.dependencies(REPO, "a.py") == ["b.py"]


def test_save_repository_stores_a_large_graph(database: Database) -> None:
    # Its speed is measured in bench/bench_latency.py, not asserted here.
    files = [f"pkg/m{i}.py" for i in range(5000)]
    edges = [(files[i], files[(i * 7 + 1) % 5000]) for i in range(5000)]
    edges += [(files[i], files[(i * 13 + 5) % 5000]) for i in range(5000)]
    database.save_repository(REPO, graph(files, edges))
    repo = database.repository(REPO)
    assert repo is not None and (repo.files, repo.edges) == (5000, len(set(edges)))
    assert database.dependencies(REPO, files[0]) == sorted({files[1], files[5]})


def test_record_job_upserts_by_job_id(database: Database) -> None:
    failed = record("j1", JobStatus.FAILED, "2026-11-25T10:00:00.000000Z", error="boom")
    database.record_job(failed)
    done = record(
        "j1",
        JobStatus.COMPLETE,
        "2026-11-25T10:05:00.000000Z",
        files_processed=12,
        stage_seconds={"parse": 0.5, "training": 3.0},
        attempts=1,
    )
    database.record_job(done)
    database.record_job(record("j0", JobStatus.SKIPPED, "2026-11-25T09:00:00Z", reason="expired"))
    other = record("j2", JobStatus.COMPLETE, "2026-11-25T11:00:00Z", repo_url="https://x.org/a/b")
    database.record_job(other)

    assert [r.job_id for r in database.jobs(10)] == ["j2", "j1", "j0"]  # newest first
    assert database.jobs(10, repo_url=REPO)[0] == done
    assert [r.job_id for r in database.jobs(10, repo_url=REPO)] == ["j1", "j0"]
    assert [r.job_id for r in database.jobs(1)] == ["j2"]


def test_unreachable_database_is_a_database_error() -> None:
    url = "postgresql://postgres@/postgres?host=/nonexistent-neo-ray-socket-dir"
    with pytest.raises(DatabaseUnavailable):
        Database.connect(url, timeout_s=1.0)
    assert not ping_url(url, timeout_s=1.0)


def test_ping(database: Database, database_url: str) -> None:
    assert database.ping()
    assert ping_url(database_url)


def test_an_outage_is_unavailable_and_a_refusal_is_not(
    fresh_database_url: str, postgres_server_url: str
) -> None:
    """Callers park work on DatabaseUnavailable only: a refused write is a plain DatabaseError."""
    with Database.connect(fresh_database_url, timeout_s=2.0) as db:
        db.migrate()
        with pytest.raises(DatabaseError) as refused:
            db.save_repository(REPO, graph(["a.py"], [("a.py", "zzz.py")]))
        assert not isinstance(refused.value, DatabaseUnavailable)
        # The database goes away under the open pool: its connections break, new ones fail.
        name = urlsplit(fresh_database_url).path.lstrip("/")
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
        try:
            with pytest.raises(DatabaseUnavailable):
                db.save_repository(REPO, graph(["a.py"], []))
        finally:
            with psycopg.connect(postgres_server_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}".encode())  # the fixture drops it


def _big_graph(n: int) -> RepoGraph:
    files = [f"src/pkg{i % 97}/module_{i}.py" for i in range(n)]
    edges = [(files[i], files[(i * 7 + 1) % n]) for i in range(n)]
    edges += [(files[i], files[(i * 13 + 5) % n]) for i in range(n)]
    edges += [(files[i], files[(i * 31 + 3) % n]) for i in range(n)]
    nodes = tuple(SourceFile(p, Language.PYTHON) for p in files)
    skipped = (SkippedFile("assets/logo.png", "binary"),)
    return RepoGraph(REPO, "c" * 40, nodes, tuple(edges), skipped)


def test_parked_metadata_round_trips_compactly() -> None:
    big = _big_graph(100_000)
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = ParkedRepository(REPO, big, "job-1", at).encode()
    back = ParkedRepository.decode(text)
    assert (back.repo_url, back.job_id, back.ingested_at) == (REPO, "job-1", at)
    assert back.graph == big  # files, languages, edges, skipped and commit, all of them
    # 100,000 files and 300,000 edges: a few MiB in Redis, not the tens of MiB of plain JSON.
    assert len(text) < 4 * 2**20, len(text)
    with pytest.raises(ValueError):
        ParkedRepository.decode("z1:bm90IHpsaWI=")
    with pytest.raises(ValueError):
        ParkedRepository.decode("{}")


def test_parked_metadata_is_written_unless_a_later_ingest_was_saved(
    database: Database, database_url: str
) -> None:
    now = datetime.now(UTC)
    old = ParkedRepository(REPO, graph(["a.py", "b.py"], [("a.py", "b.py")]), "j1", now)
    assert database.save_parked(old)
    repo = database.repository(REPO)
    assert repo is not None and (repo.files, repo.last_job_id) == (2, "j1")
    assert repo.last_ingested_at == now  # the job's time, not the time it was written
    assert database.dependencies(REPO, "a.py") == ["b.py"]

    # A later job saved directly; an older parked write must not undo it.
    database.save_repository(REPO, graph(["a.py", "c.py"], [("a.py", "c.py")]), job_id="j2")
    stale = ParkedRepository(REPO, graph(["x.py"], []), "j0", now - timedelta(hours=1))
    assert not database.save_parked(stale)
    repo = database.repository(REPO)
    assert repo is not None and (repo.files, repo.last_job_id) == (2, "j2")
    assert database.dependencies(REPO, "a.py") == ["c.py"]
    assert rows(database_url, "SELECT count(*) FROM files WHERE path = 'x.py'") == [(0,)]
