"""Repositories per hour with 1, 2 and 4 simulated edge nodes, and recovery after a node dies.

Run from the repository root: `python -m bench.bench_scale` (or `python -m bench scale`).
Each row runs tests/cluster_scenario.py in a process of its own: a `ray.cluster_utils`
cluster on this machine (a head without `edge`, plus N one-CPU edge nodes), embedded Redis and
PostgreSQL, and the same fixed set of tiny three-file repositories. The peer is the seed's
figure, about 15 repositories an hour on one GPU laptop. Scaling efficiency is the rate with
N nodes over N times the rate with one. Every node shares this machine's cores, so past the
core count more nodes cannot add throughput: the table measures the bridge's scheduling and
its overhead, not a real multi-machine cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from neo_ray import raycluster
from neo_ray.stores import embedded

SCENARIO = Path(__file__).resolve().parent.parent / "tests" / "cluster_scenario.py"
JOBS = int(os.environ.get("BENCH_SCALE_JOBS", "16"))
NODES = (1, 2, 4)
SEED_REPOS_PER_HOUR = 15.0


def _scenario(env: dict[str, str], *args: str) -> dict[str, Any]:
    ray_tmp = tempfile.mkdtemp(prefix="nrb", dir="/tmp")  # cluster_utils records its address
    try:
        done = subprocess.run(
            [sys.executable, str(SCENARIO), *args],
            env={**env, "RAY_TMPDIR": ray_tmp},
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run() -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="neo-ray-bench-scale-"))
    raycluster.use_auth_token(root)
    try:
        env = {
            **os.environ,
            "NEO_REDIS_URL": embedded.start_redis(root),
            "NEO_DATABASE_URL": embedded.start_postgres(root),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        env.pop("RAY_ADDRESS", None)
        rows = [_scenario(env, "--jobs", str(JOBS), "--edge", str(n)) for n in NODES]
        killed = _scenario(env, "--jobs", str(JOBS), "--edge", "2", "--kill-at", "3")
    finally:
        embedded.stop_all(root)
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0]["repos_per_hour"]
    for r in rows:
        r["efficiency"] = r["repos_per_hour"] / (base * r["edge_nodes"])
        r["× seed"] = r["repos_per_hour"] / SEED_REPOS_PER_HOUR
    killed["efficiency"] = float("nan")
    killed["× seed"] = killed["repos_per_hour"] / SEED_REPOS_PER_HOUR
    return [*rows, killed]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'edge nodes':<24} {'jobs':>5} {'wall s':>8} {'repos/h':>9} {'eff.':>6} {'× seed':>8}")
    for r in rows:
        label = f"{r['edge_nodes']}" + (" (one killed)" if "recovery_s" in r else "")
        print(
            f"{label:<24} {r['jobs']:>5} {r['wall_s']:>8.1f} {r['repos_per_hour']:>9.0f}"
            f" {r['efficiency']:>6.2f} {r['× seed']:>8.0f}"
        )
        if "recovery_s" in r:
            print(f"  recovery: the killed node's task left it after {r['recovery_s']:.2f} s")
        ok = r["redis_records"] == [1] * r["jobs"] and r["complete"] == r["jobs"]
        print(f"  every job completed once: {ok}")


if __name__ == "__main__":
    print_table(run())
