"""An edge cluster on `ray.cluster_utils.Cluster` whose nodes join and leave while jobs run.

Run as its own process (a second Ray cluster cannot share the test session's driver):

    python tests/cluster_scenario.py --jobs 30 --edge 2 --gpu-edge --join-at 5 --kill-at 12

Needs NEO_REDIS_URL and NEO_DATABASE_URL. The head carries no `edge` resource, so every
GraphWorker runs on an edge node. Prints one JSON object on its last line: how many jobs
completed, how many completion records each job has in Redis history and in PostgreSQL, how
long a joined node waited for its workers, and how long a removed node's task waited before
it was back in the queue. bench/bench_scale.py runs it for the scaling table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from neo_ray import system
from neo_ray.config import Mode, Settings
from neo_ray.models import JobRecord, JobStatus, Task, utcnow_iso
from neo_ray.stores.queue import Broker

FINAL = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.SKIPPED)


def tiny_repo(root: Path, extra_files: int = 0) -> Path:
    """A committed Python repository: a → b → c, and `extra_files` more modules in a chain
    (a job long enough to be caught running, where a test needs one)."""
    root.mkdir(parents=True)
    (root / "a.py").write_text("import b\n")
    (root / "b.py").write_text("import c\n")
    (root / "c.py").write_text("X = 1\n")
    for i in range(extra_files):
        (root / f"m{i}.py").write_text(f"import {'m' + str(i - 1) if i else 'a'}\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=root, env=env, check=True)
    return root


def settings_for(data_dir: Path) -> Settings:
    return Settings(
        mode=Mode.EDGE,
        data_dir=data_dir,
        redis_url=os.environ["NEO_REDIS_URL"],
        redis_prefix=os.environ.get("SCENARIO_PREFIX") or f"scale-{uuid.uuid4().hex[:8]}:",
        database_url=os.environ["NEO_DATABASE_URL"],
        allow_local_repos=True,
        # Every scenario's repositories lie in the temp dir: a second cluster runs the jobs
        # the first one submitted.
        local_repos_root=Path(tempfile.gettempdir()),
        heartbeat_interval_s=0.5,
        heartbeat_ttl_s=int(os.environ.get("SCENARIO_TTL_S", "6")),
        max_attempts=int(os.environ.get("SCENARIO_MAX_ATTEMPTS", "5")),
        epochs=1,
        walks_per_node=2,
        walk_length=5,
        context_size=3,
        dim=16,
        parse_workers=0,
    )


def add_edge(cluster: Cluster, gpu: bool = False) -> Any:
    """An edge node: one CPU, and one (declared) GPU when asked."""
    return cluster.add_node(num_cpus=1, num_gpus=1 if gpu else 0, resources={"edge": 1})


def workers_of(bridge: Any, node_id: str) -> list[str]:
    return [w for w in ray.get(bridge.stats.remote())["workers"] if node_id[:12] in w]


def wait_workers(bridge: Any, broker: Broker, node_id: str, timeout_s: float) -> dict[str, float]:
    """Seconds until the bridge started a worker for the node, and until it heartbeat."""
    start = time.monotonic()
    found: dict[str, float] = {}
    while time.monotonic() - start < timeout_s and len(found) < 2:
        if "started_s" not in found and workers_of(bridge, node_id):
            found["started_s"] = round(time.monotonic() - start, 2)
        if "beating_s" not in found and any(
            node_id[:12] in hb.worker_id for hb in broker.workers()
        ):
            found["beating_s"] = round(time.monotonic() - start, 2)
        time.sleep(0.1)
    return found


def finished(broker: Broker, job_ids: list[str], ended: set[str] | None = None) -> int:
    """How many of the jobs have ended (`ended` remembers them, to ask Redis less)."""
    ended = set() if ended is None else ended
    for job_id in job_ids:
        if job_id not in ended:
            job = broker.get_job(job_id)
            if job is not None and job.state in FINAL:
                ended.add(job_id)
    return len(ended)


def kill_busy_node(cluster: Cluster, nodes: list[Any], broker: Broker) -> dict[str, Any] | None:
    """Remove an edge node whose worker holds a job; the job and the time of the kill.

    The job's hash names its worker from the moment of hand-off (heartbeats lag by up to an
    interval, and tiny jobs end within one).
    """
    for task in broker.processing():
        job = broker.get_job(task.job_id)
        worker = job.worker_id if job is not None and job.state not in FINAL else None
        for node in nodes:
            if worker and node.node_id[:12] in worker:
                nodes.remove(node)
                at = time.monotonic()  # recovery counts from the start of the removal
                cluster.remove_node(node, allow_graceful=False)
                return {"job_id": task.job_id, "worker": worker, "at": at}
    return None


def sigkill_a_worker(bridge: Any, rng: random.Random) -> bool:
    """SIGKILL the process of a random GraphWorker (Ray restarts it on its node)."""
    names = ray.get(bridge.stats.remote())["workers"]
    if not names:
        return False
    try:
        actor = ray.get_actor(rng.choice(names), namespace="neo")
        pid = int(ray.get(actor.info.remote(), timeout=2)["pid"])
        os.kill(pid, signal.SIGKILL)
    except (ray.exceptions.RayError, ValueError, ProcessLookupError):
        return False  # restarting or gone already: no kill this time
    return True


def returned(broker: Broker, kill: dict[str, Any]) -> bool:
    """Whether the killed node's job left it: queued again, or with another worker, or ended."""
    job = broker.get_job(kill["job_id"])
    return job is None or job.state in FINAL or job.worker_id != kill["worker"]


def watch_history(broker: Broker, seen: dict[str, JobRecord]) -> None:
    """Keep every record that passes through `job_history` (Redis keeps the newest 100)."""
    for record in broker.history(100):
        seen[record.model_dump_json()] = record


def count_records(
    broker: Broker, database_url: str, job_ids: list[str], seen: dict[str, JobRecord]
) -> dict[str, Any]:
    import psycopg

    watch_history(broker, seen)
    records = [r for r in seen.values() if r.job_id in set(job_ids)]
    in_redis = Counter(r.job_id for r in records)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT job_id::text, count(*), min(status) FROM ingestion_jobs"
            " WHERE job_id::text = ANY(%s) GROUP BY job_id",
            (job_ids,),
        ).fetchall()
    in_pg = {row[0]: row[1] for row in rows}
    return {
        "redis_records": [in_redis.get(j, 0) for j in job_ids],
        "pg_records": [in_pg.get(j, 0) for j in job_ids],
        "complete": sum(1 for r in rows if r[2] == "complete"),
        # Jobs that ran more than once (a killed worker's) and still completed once.
        "recovered": sum(1 for r in records if (r.attempts or 1) > 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="neo-scale-"))
    settings = settings_for(work / "data")
    repos = [tiny_repo(work / f"r{i}", args.extra_files) for i in range(args.jobs)]
    # No dashboard: its fixed port (8265) may be taken by another Ray on the machine.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    nodes = [add_edge(cluster, gpu=args.gpu_edge and i == 0) for i in range(args.edge)]
    ray.init(address=cluster.address, namespace="neo", log_to_driver=False)
    out: dict[str, Any] = {"jobs": args.jobs, "edge_nodes": args.edge}
    try:
        # The edge plane alone on a one-machine cluster: its embedded store is shared by every
        # simulated node here, so the deployment check that edge mode has a Qdrant server
        # (right for real edge machines) does not apply.
        system._deploy_edge(settings, say=lambda what: None)
        bridge = ray.get_actor("bridge", namespace="neo")
        broker = Broker.connect(settings.redis_url or "", prefix=settings.redis_prefix)
        for node in nodes:
            wait_workers(bridge, broker, node.node_id, 300)
        if args.serve_until:
            return out | serve(bridge, Path(args.serve_until))
        start = time.monotonic()
        job_ids = [submit(broker, repo) for repo in repos]
        seen: dict[str, JobRecord] = {}
        out |= follow(args, cluster, nodes, bridge, broker, job_ids, seen)
        out["wall_s"] = round(time.monotonic() - start, 2)
        out["repos_per_hour"] = round(args.jobs / out["wall_s"] * 3600, 1)
        out |= count_records(broker, settings.database_url or "", job_ids, seen)
        out["dead"] = len(broker.dead())
        out["dispatched"] = ray.get(bridge.stats.remote())["dispatched"]
    finally:
        system.teardown()
        ray.shutdown()
        cluster.shutdown()
    return out


def serve(bridge: Any, stop: Path) -> dict[str, Any]:
    """A second edge cluster on the same queue: work until told to stop, then say how much."""
    print("ready", flush=True)
    while not stop.exists():
        time.sleep(0.2)
    stats = ray.get(bridge.stats.remote())
    return {"cluster_id": stats["cluster_id"], "dispatched": stats["dispatched"]}


def submit(broker: Broker, repo: Path) -> str:
    task = Task(
        job_id=str(uuid.uuid4()),
        repo_url=repo.resolve().as_uri(),
        submitted_at=utcnow_iso(),
        ttl_seconds=3600,
    )
    broker.enqueue(task, cap=100_000, dedupe_key=task.job_id)
    return task.job_id


def follow(
    args: argparse.Namespace,
    cluster: Cluster,
    nodes: list[Any],
    bridge: Any,
    broker: Broker,
    job_ids: list[str],
    seen: dict[str, JobRecord],
) -> dict[str, Any]:
    """Wait for every job, adding a node at `join_at` and killing a busy one at `kill_at`."""
    out: dict[str, Any] = {"sigkills": 0}
    kill: dict[str, Any] | None = None
    rng = random.Random(args.seed)
    next_sigkill = time.monotonic() + (args.sigkill_every or 0)
    deadline = time.monotonic() + args.timeout
    ended: set[str] = set()
    while (done := finished(broker, job_ids, ended)) < len(job_ids):
        watch_history(broker, seen)
        if time.monotonic() > deadline:
            out["timed_out"] = True
            break
        if args.join_at is not None and "join" not in out and done >= args.join_at:
            joined = add_edge(cluster)
            nodes.append(joined)
            out["join"] = wait_workers(bridge, broker, joined.node_id, 60)
        if args.kill_at is not None and kill is None and done >= args.kill_at:
            kill = kill_busy_node(cluster, nodes, broker)
        if kill is not None and "recovery_s" not in out and returned(broker, kill):
            out["recovery_s"] = round(time.monotonic() - kill["at"], 2)
            out["killed_job"] = kill["job_id"]
        if args.sigkill_every and time.monotonic() >= next_sigkill:
            out["sigkills"] += sigkill_a_worker(bridge, rng)
            next_sigkill = time.monotonic() + rng.uniform(0.3, 1.7) * args.sigkill_every
        time.sleep(0.2)
    out["finished"] = finished(broker, job_ids)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--edge", type=int, default=2, help="edge nodes at the start")
    parser.add_argument("--gpu-edge", action="store_true", help="the first edge node has a GPU")
    parser.add_argument("--join-at", type=int, default=None, help="add a node after N jobs")
    parser.add_argument("--kill-at", type=int, default=None, help="kill a busy node after N")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--sigkill-every",
        type=float,
        default=None,
        metavar="S",
        help="SIGKILL a random worker about every S seconds (0.3 S to 1.7 S apart)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kills")
    parser.add_argument(
        "--extra-files", type=int, default=0, help="more modules per repository (longer jobs)"
    )
    parser.add_argument(
        "--serve-until", metavar="FILE", help="submit nothing; work the queue until FILE exists"
    )
    result = run(parser.parse_args())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
