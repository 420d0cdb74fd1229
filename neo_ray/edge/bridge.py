"""QueueBridge: moves tasks from Redis to idle GraphWorkers, and recovers what workers drop.

Its loop starts in `__init__`, so a restarted bridge (max_restarts=-1) resumes by itself. It
claims a task only when a worker is idle (claim.lua: one job per repository at a time, copies
of ended jobs dropped, the claim stamped with this cluster's id), skips expired tasks,
requeues the task of a worker that died, and dead-letters a task that failed `max_attempts`
times. Workers are looked up by name; the bridge also keeps one worker per GPU (or
`workers_per_node` per edge node without GPUs) alive as nodes join.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from neo_ray.config import Settings
from neo_ray.edge.facades import History
from neo_ray.edge.metrics import edge_metrics
from neo_ray.errors import ActorError, ConfigError, QueueError, QueueUnavailable
from neo_ray.models import JobRecord, JobState, Task, failed_record, skipped_record
from neo_ray.names import NAMESPACE, WORKER_PREFIX
from neo_ray.retry import Backoff
from neo_ray.stores.queue import Broker
from neo_ray.timeutil import parse_utc

_SCAN_EVERY_S = 2.0
_CLAIM_WAIT_S = 0.5
_INFO_TIMEOUT_S = 2.0
# While Redis is away the loop waits 0.1 s, 0.2 s, ... up to 5 s between tries, for ever.
_REDIS_BACKOFF = Backoff(first_s=0.1, cap_s=5.0)

log = logging.getLogger(__name__)


@dataclass
class _Assignment:
    """A task handed to a worker; `ref` is None for a task adopted after a bridge restart."""

    task: Task
    worker: str
    ref: Any = None
    since: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class WorkerPlan:
    """One GraphWorker the cluster should run: its name, node and actor options."""

    name: str
    node_id: str
    options: dict[str, Any]


def plan_workers(nodes: list[dict[str, Any]], settings: Settings) -> list[WorkerPlan]:
    """The GraphWorkers the live nodes call for, each pinned to its node.

    Nodes carrying the custom resource `edge` take workers (every live node does when none
    carries it: a one-machine cluster). One per GPU on a node with GPUs (`num_gpus=1`),
    else `workers_per_node` on the CPU (`num_cpus=1`). Names carry the node id, so a node's
    workers are told apart from every other node's, in this cluster and in others.
    """
    alive = [n for n in nodes if n.get("Alive")]
    edge = [n for n in alive if n.get("Resources", {}).get("edge")] or alive
    plans = []
    for node in edge:
        node_id = str(node["NodeID"])
        gpus = int(node.get("Resources", {}).get("GPU", 0))
        options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        for i in range(gpus or settings.workers_per_node):
            plans.append(WorkerPlan(f"{WORKER_PREFIX}{node_id[:12]}-{i}", node_id, options))
    return plans


def cluster_identity(nodes: list[dict[str, Any]]) -> str:
    """This Ray cluster's identity in shared Redis: its head node's id (stable over restarts)."""
    for node in nodes:
        if "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])[:16]
    return str(min(str(n["NodeID"]) for n in nodes))[:16]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class QueueBridge:
    """The only consumer of `ingest_queue`."""

    def __init__(self, settings: Settings) -> None:
        if not settings.has_queue:
            raise ConfigError("QueueBridge needs a Redis URL")
        self._settings = settings
        self._broker = Broker.from_settings(settings)
        self._history = History()
        self._inflight: dict[str, _Assignment] = {}
        self._workers: dict[str, Any] = {}
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._claiming = threading.Lock()
        self._dispatched = 0
        self._cluster_id = cluster_identity(ray.nodes())
        self._thread = threading.Thread(target=self._loop, name="bridge", daemon=True)
        self._thread.start()

    # --- the loop ---------------------------------------------------------------------
    def _loop(self) -> None:
        next_scan = 0.0
        failures = 0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_scan:
                    self._broker.announce_cluster(self._cluster_id, self._settings.heartbeat_ttl_s)
                    self._ensure_workers()
                    self._reclaim_silent()
                    self._recover()
                    self._measure()
                    next_scan = time.monotonic() + self._scan_every()
                self._step()
                failures = 0
            except QueueUnavailable:
                failures += 1
                pause = _REDIS_BACKOFF.delay(failures)
                log.warning("Redis unreachable; retrying in %.1f s", pause)
                self._stop.wait(pause)
            except Exception:
                log.exception("bridge step failed")
                self._stop.wait(1.0)

    def _scan_every(self) -> float:
        """Every 2 s; over a budgeted transport (Upstash REST) an idle bridge scans half as
        often as it polls the queue, so an idle day stays within the command quota."""
        return max(_SCAN_EVERY_S, 2 * self._broker.idle_pause_s)

    def _step(self) -> None:
        self._collect(timeout=0.0)
        if self._paused.is_set():
            self._collect(timeout=0.1)
            return
        idle = self._idle_workers()
        if not idle:
            self._collect(timeout=0.1)
            return
        with self._claiming:
            if self._paused.is_set():
                return
            task = self._broker.claim(timeout_s=_CLAIM_WAIT_S, owner=self._cluster_id)
            if task is None:
                return
            if task.attempts == 0 and task.expired():  # a retry is not stale: it ran already
                self._skip(task, f"expired: waited longer than its TTL of {task.ttl_seconds} s")
                return
            self._dispatch(task, idle[0])

    def _dispatch(self, task: Task, worker: str) -> None:
        handle = self._workers[worker]
        self._broker.set_job_state(task.job_id, worker_id=worker, cluster_id=self._cluster_id)
        ref = handle.run.remote(task)
        self._inflight[task.job_id] = _Assignment(task, worker, ref)
        self._dispatched += 1

    def _skip(self, task: Task, reason: str) -> None:
        self._record(skipped_record(task, reason))
        self._broker.ack(task)

    def _record(self, record: JobRecord) -> None:
        """Hand a record to the history actor; when it cannot take it, park it in Redis for
        the actor to write later (the record is never lost with the call)."""
        try:
            self._history.record(record)
        except ActorError as exc:
            log.warning("history did not take job %s (%s); parked", record.job_id, exc)
            try:
                # What the history actor would have done in Redis (one step, safe to
                # repeat), then PostgreSQL's share parked for it to write later (not for a
                # job that already ended with another record).
                if self._broker.finish_job(record.job_id, record):
                    self._broker.park_record(record)
            except QueueError:
                log.exception("job %s: record neither recorded nor parked", record.job_id)

    # --- outcomes ---------------------------------------------------------------------
    def _collect(self, timeout: float) -> None:
        """Settle the assignments whose worker call has returned (or raised)."""
        by_ref = {a.ref: job_id for job_id, a in self._inflight.items() if a.ref is not None}
        if not by_ref:
            if timeout:
                self._stop.wait(timeout)
            return
        done, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        for ref in done:
            self._settle(self._inflight.pop(by_ref[ref]))

    def _settle(self, a: _Assignment) -> None:
        try:
            outcome = ray.get(a.ref)  # ready (ray.wait returned it): no wait here
        except RayActorError as exc:
            self._retry(a.task, f"worker {a.worker} died: {type(exc).__name__}")
            return
        except RayError as exc:
            self._retry(a.task, f"worker {a.worker} failed: {exc}")
            return
        if outcome.retry:
            self._retry(a.task, outcome.error or "transient failure")

    def _retry(self, task: Task, error: str) -> None:
        """Requeue a task that a worker dropped, or dead-letter it after max_attempts."""
        if task.attempts + 1 < self._settings.max_attempts:
            log.warning("requeueing job %s (attempt %d): %s", task.job_id, task.attempts + 1, error)
            self._broker.requeue(task)
            return
        record = failed_record(task, error, 0.0, worker_id=None)
        # One step in Redis: dead letter, final state, dedupe key freed, history entry.
        if self._broker.dead_letter(task, error, record):
            log.error(
                "job %s failed %d times; dead-lettered: %s", task.job_id, task.attempts + 1, error
            )
            self._record(record)  # PostgreSQL too (Redis already holds it)

    # --- workers ----------------------------------------------------------------------
    def _ensure_workers(self) -> None:
        """Start the workers that joined nodes call for; drop those whose node is gone."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from neo_ray.edge.worker import GraphWorker

        plans = plan_workers(ray.nodes(), self._settings)
        wanted = {plan.name for plan in plans}
        for name in [n for n in self._workers if n not in wanted]:
            self._drop_worker(name, "its node left the cluster")
        for plan in plans:
            if plan.name in self._workers:
                continue
            # Pinned to its node: when the node goes, so does the worker (no restart elsewhere
            # that would take a place another node's worker was planned for).
            here = NodeAffinitySchedulingStrategy(plan.node_id, soft=False)
            self._workers[plan.name] = GraphWorker.options(  # type: ignore[attr-defined]
                name=plan.name,
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                scheduling_strategy=here,
                **plan.options,
            ).remote(self._settings, plan.name)
            log.info("started worker %s on node %s", plan.name, plan.node_id[:12])

    def _drop_worker(self, name: str, why: str) -> None:
        """Forget a worker, put its task back in the queue, and make sure it cannot return."""
        handle = self._workers.pop(name)
        for job_id, a in list(self._inflight.items()):
            if a.worker == name:
                del self._inflight[job_id]
                self._retry(a.task, f"worker {name}: {why}")
        with contextlib.suppress(RayError):  # already dead with its node
            ray.kill(handle, no_restart=True)

    def _reclaim_silent(self) -> None:
        """Requeue tasks whose worker stopped heartbeating for longer than the TTL.

        Ray notices a vanished node late (its health checks); the heartbeat TTL bounds how
        long a task can sit with a worker nobody hears from. Should that worker still finish,
        its record is refused (a job ends once: Broker.finish_job).
        """
        ttl = self._settings.heartbeat_ttl_s
        beating = {hb.worker_id for hb in self._broker.workers()}
        now = time.monotonic()
        for a in list(self._inflight.values()):
            if a.worker not in beating and now - a.since > ttl and a.worker in self._workers:
                self._drop_worker(a.worker, f"no heartbeat for {ttl} s")

    def _idle_workers(self) -> list[str]:
        busy = {a.worker for a in self._inflight.values()}
        idle = []
        for name, handle in self._workers.items():
            if name in busy:
                continue
            try:
                info = ray.get(handle.info.remote(), timeout=_INFO_TIMEOUT_S)
            except (GetTimeoutError, RayError):
                continue  # starting, restarting or gone: not idle
            if info.get("job_id") is None:
                idle.append(name)
        return idle

    def _recover(self) -> None:
        """Adopt or requeue tasks in `ingest_processing` that no live call of ours covers.

        After a bridge restart the tasks its predecessor handed out are still there: a task
        whose worker still holds it is adopted (tracked without a call to wait on) and checked
        again on every scan; one whose worker is gone, or moved on, is requeued. A worker that
        does not answer in time is left alone until the next scan.
        """
        processing = {t.job_id: t for t in self._broker.processing()}
        for job_id, a in list(self._inflight.items()):
            if a.ref is not None:
                continue
            if job_id not in processing:
                del self._inflight[job_id]  # finished: its worker acknowledged it
            elif self._holds(a.worker, job_id) is False:
                del self._inflight[job_id]
                self._retry(a.task, f"worker {a.worker} dropped it")
        for job_id, task in processing.items():
            if job_id in self._inflight:
                continue
            job = self._broker.get_job(job_id)
            if job is not None and not self._ours(job):
                continue  # claimed by another edge cluster that is still alive
            worker = job.worker_id or "" if job is not None else ""
            held = self._holds(worker, job_id) if worker in self._workers else False
            if held is None:
                continue
            if held:
                self._inflight[job_id] = _Assignment(task, worker)
            else:
                self._retry(task, "its worker is gone (recovered by the bridge)")

    def _ours(self, job: JobState) -> bool:
        """Whether this bridge answers for a claimed job: its own claim, or an orphan.

        Several edge clusters may share one queue; each stamps its claims with its identity
        (in the claim itself) and renews its liveness key. A claim of a cluster whose key
        lapsed is reclaimed (answers_for).
        """
        return answers_for(job, self._cluster_id, self._broker, self._settings.heartbeat_ttl_s)

    def _holds(self, worker: str, job_id: str) -> bool | None:
        """Whether `worker` runs `job_id`; None when it cannot tell (busy, restarting)."""
        try:
            info = ray.get(self._workers[worker].info.remote(), timeout=_INFO_TIMEOUT_S)
        except GetTimeoutError:
            return None
        except RayError:
            return False  # the actor is dead
        return bool(info.get("job_id") == job_id)

    def _measure(self) -> None:
        b = self._broker
        edge_metrics().queue(b.queue_size(), b.processing_count(), b.dead_size())

    # --- introspection ----------------------------------------------------------------
    def pause(self) -> None:
        """Stop handing out tasks (running ones finish); the queue fills up meanwhile.

        Returns once no claim is in progress, so nothing leaves the queue after it.
        """
        self._paused.set()
        with self._claiming:
            pass

    def resume(self) -> None:
        self._paused.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "cluster_id": self._cluster_id,
            "paused": self._paused.is_set(),
            "workers": sorted(self._workers.copy()),
            "inflight": sorted(self._inflight.copy()),
            "dispatched": self._dispatched,
            "alive": self._thread.is_alive(),
        }

    def ping(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> None:
        """The system goes down: stop claiming, and withdraw this cluster's liveness key, so
        that the next bridge (the next `up`, another cluster) takes over its claimed jobs at
        once rather than one heartbeat TTL later. Its workers are killed next."""
        self._stop.set()
        self._thread.join(timeout=_CLAIM_WAIT_S + 10)
        self._broker.forget_cluster(self._cluster_id)


def answers_for(job: JobState, cluster_id: str, broker: Broker, ttl_s: float) -> bool:
    """Whether the bridge of edge cluster `cluster_id` answers for a claimed job.

    Its own claim, yes; another cluster's, only once that cluster's liveness key lapsed. A
    claim without an owner (made without one) is left alone for one TTL after it was made
    (`claimed_at`, stamped by the claim itself; `updated_at` for claims older than that
    stamp), never aged from when the job was queued.
    """
    owner = job.cluster_id
    if owner == cluster_id:
        return True
    if owner is not None:
        return not broker.cluster_alive(owner)
    return _age_s(job.claimed_at or job.updated_at) > ttl_s


def _age_s(stamp: str | None) -> float:
    """Seconds since an ISO-8601 UTC stamp; infinite when there is none or it is unreadable."""
    if not stamp:
        return float("inf")
    try:
        return (datetime.now(UTC) - parse_utc(stamp)).total_seconds()
    except ValueError:
        return float("inf")
