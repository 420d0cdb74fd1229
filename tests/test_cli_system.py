"""`neo-ray up`, `ingest`, `status`, `history`, `down` as a user runs them, in their own Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from ray_fixtures import free_port

from neo_ray.pipeline.sample import write_sample_repo

pytestmark = pytest.mark.slow
NEO = str(Path(sys.executable).with_name("neo-ray"))


def _ours(roots: list[str]) -> list[str]:
    """Live processes whose command line or working directory lies under one of `roots`."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = " ".join(info["cmdline"] or []) + " " + (info["cwd"] or "")
        if any(root in text for root in roots):
            found.append(f"{info['pid']}: {text[:120]}")
    return found


def _no_ray_token_anywhere(env: dict[str, str], home: Path) -> dict[str, str]:
    """`env` as a new machine sees it: an empty HOME, no Ray token or auth mode set."""
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        env.pop(name, None)
    env.pop("XDG_STATE_HOME", None)
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home)}


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # A Ray temp dir of its own (short: Ray puts sockets there), so that nothing of the test
    # session's Ray is shared.
    ray_tmp = tempfile.mkdtemp(prefix="nr", dir="/tmp")
    env = {
        **os.environ,
        "NEO_DATA_DIR": str(tmp_path / "data"),
        "NEO_HTTP_PORT": str(free_port()),
        "NEO_ALLOW_LOCAL_REPOS": "1",
        "NEO_LOCAL_REPOS_ROOT": str(tmp_path),
        "NEO_EPOCHS": "2",
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env = _no_ray_token_anywhere(env, tmp_path / "home")
    yield env
    subprocess.run([NEO, "down"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def run(
    env: dict[str, str], *args: str, timeout: float = 240, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEO, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def _elsewhere(env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The user's environment without NEO_DATA_DIR or NEO_HTTP_PORT, and another folder."""
    other = {k: v for k, v in env.items() if k not in ("NEO_DATA_DIR", "NEO_HTTP_PORT")}
    folder = tmp_path / "somewhere-else"
    folder.mkdir(exist_ok=True)
    return other, folder


def test_up_ingest_status_history_down_leave_nothing(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    """On a machine that never ran Ray (empty HOME, no token): `up` makes the cluster's token
    in the data dir, and every later command, from any folder, finds the system."""
    roots = [user_env["NEO_DATA_DIR"], user_env["RAY_TMPDIR"]]
    up = run(user_env, "up")
    assert up.returncode == 0, up.stderr[-2000:]
    assert "started a head node" in up.stdout and "/api/v1/ingestion" in up.stdout
    token = Path(user_env["NEO_DATA_DIR"]) / "ray-auth-token"
    assert token.stat().st_mode & 0o777 == 0o600 and str(token) in up.stdout
    assert not (tmp_path / "home" / ".ray").exists(), "Ray wrote a token of its own in ~/.ray"
    base = f"http://127.0.0.1:{user_env['NEO_HTTP_PORT']}"
    assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "healthy"
    assert f"dashboard   {base}/\n" in up.stdout
    assert "<title>neo-ray dashboard</title>" in httpx.get(f"{base}/", timeout=10).text
    assert _ours(roots), "up started nothing?"

    env, cwd = _elsewhere(user_env, tmp_path)
    repo = write_sample_repo(tmp_path / "sample")
    ingest = run(env, "ingest", str(repo), "--wait", cwd=cwd)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr[-2000:]
    assert "complete" in ingest.stdout and "38 (0 skipped)" in ingest.stdout
    status = run(env, "status", cwd=cwd)
    assert status.returncode == 0 and "Idle" in status.stdout and "worker-" in status.stdout
    history = run(env, "history", cwd=cwd)
    assert "complete" in history.stdout and repo.resolve().as_uri() in history.stdout
    similar = run(env, "similar", str(repo), "shop/models/order.py", "-k", "2", cwd=cwd)
    assert similar.returncode == 0 and similar.stdout.count("(0.") == 2, similar.stderr[-2000:]

    down = run(env, "down", cwd=cwd)
    assert down.returncode == 0, down.stderr[-2000:]
    assert "stopped the head node" in down.stdout and "redis, postgres" in down.stdout
    assert _ours(roots) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/health", timeout=2)
    after = run(env, "status", cwd=cwd)
    assert after.returncode == 1 and "neo-ray up" in after.stderr


def test_a_failed_up_undoes_itself(user_env: dict[str, str]) -> None:
    """A step that fails for real (the HTTP port is taken) stops what `up` had started."""
    from neo_ray.stores import embedded

    roots = [user_env["NEO_DATA_DIR"], user_env["RAY_TMPDIR"]]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(user_env["NEO_HTTP_PORT"])))
        busy.listen()
        up = run(user_env, "up")
    assert up.returncode == 1
    assert "HTTP port" in up.stderr and "in use" in up.stderr, up.stderr[-2000:]
    assert "undone" in up.stderr and "Ray head" in up.stderr and "embedded services" in up.stderr
    assert _ours(roots) == []
    assert embedded.status(Path(user_env["NEO_DATA_DIR"])) == {"redis": False, "postgres": False}
    assert not (Path(user_env["NEO_DATA_DIR"]) / "system.json").exists()


def test_ingest_without_a_running_system_says_so(user_env: dict[str, str]) -> None:
    reply = run(user_env, "ingest", "github.com/a/b", timeout=60)
    assert reply.returncode == 1
    assert "neo-ray: error" in reply.stderr and "neo-ray up" in reply.stderr


def _head_session(data_dir: str) -> tuple[int, list[psutil.Process]]:
    """The pid of the head `up` started and the live processes of its session."""
    pid = int(json.loads((Path(data_dir) / "ray-head.json").read_text())["pid"])
    procs = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                procs.append(proc)
        except OSError:
            continue
    return pid, procs


def _listening(procs: list[psutil.Process]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, command line) of every listening TCP socket of `procs`."""
    found = []
    for proc in procs:
        try:
            line = " ".join(proc.cmdline())
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    ip = conn.laddr.ip.removeprefix("::ffff:")
                    found.append((ip, conn.laddr.port, proc.pid, line))
        except psutil.Error:
            continue
    return found


# Ray Serve 2.60 binds each replica's inter-deployment gRPC server to "[::]:0" whatever the
# node's address (ray/serve/_private/replica.py, `_on_initialized`); neo-ray's control
# replicas move it to 127.0.0.1 (control/app.py, hold_replica_grpc_to_loopback).
SERVE_REPLICA = "ray::ServeReplica:"


def _head_session_left(pid: int) -> list[str]:
    left = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if os.getsid(proc.pid) == pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
        except OSError:
            continue
    return left


def test_an_unreachable_redis_url_fails_fast_and_leaves_nothing(user_env: dict[str, str]) -> None:
    """A configured Redis that does not answer stops `up` before any Ray process starts,
    with an error naming the setting; what `up` had started is undone."""
    from neo_ray.stores import embedded

    env = {**user_env, "NEO_REDIS_URL": f"redis://:pw@127.0.0.1:{free_port()}/0"}
    up = run(env, "up", timeout=120)
    assert up.returncode == 1
    assert "does not answer" in up.stderr and "NEO_REDIS_URL" in up.stderr, up.stderr[-2000:]
    assert ":pw@" not in up.stdout + up.stderr and "redis://:***@127.0.0.1" in up.stdout
    assert "undone" in up.stderr and "embedded services" in up.stderr
    assert "Ray head" not in up.stderr  # it never started
    assert _ours([user_env["NEO_DATA_DIR"], user_env["RAY_TMPDIR"]]) == []
    assert embedded.status(Path(user_env["NEO_DATA_DIR"])) == {"redis": False, "postgres": False}
    assert not (Path(user_env["NEO_DATA_DIR"]) / "system.json").exists()


def _slow_repo(root: Path) -> Path:
    """A git repository of 1,201 Python files: a job that runs for a while."""
    root.mkdir(parents=True)
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    for i in range(1200):
        (root / "pkg" / f"m{i}.py").write_text(f"from pkg import m{(i * 7 + 1) % 1200}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run([*git[:5], "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "files"], check=True)
    return root


@pytest.mark.timeout(900)  # three `up`s and a slow job twice, on a small machine
def test_a_system_through_down_sigterm_and_kill_9_loses_no_job_and_leaves_nothing(
    ray_session: None, user_env: dict[str, str], tmp_path: Path
) -> None:
    """One system's life, in a process that already runs a Ray of its own (first contact
    works then too):

    - a second `up` says the system runs and waits for nothing; the embedded Redis wants its
      password; every port of the head listens on 127.0.0.1 (but Serve's, below);
    - `down` while a job runs, then SIGTERM to the head while another runs: each job stays in
      the queue (Redis keeps its append-only file in the data dir), the next `up` runs it
      again, and it completes exactly once, its second attempt counted;
    - after kill -9 of the head (ray start, GCS, raylet) `down` still removes every process
      the head started.
    """
    import redis

    data = user_env["NEO_DATA_DIR"]
    roots = [data, user_env["RAY_TMPDIR"]]
    base = f"http://127.0.0.1:{user_env['NEO_HTTP_PORT']}"
    up = run(user_env, "up")
    assert up.returncode == 0, up.stderr[-2000:]
    assert "started a head node" in up.stdout
    assert "waiting     for the API to be healthy (at most 120 s)" in up.stdout
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in up.stdout  # for `ray` commands against it

    again = run(user_env, "up", timeout=60)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already running" in again.stdout and "neo-ray down" in again.stdout
    assert "waiting" not in again.stdout  # nothing was started or waited for

    # The embedded Redis: a client without the password is refused; no output shows it.
    secret = (Path(data) / "redis" / "password").read_text().strip()
    assert secret not in up.stdout + up.stderr + (Path(data) / "system.json").read_text()
    port = int((Path(data) / "redis" / "port").read_text())
    bare = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        bare.ping()
    bare.close()

    # Every process of the head listens on 127.0.0.1 alone (the API, Ray's dashboard, GCS,
    # raylet, agents, workers, metrics), but for one gRPC port of each Serve replica.
    pid, procs = _head_session(data)
    head = json.loads((Path(data) / "ray-head.json").read_text())
    dash_port = int(head["dashboard"].rsplit(":", 1)[1])
    sockets = _listening(procs)
    api_port = int(user_env["NEO_HTTP_PORT"])
    assert {ip for ip, port, _, _ in sockets if port in (api_port, dash_port)} == {"127.0.0.1"}
    names = {line.split(" ", 1)[0].rsplit("/", 1)[-1] for _, _, _, line in sockets}
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names
    wide = [(ip, port, p, line[:100]) for ip, port, p, line in sockets if ip != "127.0.0.1"]
    assert wide == [], wide
    # The control replicas' gRPC servers were there to be seen, on loopback.
    assert any(line.startswith(SERVE_REPLICA) for _, _, _, line in sockets), names

    def job(job_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{base}/api/v1/ingestion/jobs/{job_id}", timeout=10).json())

    def start_and_hold(repo: Path) -> tuple[str, int]:
        """Submit `repo`, wait until its job runs, freeze the worker (SIGSTOP) so that what
        comes next certainly meets the job running; return the job and the head's pid."""
        queued = run(user_env, "ingest", str(repo))
        assert queued.returncode == 0, queued.stderr[-2000:]
        job_id = queued.stdout.split("job ", 1)[1].split()[0]
        deadline = time.monotonic() + 120
        while job(job_id).get("status") != "running":
            assert time.monotonic() < deadline, job(job_id)
            time.sleep(0.01)
        pid, procs = _head_session(data)
        workers = [p for p in procs if " ".join(p.cmdline()).startswith("ray::GraphWorker")]
        assert workers, [" ".join(p.cmdline())[:60] for p in procs]
        for proc in workers:
            proc.suspend()
        return job_id, pid

    def completes_once(job_id: str) -> None:
        deadline = time.monotonic() + 300
        while (record := job(job_id)).get("status") not in ("complete", "failed", "skipped"):
            assert time.monotonic() < deadline, record
            time.sleep(0.5)
        assert record["status"] == "complete" and record["attempts"] == 2, record
        assert record["files_processed"] == 1201
        history = httpx.get(f"{base}/api/v1/ingestion/jobs/history", timeout=10).json()["jobs"]
        assert [j["job_id"] for j in history].count(job_id) == 1

    first, pid = start_and_hold(_slow_repo(tmp_path / "slow-1"))
    down = run(user_env, "down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert _head_session_left(pid) == []
    again = run(user_env, "up")
    assert again.returncode == 0, again.stderr[-2000:]
    completes_once(first)

    second, pid = start_and_hold(_slow_repo(tmp_path / "slow-2"))
    os.kill(pid, signal.SIGTERM)  # the head drains and stops; Redis and PostgreSQL stay
    deadline = time.monotonic() + 120
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the head ignored SIGTERM"
        time.sleep(0.5)
    again = run(user_env, "up")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _head_session_left(pid) == []
    completes_once(second)

    # kill -9 of the head: `ray start`, its GCS and its raylet, at once.
    pid, procs = _head_session(data)
    core = [p for p in procs if p.pid == pid or p.name() in ("gcs_server", "raylet")]
    assert len(core) == 3, [p.name() for p in core]
    for proc in core:
        proc.kill()
    psutil.wait_procs(core, timeout=10)
    down = run(user_env, "down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert "stopped the head node" in down.stdout
    assert _head_session_left(pid) == []
    assert _ours(roots) == []
