"""`neo-ray up`, `ingest`, `status`, `history`, `down` as a user runs them, in their own Ray."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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


def test_up_and_down_after_the_session_ray_started(
    ray_session: None, user_env: dict[str, str]
) -> None:
    """The same first contact works when this process already runs a Ray of its own."""
    up = run(user_env, "up")
    assert up.returncode == 0, up.stderr[-2000:]
    assert "started a head node" in up.stdout
    deadline = time.monotonic() + 60
    while "worker-" not in (status := run(user_env, "status")).stdout:
        assert status.returncode == 0 and time.monotonic() < deadline, status.stderr[-2000:]
        time.sleep(1)
    down = run(user_env, "down")
    assert down.returncode == 0 and "stopped the head node" in down.stdout
    assert _ours([user_env["NEO_DATA_DIR"], user_env["RAY_TMPDIR"]]) == []


def test_ingest_without_a_running_system_says_so(user_env: dict[str, str]) -> None:
    reply = run(user_env, "ingest", "github.com/a/b", timeout=60)
    assert reply.returncode == 1
    assert "neo-ray: error" in reply.stderr and "neo-ray up" in reply.stderr
