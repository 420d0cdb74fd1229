"""Session-wide real Redis and PostgreSQL for tests, with a clean state for each test.

conftest.py imports these fixtures:

- `redis_url` (session): an embedded redis-server; `redis_prefix` (per test) is a fresh key
  prefix, and `broker` a Broker over it, so tests never see each other's keys (no FLUSHDB:
  other fixtures of the session may share the server).
- `upstash` (session): an Upstash-REST-compatible server (tests/upstash_server.py) in front of
  that redis-server; `upstash_broker` (per test) a Broker over it, with a fresh prefix.
- `service_dir` (per test): a private data dir whose servers are stopped afterwards;
  `throwaway_redis` a redis-server in one (for tests that stop Redis).
- `database_url` (session): a migrated database on an embedded PostgreSQL; `database` (per
  test) is a Database over it with every table emptied first; `fresh_database_url` (per test)
  is a brand-new, unmigrated database, dropped afterwards.

The servers' folders live directly under the system temp dir, not under pytest's basetemp:
PostgreSQL runs as another user when the tests run as root, and pytest makes its own folder
private again whenever a session starts, which would cut a running server off its data.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from upstash_server import UpstashServer, running

from neo_ray.stores import embedded as services
from neo_ray.stores.keys import Keys
from neo_ray.stores.metadata import Database
from neo_ray.stores.queue import Broker
from neo_ray.stores.upstash import UpstashBackend

UPSTASH_TOKEN = "upstash-test-token-" + uuid.uuid4().hex

_TABLES = "repositories, ingestion_jobs, files, dependencies"


def private_service_dir(name: str) -> Path:
    """A folder for one embedded server, outside pytest's private basetemp (see above)."""
    return Path(tempfile.mkdtemp(prefix=f"neo-ray-test-{name}-"))


def remove_service_dir(path: Path) -> None:
    """Stop whatever embedded server lives in `path`, then delete the folder."""
    services.stop_all(path)
    shutil.rmtree(path, ignore_errors=True)


def with_dbname(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture
def service_dir() -> Iterator[Path]:
    """A private folder for a test's own embedded servers, stopped and removed afterwards."""
    root = private_service_dir("own")
    try:
        yield root
    finally:
        remove_service_dir(root)


@pytest.fixture
def throwaway_redis(service_dir: Path) -> tuple[Path, str]:
    """A redis-server of this test alone: (its data dir, its URL); stop it with stop_all."""
    return service_dir, services.start_redis(service_dir)


@pytest.fixture(scope="session")
def redis_home() -> Iterator[Path]:
    """The data dir of the session's redis-server (a test may stop and restart it there)."""
    root = private_service_dir("redis")
    try:
        yield root
    finally:
        remove_service_dir(root)


@pytest.fixture(scope="session")
def redis_url(redis_home: Path) -> str:
    return services.start_redis(redis_home)


@pytest.fixture
def redis_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def broker(redis_url: str, redis_prefix: str) -> Iterator[Broker]:
    with Broker.connect(redis_url, prefix=redis_prefix) as b:
        yield b


@pytest.fixture(scope="session")
def upstash(redis_url: str) -> Iterator[UpstashServer]:
    with running(redis_url, UPSTASH_TOKEN) as server:
        yield server


@pytest.fixture
def upstash_broker(upstash: UpstashServer, redis_prefix: str) -> Iterator[Broker]:
    backend = UpstashBackend(upstash.url, UPSTASH_TOKEN, timeout_s=5.0)
    with Broker(backend, Keys(redis_prefix), idle_poll_max_s=1.0) as b:
        yield b


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The embedded server's maintenance database (`postgres`); create databases from it."""
    root = private_service_dir("pg")
    try:
        yield services.start_postgres(root)
    finally:
        remove_service_dir(root)


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> str:
    name = "neo_test"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    url = with_dbname(postgres_server_url, name)
    with Database.connect(url) as db:
        db.migrate()
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE".encode())
    with Database.connect(database_url) as db:
        yield db


@pytest.fixture
def fresh_database_url(postgres_server_url: str) -> Iterator[str]:
    name = f"neo_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    try:
        yield with_dbname(postgres_server_url, name)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
