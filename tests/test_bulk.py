"""Bulk ingestion: `neo-ray bulk FILE` and scripts/bulk_ingest.py against the real system."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray
from ray_fixtures import TOKEN, System, wait_for

from neo_ray import bulk, raycluster
from neo_ray.procs import free_port

NEO = str(Path(sys.executable).with_name("neo-ray"))
REPO_ROOT = Path(__file__).resolve().parent.parent


def test_lines_comments_blanks_and_bad_lines(tmp_path: Path) -> None:
    lines = [
        "# repositories to ingest",
        "",
        "https://github.com/a/b   # trailing comment",
        "   ",
        "two words",
        str(tmp_path),
    ]
    entries = bulk.parse_entries(lines)
    assert [(e.line, e.source, e.status) for e in entries] == [
        (3, "https://github.com/a/b", "pending"),
        (5, "two words", "rejected"),
        (6, tmp_path.resolve().as_uri(), "pending"),
    ]
    assert bulk.exit_code(entries) == 1


def test_read_lines_from_stdin_and_a_missing_file(tmp_path: Path) -> None:
    import io

    assert bulk.read_lines("-", io.StringIO("a\nb\n")) == ["a", "b"]
    with pytest.raises(bulk.ConfigError, match="cannot read"):
        bulk.read_lines(str(tmp_path / "nope.txt"))


def _env(neo_system: System) -> dict[str, str]:
    return {**os.environ, "NEO_API_URL": neo_system.base, "PHAROS_ADMIN_TOKEN": TOKEN}


@pytest.mark.ray
def test_neo_ray_bulk_reports_each_outcome_and_fails_on_an_unreachable_repo(
    neo_system: System, tmp_path: Path
) -> None:
    good = [neo_system.sample_repo(f"bulk-ok{i}") for i in range(2)]
    # The gate takes it (the folder exists); git cannot clone it: its .git points nowhere.
    not_git = tmp_path / "unreachable"
    not_git.mkdir()
    (not_git / ".git").write_text("gitdir: /nonexistent/neo-ray-test\n")
    listing = tmp_path / "repos.txt"
    listing.write_text(
        f"# a comment\n{good[0]}\n\nhttps://example.invalid/x/y\n{not_git}\n{good[1]}\n"
    )
    done = subprocess.run(
        [NEO, "bulk", str(listing)],
        env=_env(neo_system),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 1, done.stderr
    rows = {line.split()[1]: line for line in done.stdout.splitlines()[1:] if "  " in line}
    for repo in good:
        assert " complete " in rows[repo.resolve().as_uri()]
    assert " failed " in rows[not_git.resolve().as_uri()]
    assert "git clone failed" in rows[not_git.resolve().as_uri()]
    assert " rejected " in rows["https://example.invalid/x/y"]  # host not allowed: 400
    assert "line 4: skipped" in done.stderr and "complete=2" in done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "job",
        "id",
        "repo",
        "status",
        "files",
        "seconds",
        "error",
    ]


@pytest.mark.ray
@pytest.mark.slow
def test_a_full_queue_is_waited_out_as_retry_after_says(neo_system: System) -> None:
    """With the bridge paused the queue (cap 3) fills; the run waits Retry-After, then ends."""
    bridge = neo_system.bridge()
    repos = [neo_system.sample_repo(f"bulk-cap{i}") for i in range(4)]
    posts: list[tuple[float, int, str]] = []

    def seen(reply: httpx.Response) -> None:
        if reply.request.method == "POST":
            posts.append(
                (time.monotonic(), reply.status_code, reply.headers.get("Retry-After", ""))
            )

    entries = bulk.parse_entries(str(r) for r in repos)
    ray.get(bridge.pause.remote())
    resumed = False
    try:
        with httpx.Client(
            base_url=neo_system.base, timeout=30, event_hooks={"response": [seen]}
        ) as http:
            run = bulk.BulkRun(http, TOKEN, entries)
            worker = threading.Thread(target=run.run, daemon=True)
            worker.start()
            wait_for(lambda: any(code == 429 for _, code, _ in posts), 60)
            ray.get(bridge.resume.remote())
            resumed = True
            worker.join(timeout=240)
            assert not worker.is_alive()
    finally:
        if not resumed:
            ray.get(bridge.resume.remote())
    assert [e.status for e in entries] == ["complete"] * 4
    first_429 = next(i for i, (_, code, _) in enumerate(posts) if code == 429)
    at, _, after = posts[first_429]
    assert int(after) > 0
    assert posts[first_429 + 1][0] - at >= int(after) - 0.1  # not one request sooner


@pytest.fixture
def job_head(tmp_path: Path) -> Iterator[str]:
    """A Ray head of its own, with the dashboard (the job server), for `ray job submit`.

    Its temp dir is its own, so nothing of the session's Ray or another cluster is shared;
    it is stopped by its pid only.
    """
    temp = tempfile.mkdtemp(prefix="nrj", dir="/tmp")  # short: Ray puts sockets there
    dashboard = free_port()
    bin_dir = str(Path(sys.executable).parent)
    # On 127.0.0.1 alone, as `up` starts it: the job's driver joins it there.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env |= raycluster.head_env(loopback=True)
    env.pop("RAY_ADDRESS", None)
    command = [
        *raycluster.head_command(free_port(), edge=False),
        "--include-dashboard=true",
        f"--temp-dir={temp}",
        "--num-cpus=1",
    ]
    command = [c for c in command if not c.startswith("--dashboard-port")]
    command.append(f"--dashboard-port={dashboard}")
    log = (tmp_path / "head.log").open("wb")
    head = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        # The job API wants the Ray token; an open port is enough to know it is up.
        wait_for(lambda: raycluster.port_open(f"127.0.0.1:{dashboard}"), 180, every_s=1.0)
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # whatever of its session is left
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _submit_job(
    address: str, listing: Path, neo_system: System
) -> subprocess.CompletedProcess[str]:
    runtime_env = {"env_vars": {"NEO_API_URL": neo_system.base, "PHAROS_ADMIN_TOKEN": TOKEN}}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    return subprocess.run(
        [
            ray_cli,
            "job",
            "submit",
            f"--address={address}",
            "--working-dir",
            ".",
            f"--runtime-env-json={json.dumps(runtime_env)}",
            "--",
            "python",
            "scripts/bulk_ingest.py",
            "--no-progress",
            str(listing),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_exits_0_when_all_complete_and_1_with_an_unreachable_repo(
    neo_system: System, job_head: str, tmp_path: Path
) -> None:
    good = [neo_system.sample_repo(f"job-ok{i}") for i in range(2)]
    listing = tmp_path / "repos.txt"
    listing.write_text("".join(f"{r}\n" for r in good))
    ok = _submit_job(job_head, listing, neo_system)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "total complete 2\n" in ok.stdout and "succeeded" in ok.stdout.lower()

    broken = tmp_path / "unreachable"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent/neo-ray-test\n")
    listing.write_text(f"{good[0]}\n{broken}\n")
    bad = _submit_job(job_head, listing, neo_system)
    assert bad.returncode != 0, bad.stdout[-3000:]
    assert "total complete 1, failed 1\n" in bad.stdout and "git clone failed" in bad.stdout


def test_an_unreachable_control_plane_is_a_clear_error_at_once(tmp_path: Path) -> None:
    listing = tmp_path / "repos.txt"
    listing.write_text("https://github.com/a/b\n")
    env = {**os.environ, "NEO_API_URL": f"http://127.0.0.1:{free_port()}"}
    env["PHAROS_ADMIN_TOKEN"] = "x" * 32
    started = time.monotonic()
    done = subprocess.run(
        [NEO, "bulk", "--no-progress", str(listing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "cannot reach the control plane" in done.stderr
    assert time.monotonic() - started < 60
