"""PostgreSQL layer against a real server: migrations, job records, repository graphs."""

from __future__ import annotations

import threading

import psycopg
import pytest

from neo_ray.errors import DatabaseError
from neo_ray.models import JobRecord, JobStatus, Language, RepoGraph, SourceFile
from neo_ray.stores.metadata import Database, ping_url

pytest_plugins = ["services_fixtures"]

REPO = "https://github.com/o/r"


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
        assert db.migrate() == ["001_init"]
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
    assert sorted(applied) == [[], ["001_init"]]


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
    # Its speed is measured in bench/bench_stores.py, not asserted here.
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
    with pytest.raises(DatabaseError):
        Database.connect(url, timeout_s=1.0)
    assert not ping_url(url, timeout_s=1.0)


def test_ping(database: Database, database_url: str) -> None:
    assert database.ping()
    assert ping_url(database_url)
