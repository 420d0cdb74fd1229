"""A whole neo-ray system whose planes talk only through the Upstash REST protocol; counts commands.

Run as a script (its own local Ray, so it never meets the test session's actors):

    python tests/upstash_system.py REDIS_URL DATABASE_URL WORKDIR [--idle-settle-s S --idle-s S]
        [--idle-poll-max-s S --idle-heartbeat-s S]

It starts the REST test server (upstash_server.py) in front of REDIS_URL, deploys the local-mode
system with only UPSTASH_REDIS_REST_URL/TOKEN as its queue (no NEO_REDIS_URL anywhere), submits
one sample repository over HTTP, waits for its record (reading Redis directly, so the waiting
costs no REST commands), then optionally lets the system idle, and prints one JSON line: the
job, and the REST commands of each phase (deploy, job, idle window).
"""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import ray
import redis
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from upstash_server import running

from neo_ray import system
from neo_ray.config import Settings
from neo_ray.pipeline.sample import write_sample_repo
from neo_ray.procs import free_port

API = "/api/v1/ingestion"
ADMIN = "upstash-e2e-admin-" + uuid.uuid4().hex
REST_TOKEN = "upstash-e2e-rest-" + uuid.uuid4().hex


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("database_url")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--idle-settle-s", type=float, default=0.0)
    parser.add_argument("--idle-s", type=float, default=0.0)
    parser.add_argument("--idle-poll-max-s", type=float, default=60.0)
    parser.add_argument("--idle-heartbeat-s", type=float, default=60.0)
    args = parser.parse_args()
    raw = redis.Redis.from_url(args.redis_url, decode_responses=True)
    with running(args.redis_url, REST_TOKEN) as rest:
        settings = Settings(
            data_dir=args.workdir / "data",
            upstash_redis_rest_url=rest.url,
            upstash_redis_rest_token=SecretStr(REST_TOKEN),
            redis_prefix=f"e2e-{uuid.uuid4().hex[:8]}:",
            database_url=args.database_url,
            admin_token=SecretStr(ADMIN),
            allow_local_repos=True,
            local_repos_root=args.workdir,
            http_port=free_port(),
            idle_poll_max_s=args.idle_poll_max_s,
            idle_heartbeat_s=args.idle_heartbeat_s,
            epochs=3,
        )
        assert settings.redis_url is None
        ray.init(
            address="local",
            num_cpus=2,
            resources={"edge": 1},
            namespace="neo",
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        try:
            report = _run(settings, rest, raw, args)
        finally:
            system.teardown(shutdown_serve=True)
            ray.shutdown()
    print(json.dumps(report), flush=True)


def _run(settings: Settings, rest: Any, raw: redis.Redis, args: argparse.Namespace) -> Any:
    started = time.monotonic()
    system.deploy(settings)
    base = system.api_base(settings)
    system.wait_healthy(base, timeout_s=180)
    http = httpx.Client(base_url=base, timeout=30.0)
    _wait(lambda: http.get(f"{API}/worker/status").json()["workers"], 180, "a worker")
    deploy = rest.snapshot()
    deploy_s = time.monotonic() - started

    repo = write_sample_repo(args.workdir / "repo")
    before = rest.snapshot()
    t0 = time.monotonic()
    reply = http.post(f"{API}/ingest/{quote(str(repo), safe='')}", headers=_auth())
    if reply.status_code != 202:
        raise SystemExit(f"ingest refused: {reply.status_code} {reply.text}")
    job_id = reply.json()["job_id"]
    job_key = f"{settings.redis_prefix}job:{job_id}"
    processing = f"{settings.redis_prefix}ingest_processing"
    history_key = f"{settings.redis_prefix}job_history"

    def settled() -> str | None:
        # Done when the record is in history and the worker acknowledged the task.
        state = raw.hget(job_key, "state")
        if state not in ("complete", "failed", "skipped") or raw.llen(processing):
            return None
        return str(state) if job_id in str(raw.lrange(history_key, 0, 0)) else None

    state = _wait(settled, 300, "the job")
    job_s = time.monotonic() - t0
    job_cmds = rest.snapshot() - before
    record = http.get(f"{API}/jobs/{job_id}").json()
    history = http.get(f"{API}/jobs/history").json()

    idle: Counter[str] = Counter()
    if args.idle_s > 0:
        time.sleep(args.idle_settle_s)
        start = rest.snapshot()
        time.sleep(args.idle_s)
        idle = rest.snapshot() - start
    idle_total = sum(idle.values())
    return {
        "state": state,
        "job": record,
        "history_ids": [j.get("job_id") for j in history["jobs"]],
        "deploy_s": round(deploy_s, 1),
        "deploy_commands": sum(deploy.values()),
        "job_s": round(job_s, 1),
        "job_commands": sum(job_cmds.values()),
        "job_by_command": dict(job_cmds),
        "idle_s": args.idle_s,
        "idle_commands": idle_total,
        "idle_by_command": dict(idle),
        "idle_per_day": round(idle_total * 86_400 / args.idle_s) if args.idle_s else None,
    }


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


if __name__ == "__main__":
    main()
