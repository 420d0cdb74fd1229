"""Embedded servers: they start once, outlive their starter, answer other processes, stop clean."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from neo_ray.config import Settings, mask_url
from neo_ray.errors import QueueUnavailable
from neo_ray.models import Task, utcnow_iso
from neo_ray.stores import embedded as services
from neo_ray.stores.metadata import ping_url
from neo_ray.stores.queue import Broker

pytest_plugins = ["services_fixtures"]


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (another process, as an actor or the CLI would be)."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


def processes_using(root: Path) -> list[str]:
    """Live processes whose command line or working directory lies in `root`."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue  # exited; only waiting for init to reap it
        cmdline = " ".join(info["cmdline"] or [])
        if str(root) in cmdline or (info["cwd"] or "").startswith(str(root)):
            found.append(f"{info['pid']} {cmdline}")
    return found


def test_redis_starts_once_outlives_its_starter_and_stops_clean(service_dir: Path) -> None:
    # Started by a process that then exits, as `neo-ray up` does.
    url = run_python(
        f"""
        from pathlib import Path
        from neo_ray.stores import embedded as services
        print(services.start_redis(Path({str(service_dir)!r})))
        """
    )
    assert url.startswith("redis://:") and "@127.0.0.1:" in url
    pid = int((service_dir / "redis" / "redis.pid").read_text())
    assert os.getsid(pid) == pid  # its own session: a signal to ours does not reach it
    assert services.status(service_dir) == {"redis": True, "postgres": False}

    assert services.start_redis(service_dir) == url  # idempotent: same server
    assert int((service_dir / "redis" / "redis.pid").read_text()) == pid
    assert run_python(
        f"from neo_ray.stores.queue import Broker; print(Broker.connect({url!r}).ping())"
    )

    assert processes_using(service_dir)
    assert services.stop_all(service_dir) == ["redis"]
    assert processes_using(service_dir) == []
    assert services.status(service_dir)["redis"] is False
    assert services.stop_all(service_dir) == []


def test_redis_binds_loopback_with_protected_mode(service_dir: Path) -> None:
    url = services.start_redis(service_dir)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    pid = int((service_dir / "redis" / "redis.pid").read_text())
    listening = {c.laddr for c in psutil.Process(pid).net_connections() if c.status == "LISTEN"}
    assert {(addr.ip, addr.port) for addr in listening} == {("127.0.0.1", port)}
    with Broker.connect(url) as b:
        config = b._backend.execute("CONFIG", "GET", "protected-mode")
        assert list(config) == ["protected-mode", "yes"] or config == {"protected-mode": "yes"}


def test_redis_refuses_a_client_without_its_password(service_dir: Path) -> None:
    """The embedded server asks for a password kept private in the data dir; the URL that
    `start_redis` hands to components carries it, and nothing else gets in."""
    url = services.start_redis(service_dir)
    secret_file = service_dir / "redis" / "password"
    secret = secret_file.read_text().strip()
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert (service_dir / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
    parts = urlsplit(url)
    assert parts.password == secret and len(secret) >= 24
    assert mask_url(url) == f"redis://:***@127.0.0.1:{parts.port}/0"
    pid = int((service_dir / "redis" / "redis.pid").read_text())
    assert secret not in " ".join(psutil.Process(pid).cmdline())
    bare = redis.Redis(host="127.0.0.1", port=parts.port, socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            bare.ping()
        with pytest.raises(redis.AuthenticationError):
            bare.auth("not-the-password")
    finally:
        bare.close()
    with Broker.connect(url) as b:
        assert b.ping()
    # The same secret after a restart: queued work and every component's URL stay valid.
    assert services.stop_all(service_dir) == ["redis"]
    assert urlsplit(services.start_redis(service_dir)).password == secret


def test_redis_append_only_file_keeps_a_queued_task_across_restart(service_dir: Path) -> None:
    task = Task(
        job_id=str(uuid.uuid4()),
        repo_url="github.com/o/r",
        submitted_at=utcnow_iso(),
        ttl_seconds=60,
    )
    with Broker.connect(services.start_redis(service_dir)) as b:
        b.enqueue(task, cap=10, dedupe_key="k")
    assert services.stop_all(service_dir) == ["redis"]
    with Broker.connect(services.start_redis(service_dir)) as b:
        assert b.queued() == [task]
        job = b.get_job(task.job_id)
        assert job is not None and job["state"] == "queued"


def test_local_services_start_both_embedded_servers_and_stop_them(service_dir: Path) -> None:
    settings = Settings(data_dir=service_dir, redis_url=None, database_url=None)
    urls = services.ensure_local_services(settings)
    assert urls.database_url.startswith("postgresql://")
    assert services.status(service_dir) == {"redis": True, "postgres": True}
    postmaster = int((service_dir / "pg" / "postmaster.pid").read_text().split()[0])
    assert os.getsid(postmaster) == postmaster

    assert services.ensure_local_services(settings) == urls  # idempotent
    # Reached from another process by address alone.
    answer = run_python(
        f"""
        from neo_ray.stores.metadata import Database
        with Database.connect({urls.database_url!r}) as db:
            print(db.ping())
        """
    )
    assert answer == "True"

    assert sorted(services.stop_all(service_dir)) == ["postgres", "redis"]
    assert processes_using(service_dir) == []
    assert services.status(service_dir) == {"redis": False, "postgres": False}


def test_configured_urls_are_used_and_nothing_is_started(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url="redis://redis.example:6379/0",
        database_url="postgresql://u@db.example/neo",
    )
    urls = services.ensure_local_services(settings)
    assert (urls.redis_url, urls.database_url) == (settings.redis_url, settings.database_url)
    assert not (tmp_path / "data").exists()


def test_servers_killed_without_warning_start_again(service_dir: Path) -> None:
    services.start_redis(service_dir)
    services.start_postgres(service_dir)
    redis_pid = int((service_dir / "redis" / "redis.pid").read_text())
    postmaster = int((service_dir / "pg" / "postmaster.pid").read_text().split()[0])
    for pid in (redis_pid, postmaster):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    # PostgreSQL's children exit too, once they notice their postmaster is gone.
    while processes_using(service_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert services.status(service_dir) == {"redis": False, "postgres": False}

    redis_url = services.start_redis(service_dir)
    database_url = services.start_postgres(service_dir)
    with Broker.connect(redis_url) as b:
        assert b.ping()
    assert ping_url(database_url)
    assert sorted(services.stop_all(service_dir)) == ["postgres", "redis"]


def test_a_taken_port_is_refused(service_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(QueueUnavailable):
            services.start_redis(service_dir, port=busy.getsockname()[1])
    assert processes_using(service_dir) == []
