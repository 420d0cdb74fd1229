"""The worker pool follows the cluster: edge nodes join and leave during a run of tiny jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("cluster_scenario.py")


def run_scenario(redis_url: str, database_url: str, *args: str, timeout: float = 900) -> dict:
    # A Ray temp dir of its own: cluster_utils records its address there, where a bare
    # ray.init() of anyone else on the machine would otherwise find it.
    ray_tmp = tempfile.mkdtemp(prefix="nrs", dir="/tmp")
    env = {**os.environ, "NEO_REDIS_URL": redis_url, "NEO_DATABASE_URL": database_url}
    env |= {"RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            [sys.executable, str(SCENARIO), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_nodes_join_and_leave_and_every_job_completes_exactly_once(
    redis_url: str, database_url: str
) -> None:
    result = run_scenario(
        redis_url,
        database_url,
        "--jobs",
        "30",
        "--edge",
        "2",
        "--gpu-edge",
        "--join-at",
        "4",
        "--kill-at",
        "10",
        # Jobs long enough (about a second) that a node is caught holding one at the kill,
        # however quiet the machine.
        "--extra-files",
        "600",
    )
    assert not result.get("timed_out"), result
    # A node that joins gets its worker started within 5 s.
    assert result["join"]["started_s"] <= 5.0, result
    assert "beating_s" in result["join"], result
    # The removed node's running task was back within the heartbeat TTL (6 s here, plus a
    # bridge scan of 2 s).
    assert result.get("recovery_s", 1e9) <= 6 + 2.5, result
    # Every job completed, and each has exactly one completion record in Redis history and
    # one row in PostgreSQL.
    assert result["finished"] == 30 and result["complete"] == 30, result
    assert result["redis_records"] == [1] * 30, result
    assert result["pg_records"] == [1] * 30, result
    assert result["dead"] == 0, result


@pytest.mark.slow
def test_two_edge_clusters_on_one_queue_never_run_a_job_to_completion_twice(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    prefix = f"two-{uuid.uuid4().hex[:8]}:"
    stop = tmp_path / "stop"
    ray_tmp = tempfile.mkdtemp(prefix="nrt", dir="/tmp")
    env = {**os.environ, "NEO_REDIS_URL": redis_url, "NEO_DATABASE_URL": database_url}
    env |= {"RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "SCENARIO_PREFIX": prefix}
    env.pop("RAY_ADDRESS", None)
    other = subprocess.Popen(
        [sys.executable, str(SCENARIO), "--jobs", "0", "--edge", "1", "--serve-until", str(stop)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        os.environ["SCENARIO_PREFIX"] = prefix
        try:
            ours = run_scenario(redis_url, database_url, "--jobs", "20", "--edge", "1")
        finally:
            del os.environ["SCENARIO_PREFIX"]
        stop.touch()
        out, _ = other.communicate(timeout=300)
        theirs = json.loads(out.strip().splitlines()[-1])
    finally:
        if other.poll() is None:
            other.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert ours["finished"] == 20 and ours["complete"] == 20, ours
    assert ours["redis_records"] == [1] * 20 and ours["pg_records"] == [1] * 20, ours
    # Both clusters took work, and no job was handed out twice (none failed, so each
    # hand-out is one run): 20 jobs, 20 runs in all.
    assert ours["dispatched"] > 0 and theirs["dispatched"] > 0, (ours, theirs)
    assert ours["dispatched"] + theirs["dispatched"] == 20, (ours, theirs)


@pytest.mark.slow
def test_total_queue_with_workers_sigkilled_at_random_loses_nothing(
    redis_url: str, database_url: str
) -> None:
    """In the manner of Jepsen's total-queue checker: every job submitted is completed
    exactly once (lost = 0, duplicated = 0), though jobs ran more than once."""
    os.environ["SCENARIO_MAX_ATTEMPTS"] = "20"  # random kills may hit one job repeatedly
    try:
        result = run_scenario(
            redis_url,
            database_url,
            "--jobs",
            "200",
            "--edge",
            "2",
            # A kill every ~5 s: each one costs its worker a restart (seconds, with torch),
            # so kills every 2 s kept the workers mostly restarting and the run long.
            "--sigkill-every",
            "5",
            # Jobs of a fraction of a second, so that the run lasts long enough for the kills.
            "--extra-files",
            "100",
            timeout=1800,
        )
    finally:
        del os.environ["SCENARIO_MAX_ATTEMPTS"]
    records = result["redis_records"]
    lost = sum(1 for n in records if n == 0)
    duplicated = sum(1 for n in records if n > 1)
    assert (lost, duplicated) == (0, 0), result
    assert result["pg_records"] == [1] * 200 and result["complete"] == 200, result
    assert result["sigkills"] >= 5, result  # the check saw real kills
    assert result["recovered"] >= 1, result  # and some jobs recovered from them
    assert result["dead"] == 0, result
