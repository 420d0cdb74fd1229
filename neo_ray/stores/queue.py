"""The Redis queue, job state, heartbeats and history, behind one sync facade (`Broker`).

Every Redis command neo-ray sends goes through here, over a small `Backend` seam: `RedisBackend`
(redis-py, `redis://` and `rediss://`) here, `UpstashBackend` (REST) in upstash.py. The seam
carries plain commands, Lua scripts (EVALSHA, falling back to EVAL; each in its own file under
stores/lua/, loaded once) and, where the transport has it, a blocking wait; the broker polls on
an adaptive schedule where it does not. Multi-key steps that must be atomic (the cap check with
the push, claims, requeue, dead-lettering, finishing a job, trimming history) are Lua scripts,
which Upstash runs too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any, Protocol, TypeVar

import redis
from pydantic import BaseModel, ValidationError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from neo_ray.config import Settings, mask_url
from neo_ray.errors import ConfigError, QueueError, QueueFull, QueueUnavailable
from neo_ray.models import (
    JobRecord,
    JobState,
    JobStatus,
    Progress,
    Task,
    WorkerHeartbeat,
    utcnow_iso,
)
from neo_ray.stores.keys import Keys

log = logging.getLogger(__name__)

Arg = str | int | float
M = TypeVar("M", bound=BaseModel)

# Finished job hashes stay readable through `/jobs/{id}` this long, then Redis drops them
# (PostgreSQL keeps the record for good).
FINISHED_JOB_TTL_S = 7 * 24 * 3600
# The dead-letter list is evidence for a human, not an archive: keep the newest ones.
DEAD_KEEP = 1000
# States in which a job blocks a duplicate submission of the same repository and ref.
ACTIVE_STATES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
# A claim token is remembered this long: far past any retry of the call that carried it.
CLAIM_TOKEN_TTL_S = 600
# A claim reads the queue from its consumer end this many tasks at a time, past the tasks
# that must wait (their repository busy) until one may run.
_CLAIM_SCAN_CHUNK = 100
# How long a blocking claim pauses when tasks are queued and none may run yet.
_BLOCKED_PAUSE_S = 0.1


# --------------------------------------------------------------------------- Lua scripts

_LUA = resources.files("neo_ray.stores") / "lua"


@dataclass(frozen=True)
class Script:
    """A Lua script (stores/lua/NAME.lua, after its shared fragments) and its SHA1.

    `idempotent` says whether running it twice with the same arguments has the effect of
    running it once: a transport may then repeat it when a reply was lost; otherwise never.
    """

    name: str
    source: str
    idempotent: bool
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    @classmethod
    def load(cls, name: str, *, includes: Sequence[str] = (), idempotent: bool) -> Script:
        """Read `lua/{name}.lua`, prefixed with the `lua/_{include}.lua` fragments it uses."""
        parts = [(_LUA / f"_{inc}.lua").read_text(encoding="utf-8") for inc in includes]
        parts.append((_LUA / f"{name}.lua").read_text(encoding="utf-8"))
        return cls(name, "\n".join(parts), idempotent)


# Loaded once, at import. A retried enqueue finds its own job through the dedupe key; a
# retried claim carries the same token; ack, requeue, finish and history find their job by
# id. A retried dead-letter would find nothing to move and report so, losing the failed
# record: it is never repeated blindly.
_ENQUEUE = Script.load("enqueue", idempotent=True)
_CLAIM = Script.load("claim", idempotent=True)
_ACK = Script.load("ack", includes=("remove_job",), idempotent=True)
_REQUEUE = Script.load("requeue", includes=("remove_job", "is_final"), idempotent=True)
_DEAD_LETTER = Script.load(
    "dead_letter",
    includes=("remove_job", "is_final", "finish", "push_history"),
    idempotent=False,
)
_FINISH = Script.load("finish", includes=("is_final", "finish", "push_history"), idempotent=True)
_PUSH_HISTORY = Script.load("push_history", includes=("push_history",), idempotent=True)
_MALFORMED = Script.load("malformed", idempotent=True)
_STATUS = Script.load("status", idempotent=True)
_UNPARK_METADATA = Script.load("unpark_metadata", idempotent=True)


# --------------------------------------------------------------------------- backends


class Backend(Protocol):
    """What the broker needs from a Redis transport; errors come out as neo_ray.errors.

    Replies are what the transport returns for the command: strings, integers, lists, None
    (redis-py may already have shaped some, e.g. HGETALL as a dict; the broker accepts both).
    """

    @property
    def blocking(self) -> bool:
        """Whether `blocking_wait` is available (Upstash REST has no blocking pops)."""
        ...

    def execute(self, *args: Arg) -> Any:
        """Run one command."""
        ...

    def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run a Lua script (EVALSHA, then EVAL when the server does not know it yet)."""
        ...

    def blocking_wait(self, key: str, timeout_s: float) -> bool:
        """Wait until the list `key` holds an item, moving nothing; False when none came
        within `timeout_s`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Translate redis-py's errors into neo_ray's queue errors."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise QueueError(f"Redis failed: {exc}") from exc


class RedisBackend:
    """redis-py over `redis://` or `rediss://` (also Upstash's TCP endpoint)."""

    blocking = True

    def __init__(self, client: redis.Redis, socket_timeout: float) -> None:
        self._client = client
        self._socket_timeout = socket_timeout

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 5.0) -> RedisBackend:
        # Few, quick retries: callers (an HTTP route, the bridge) must learn fast that
        # Redis is down, not after redis-py's default ten.
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2)
        with _translated():
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=retry,
            )
        return cls(client, socket_timeout)

    def execute(self, *args: Arg) -> Any:
        with _translated():
            return self._client.execute_command(*args)

    def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        with _translated():
            try:
                return self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return self._client.execute_command("EVAL", script.source, len(keys), *keys, *args)

    def blocking_wait(self, key: str, timeout_s: float) -> bool:
        # BLMOVE of a list's right end onto its right end: it wakes when an item comes, and
        # leaves the list as it was (one command, atomic).
        # A dedicated pool connection with a read deadline past the server-side timeout,
        # so a blocking pop longer than socket_timeout is not mistaken for a dead server.
        pool = self._client.connection_pool
        with _translated():
            conn = pool.get_connection()
            try:
                conn.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", timeout_s)
                reply = conn.read_response(timeout=timeout_s + self._socket_timeout)
            except BaseException:
                # A reply still in flight would desynchronise the connection.
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
        return reply is not None

    def close(self) -> None:
        with _translated():
            self._client.close()


# --------------------------------------------------------------------------- the broker


@dataclass
class IdleBackoff:
    """When to poll an empty queue next: the pause doubles while idle, resets on work."""

    floor_s: float = 0.25
    ceiling_s: float = 60.0
    pause_s: float = 0.25
    next_at: float = 0.0

    def idle(self, now: float) -> None:
        self.next_at = now + self.pause_s
        self.pause_s = min(self.pause_s * 2, max(self.ceiling_s, self.floor_s))

    def busy(self, now: float) -> None:
        self.pause_s = self.floor_s
        self.next_at = now


@dataclass(frozen=True)
class EnqueueResult:
    """What `Broker.enqueue` did: the task queued (or the one already queued for it)."""

    task: Task
    created: bool
    queue_position: int
    """1-based position from the consumer end; 0 once a worker holds it."""
    queue_size: int


@dataclass(frozen=True)
class QueueStatus:
    """What `GET /worker/status` shows: live workers by id, queue length, tasks handed out,
    tasks dead-lettered."""

    workers: list[WorkerHeartbeat]
    queue_size: int
    processing: int
    dead: int


def probe(url: str, *, timeout_s: float = 5.0) -> None:
    """Connect once and PING, one try within `timeout_s`; raise QueueUnavailable naming the
    setting (and whether the password was refused) when it fails. Never prints the URL's
    password."""
    from redis.backoff import NoBackoff

    where = mask_url(url)
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=0),  # one try: the limit given is the limit
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        auth = isinstance(exc, redis.AuthenticationError)
        reason = "refuses the password" if auth else "does not answer"
        raise QueueUnavailable(f"Redis at {where} {reason}; check NEO_REDIS_URL") from None
    finally:
        client.close()


def dedupe_key_for(repo_url: str, ref: str | None) -> str:
    """The dedupe key of a submission: a repository (normalised by the caller) at a ref."""
    return f"{repo_url}#{ref or ''}"


class Broker:
    """Queue, job state, heartbeats and history in Redis (ARCHITECTURE.md, "Redis keys")."""

    def __init__(self, backend: Backend, keys: Keys, *, idle_poll_max_s: float = 60.0) -> None:
        self._backend = backend
        self.keys = keys
        self._idle = IdleBackoff(ceiling_s=idle_poll_max_s)

    @classmethod
    def connect(cls, redis_url: str, *, prefix: str = "", socket_timeout: float = 5.0) -> Broker:
        """A broker over redis-py; connects lazily, so a down server shows on first use."""
        return cls(RedisBackend.from_url(redis_url, socket_timeout=socket_timeout), Keys(prefix))

    @classmethod
    def from_settings(cls, settings: Settings) -> Broker:
        """The broker the settings name: Upstash REST when its URL and token are set (in
        every mode: they replace the embedded Redis), else redis-py on NEO_REDIS_URL."""
        keys = Keys(settings.redis_prefix)
        rest = settings.upstash_rest()
        if rest is not None:
            from neo_ray.stores.upstash import UpstashBackend

            url, token = rest
            backend = UpstashBackend(url, token, timeout_s=settings.upstash_timeout_s)
            return cls(backend, keys, idle_poll_max_s=settings.idle_poll_max_s)
        if not settings.redis_url:
            raise ConfigError(
                "no queue configured: set NEO_REDIS_URL, or UPSTASH_REDIS_REST_URL and "
                "UPSTASH_REDIS_REST_TOKEN"
            )
        return cls.connect(settings.redis_url, prefix=settings.redis_prefix)

    @property
    def budgeted(self) -> bool:
        """Whether every command costs (Upstash REST): callers then poll and beat sparsely."""
        return not self._backend.blocking

    @property
    def idle_pause_s(self) -> float:
        """The current pause between polls of an empty queue (0 where claims block)."""
        return self._idle.pause_s if self.budgeted else 0.0

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    def ping(self) -> bool:
        """True when Redis answers; False (never an exception) when it does not."""
        try:
            self._backend.execute("PING")
        except QueueError:
            return False
        return True

    # ----------------------------------------------------------------- producing

    def enqueue(
        self, task: Task, *, cap: int, dedupe_key: str, retry_after_s: int = 30
    ) -> EnqueueResult:
        """Queue `task` unless its dedupe key has a job queued or running (then return that).

        The dedupe check, the cap check and the push are one Lua script, so concurrent
        producers never push past `cap`. Raises QueueFull at the cap.
        """
        task_json = task.model_dump_json()
        now = utcnow_iso()
        args: list[Arg] = [
            dedupe_key,
            cap,
            task_json,
            self.keys.job_prefix,
            task.job_id,
            task.repo_url,
            task.ref or "",
            task.submitted_at,
            task.attempts,
            now,
        ]
        keys = [self.keys.queue, self.keys.dedupe, self.keys.job(task.job_id)]
        code, raw, position, size = self._backend.run_script(_ENQUEUE, keys, args)
        if int(code) < 0:
            raise QueueFull(int(size), cap, retry_after_s)
        stored = task if int(code) == 1 else Task.model_validate_json(raw)
        return EnqueueResult(stored, int(code) == 1, int(position), int(size))

    # ----------------------------------------------------------------- consuming

    def claim(self, timeout_s: float, *, owner: str = "") -> Task | None:
        """Move the oldest task that may run now into `ingest_processing`, waiting up to
        `timeout_s` for one (claim_nowait says which may run).

        Waits on the server where the backend can block (BLMOVE of the queue onto itself,
        which moves nothing, wakes it when a task comes); polls with backoff otherwise.
        """
        if not self._backend.blocking:
            return self._poll_claim(timeout_s, owner)
        deadline = time.monotonic() + timeout_s
        while True:
            # BLMOVE's 0 means "forever"; a caller asking for no wait gets the shortest one.
            left = max(deadline - time.monotonic(), 0.01)
            if not self._backend.blocking_wait(self.keys.queue, left):
                return None
            task = self.claim_nowait(owner=owner)
            if task is not None:
                return task
            # Tasks are queued, and none may run now (their repositories are busy): look
            # again shortly rather than spin on a queue that is not empty.
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(left, _BLOCKED_PAUSE_S))

    def claim_nowait(self, *, owner: str = "") -> Task | None:
        """Move the oldest task that may run now into `ingest_processing`, if there is one.

        One step in Redis (claim.lua): a task whose repository has a job handed out and not
        ended waits in its place (one job per repository at a time: its refs share one
        corpus); a copy of a job that already ended is dropped; the job's hash is stamped with
        `claimed_at` and, given an `owner` (the edge cluster's id), `cluster_id`. The claim
        carries a fresh token, so a transport that repeats it after a lost reply gets the
        same task back instead of claiming a second one.
        """
        token = uuid.uuid4().hex
        keys = [self.keys.queue, self.keys.processing, self.keys.claim(token)]
        args: list[Arg] = [
            CLAIM_TOKEN_TTL_S,
            self.keys.job_prefix,
            utcnow_iso(),
            owner,
            _CLAIM_SCAN_CHUNK,
        ]
        raw = self._backend.run_script(_CLAIM, keys, args)
        return self._parse_claimed(raw or None)

    def _poll_claim(self, timeout_s: float, owner: str = "") -> Task | None:
        """Poll on the adaptive schedule: the pause doubles while the queue stays empty (up
        to `idle_poll_max_s`) and drops to its floor once a task comes. The schedule outlives
        the call, so a caller looping over short timeouts does not poll more often."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= self._idle.next_at:
                task = self.claim_nowait(owner=owner)
                if task is not None:
                    self._idle.busy(time.monotonic())
                    return task
                self._idle.idle(time.monotonic())
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(max(0.0, min(self._idle.next_at - time.monotonic(), left)))

    def _parse_claimed(self, raw: str | None) -> Task | None:
        if raw is None:
            return None
        try:
            return Task.model_validate_json(raw)
        except ValidationError as exc:
            # Unreadable JSON would block the hand-off forever: move it aside for a human.
            log.warning("dead-lettering a malformed task: %s", raw[:200])
            entry = {"task": raw, "error": f"malformed task: {exc}", "failed_at": utcnow_iso()}
            keys = [self.keys.processing, self.keys.dead]
            self._backend.run_script(_MALFORMED, keys, [raw, json.dumps(entry), DEAD_KEEP])
            return None

    def ack(self, task: Task) -> None:
        """Drop a finished task from `ingest_processing` (found by its job id)."""
        self._backend.run_script(_ACK, [self.keys.processing], [task.job_id])

    def requeue(self, task: Task) -> Task:
        """Put a task from `ingest_processing` back at the consumer end, attempts + 1.

        Returns the task as queued; when it was no longer in `ingest_processing` (someone
        handled it already), or its job is already finished, nothing is pushed and the task
        comes back unchanged.
        """
        again = task.model_copy(update={"attempts": task.attempts + 1})
        keys = [self.keys.processing, self.keys.queue, self.keys.job(task.job_id)]
        args: list[Arg] = [task.job_id, again.model_dump_json(), again.attempts, utcnow_iso()]
        moved = self._backend.run_script(_REQUEUE, keys, args)
        return again if int(moved) == 1 else task

    def dead_letter(
        self, task: Task, error: str, record: JobRecord | None = None, *, keep_history: int = 100
    ) -> bool:
        """Move a task from `ingest_processing` to `ingest_dead`, with the error.

        With its failed `record`, the same step also writes the job's final state, frees its
        dedupe key (a resubmission runs again) and puts the record in `job_history`.
        False when there was nothing to move: the task had left `ingest_processing`, or its
        job is already finished (then it is only cleared from `ingest_processing`).
        """
        now = utcnow_iso()
        entry = {"task": task.model_dump(), "error": error, "failed_at": now}
        keys = [
            self.keys.processing,
            self.keys.dead,
            self.keys.job(task.job_id),
            self.keys.dedupe,
            self.keys.history,
        ]
        raw = record.model_dump_json() if record is not None else ""
        args: list[Arg] = [task.job_id, json.dumps(entry), DEAD_KEEP, raw, now]
        args += [FINISHED_JOB_TTL_S, max(keep_history, 1)]
        return int(self._backend.run_script(_DEAD_LETTER, keys, args)) == 1

    def processing(self) -> list[Task]:
        """Tasks handed out and not yet acknowledged, most recently claimed first."""
        return self._tasks(self.keys.processing)

    def queued(self) -> list[Task]:
        """Waiting tasks, the next to be claimed first."""
        return list(reversed(self._tasks(self.keys.queue)))

    def queue_size(self) -> int:
        return int(self._backend.execute("LLEN", self.keys.queue))

    def dead_size(self) -> int:
        """How many tasks are in `ingest_dead`."""
        return int(self._backend.execute("LLEN", self.keys.dead) or 0)

    def processing_count(self) -> int:
        """How many tasks are handed out and not yet acknowledged."""
        return int(self._backend.execute("LLEN", self.keys.processing) or 0)

    def dead(self) -> list[dict[str, Any]]:
        """Dead-lettered entries `{task, error, failed_at}`, newest first."""
        raws = self._backend.execute("LRANGE", self.keys.dead, 0, -1) or []
        return [json.loads(raw) for raw in raws]

    def _tasks(self, key: str) -> list[Task]:
        raws = self._backend.execute("LRANGE", key, 0, -1) or []
        return _parse_all(Task, raws)

    # ----------------------------------------------------------------- job state

    def set_job_state(self, job_id: str, **fields: object) -> None:
        """Update fields of `job:{id}` (state, stage, progress, worker_id, ...); None deletes."""
        key = self.keys.job(job_id)
        dropped = [name for name, value in fields.items() if value is None]
        if dropped:
            self._backend.execute("HDEL", key, *dropped)
        pairs: list[Arg] = []
        for name, value in fields.items():
            if value is not None:
                pairs += [name, _encode_field(value)]
        self._backend.execute("HSET", key, *pairs, "updated_at", utcnow_iso())

    def report_progress(self, job_id: str, event: Progress) -> None:
        """Write a progress report into the job's hash (the one writer of stage and progress)."""
        self.set_job_state(
            job_id,
            stage=event.stage,
            progress=round(event.fraction, 4),
            done=event.done,
            total=event.total,
            message=event.message or f"{event.stage.value} {event.done}/{event.total}",
        )

    def get_job(self, job_id: str) -> JobState | None:
        """The job's hash as a JobState; None when there is no such job (or it expired)."""
        reply = self._backend.execute("HGETALL", self.keys.job(job_id))
        fields = _as_dict(reply)
        if not fields:
            return None
        return _job_state({"job_id": job_id, **{k: _decode_field(k, v) for k, v in fields.items()}})

    def finish_job(self, job_id: str, record: JobRecord, *, keep_history: int = 100) -> bool:
        """Write the final state and record, expire the hash later, free the dedupe key and
        put the record at the head of `job_history` (trimmed to `keep_history`): one step.

        False (nothing written) when the job already ended with another record: a job that
        ran twice completes once; the same record again (a retried call) is accepted and
        kept once in the history.
        """
        keys = [self.keys.job(job_id), self.keys.dedupe, self.keys.history]
        raw = record.model_dump_json()
        args: list[Arg] = [job_id, record.status.value, raw, utcnow_iso(), FINISHED_JOB_TTL_S]
        args.append(max(keep_history, 1))
        return int(self._backend.run_script(_FINISH, keys, args)) == 1

    # ----------------------------------------------------------------- workers

    def heartbeat(self, hb: WorkerHeartbeat, ttl_s: int) -> None:
        """Announce a live worker; the key expires unless renewed within `ttl_s`."""
        self._backend.execute(
            "SET", self.keys.worker(hb.worker_id), hb.model_dump_json(), "EX", ttl_s
        )

    def announce_cluster(self, cluster_id: str, ttl_s: int) -> None:
        """Say that an edge cluster's bridge is alive; it lapses unless renewed within `ttl_s`."""
        self._backend.execute("SET", self.keys.cluster(cluster_id), utcnow_iso(), "EX", ttl_s)

    def forget_cluster(self, cluster_id: str) -> None:
        """An edge cluster going down withdraws its liveness: its claims are free at once."""
        self._backend.execute("DEL", self.keys.cluster(cluster_id))

    def cluster_alive(self, cluster_id: str) -> bool:
        return bool(self._backend.execute("EXISTS", self.keys.cluster(cluster_id)))

    def workers(self) -> list[WorkerHeartbeat]:
        """Heartbeats of the live workers (expired keys are gone), sorted by worker id."""
        keys = sorted(self._scan(self.keys.workers_pattern))
        if not keys:
            return []
        raws = [raw for raw in self._backend.execute("MGET", *keys) if raw is not None]
        return sorted(_parse_all(WorkerHeartbeat, raws), key=lambda hb: hb.worker_id)

    def status(self) -> QueueStatus:
        """Live workers, queue length, tasks handed out and dead letters, in one round trip
        (status.lua)."""
        keys = [self.keys.queue, self.keys.processing, self.keys.dead]
        queued, processing, raws, dead = self._backend.run_script(
            _STATUS, keys, [self.keys.workers_pattern]
        )
        workers = sorted(_parse_all(WorkerHeartbeat, raws or []), key=lambda hb: hb.worker_id)
        return QueueStatus(workers, int(queued), int(processing), int(dead))

    def _scan(self, pattern: str) -> set[str]:
        found: set[str] = set()
        cursor = 0
        while True:
            reply = self._backend.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 500)
            cursor, batch = int(reply[0]), reply[1]
            found.update(str(k) for k in batch)
            if cursor == 0:
                return found

    # ----------------------------------------------------------------- history

    def push_history(self, record: JobRecord, keep: int = 100) -> None:
        """Add a record at the head of `job_history` and trim it to `keep`, atomically."""
        self._backend.run_script(
            _PUSH_HISTORY, [self.keys.history], [record.model_dump_json(), max(keep, 1)]
        )

    def park_record(self, record: JobRecord) -> None:
        """Keep a record that PostgreSQL could not take, until it can (survives restarts)."""
        self._backend.execute("LPUSH", self.keys.history_pending, record.model_dump_json())

    def parked_records(self, limit: int = 100) -> list[tuple[str, JobRecord]]:
        """The oldest parked records, each with its raw entry (for `unpark_record`)."""
        raws = self._backend.execute("LRANGE", self.keys.history_pending, -limit, -1) or []
        parked = []
        for raw in reversed(raws):
            try:
                parked.append((raw, JobRecord.model_validate_json(raw)))
            except ValidationError:
                log.warning("dropping an unreadable parked record: %s", str(raw)[:200])
                self.unpark_record(raw)
        return parked

    def unpark_record(self, raw: str) -> None:
        self._backend.execute("LREM", self.keys.history_pending, 1, raw)

    def parked_count(self) -> int:
        return int(self._backend.execute("LLEN", self.keys.history_pending) or 0)

    def park_metadata(self, repo_url: str, job_id: str, metadata: str) -> None:
        """Keep a repository's metadata that PostgreSQL could not take, until it can.

        One entry per repository: a later job's replaces an earlier one's (its rows would
        replace them in PostgreSQL anyway).
        """
        entry = f"{job_id} {metadata}"
        self._backend.execute("HSET", self.keys.metadata_pending, repo_url, entry)

    def parked_metadata_repos(self) -> list[str]:
        """The repositories whose metadata waits for PostgreSQL."""
        return sorted(str(k) for k in self._backend.execute("HKEYS", self.keys.metadata_pending))

    def parked_metadata(self, repo_url: str) -> tuple[str, str] | None:
        """(job id, metadata) parked for one repository; None when nothing is."""
        entry = self._backend.execute("HGET", self.keys.metadata_pending, repo_url)
        if entry is None:
            return None
        job_id, _, metadata = str(entry).partition(" ")
        return job_id, metadata

    def unpark_metadata(self, repo_url: str, job_id: str) -> bool:
        """Drop one repository's parked metadata if it is still `job_id`'s (a later job may
        have parked its own meanwhile: that one stays); whether it was dropped."""
        keys = [self.keys.metadata_pending]
        return int(self._backend.run_script(_UNPARK_METADATA, keys, [repo_url, job_id])) == 1

    def parked_metadata_count(self) -> int:
        return int(self._backend.execute("HLEN", self.keys.metadata_pending) or 0)

    def history(self, limit: int) -> list[JobRecord]:
        """The newest `limit` records (unreadable entries, e.g. the seed's, are skipped)."""
        if limit <= 0:
            return []
        raws = self._backend.execute("LRANGE", self.keys.history, 0, limit - 1) or []
        return _parse_all(JobRecord, raws)


# --------------------------------------------------------------------------- helpers


def _job_state(data: dict[str, Any]) -> JobState:
    """A JobState from decoded hash fields; a field that does not validate is left out."""
    try:
        return JobState.model_validate(data)
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} - {"job_id"}
        log.warning("job %s: ignoring unreadable fields %s", data.get("job_id"), sorted(bad))
        return JobState.model_validate({k: v for k, v in data.items() if k not in bad})


def _parse_all(model: type[M], raws: Sequence[str]) -> list[M]:
    parsed: list[M] = []
    for raw in raws:
        try:
            parsed.append(model.model_validate_json(raw))
        except ValidationError:
            log.warning("skipping an unreadable %s: %s", model.__name__, str(raw)[:200])
    return parsed


def _as_dict(reply: Any) -> dict[str, str]:
    # redis-py shapes HGETALL into a dict; a raw transport returns a flat list of pairs.
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply or [])
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _encode_field(value: object) -> Arg:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value)


_FLOAT_FIELDS = frozenset({"progress"})
_INT_FIELDS = frozenset({"attempts", "done", "total"})
_JSON_FIELDS = frozenset({"task", "record"})


def _decode_field(name: str, value: str) -> Any:
    try:
        if name in _FLOAT_FIELDS:
            return float(value)
        if name in _INT_FIELDS:
            return int(value)
        if name in _JSON_FIELDS:
            return json.loads(value)
    except ValueError:
        log.warning("job field %s holds an unreadable value: %s", name, value[:200])
    return value
