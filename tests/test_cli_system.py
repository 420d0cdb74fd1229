"""`neo-ray up`, `ingest`, `status`, `history`, `down` as a user runs them, in their own Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # A Ray temp dir of its own (short: Ray puts sockets there), so `up` starts a new cluster
    # instead of joining the test session's.
    ray_tmp = tempfile.mkdtemp(prefix="nr", dir="/tmp")
    env = {
        **os.environ,
        "NEO_DATA_DIR": str(tmp_path / "data"),
        "NEO_HTTP_PORT": str(free_port()),
        "NEO_ALLOW_LOCAL_REPOS": "1",
        "NEO_EPOCHS": "2",
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    yield env
    subprocess.run([NEO, "down"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def run(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NEO, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_up_ingest_status_history_down_leave_nothing(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    roots = [user_env["NEO_DATA_DIR"], user_env["RAY_TMPDIR"]]
    up = run(user_env, "up")
    assert up.returncode == 0, up.stderr[-2000:]
    assert "started a head node" in up.stdout and "/api/v1/ingestion" in up.stdout
    base = f"http://127.0.0.1:{user_env['NEO_HTTP_PORT']}"
    assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "healthy"
    assert f"dashboard   {base}/\n" in up.stdout
    assert "<title>neo-ray dashboard</title>" in httpx.get(f"{base}/", timeout=10).text
    assert _ours(roots), "up started nothing?"

    repo = write_sample_repo(tmp_path / "sample")
    ingest = run(user_env, "ingest", str(repo), "--wait")
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr[-2000:]
    assert "complete" in ingest.stdout and "38 (0 skipped)" in ingest.stdout
    status = run(user_env, "status")
    assert status.returncode == 0 and "Idle" in status.stdout and "worker-0" in status.stdout
    history = run(user_env, "history")
    assert "complete" in history.stdout and repo.resolve().as_uri() in history.stdout
    similar = run(user_env, "similar", str(repo), "shop/models/order.py", "-k", "2")
    assert similar.returncode == 0 and similar.stdout.count("(0.") == 2

    down = run(user_env, "down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert "stopped the head node" in down.stdout and "redis, postgres" in down.stdout
    assert _ours(roots) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/health", timeout=2)


def test_ingest_without_a_running_system_says_so(user_env: dict[str, str]) -> None:
    reply = run(user_env, "ingest", "github.com/a/b", timeout=60)
    assert reply.returncode == 1
    assert "neo-ray: error" in reply.stderr and "neo-ray up" in reply.stderr
