"""GraphWorker: runs the pipeline on a GPU (or the CPU), reporting stage, progress, heartbeats."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import ray

from neo_ray.config import Settings
from neo_ray.edge.facades import History
from neo_ray.edge.gpu import open_gpu
from neo_ray.edge.metrics import edge_metrics
from neo_ray.errors import (
    ActorError,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    EmbedError,
    InvalidRepoError,
    NeoRayError,
    QueueUnavailable,
    RepoNotFound,
    RepoTooLarge,
)
from neo_ray.models import (
    JobRecord,
    JobStatus,
    Progress,
    RepoGraph,
    Stage,
    Task,
    WorkerHeartbeat,
    WorkerState,
    failed_record,
    utcnow_iso,
)
from neo_ray.pipeline import embed
from neo_ray.pipeline import run as pipeline
from neo_ray.retry import Backoff
from neo_ray.stores.metadata import Database, ParkedRepository, ping_url
from neo_ray.stores.queue import Broker

# Errors that another attempt cannot fix: the repository itself is the problem.
PERMANENT_ERRORS: tuple[type[NeoRayError], ...] = (
    InvalidRepoError,
    RepoNotFound,
    RepoTooLarge,
    EmbedError,
)
_PROGRESS_EVERY_S = 0.2
# Over Upstash REST every command counts against a daily quota: report progress less often.
_BUDGETED_PROGRESS_EVERY_S = 1.0
# After a transient failure, how often the worker checks whether its services answer again
# (then its Error state clears), and how long one PostgreSQL check may take.
RECOVERY_CHECK_S = 2.0
_PING_TIMEOUT_S = 2.0
# A finished job's record and ack while Redis is away: 0.5, 1, 2, 4, then every 5 s, about a
# minute in all, before the task goes back to the queue.
_FINISH_BACKOFF = Backoff(first_s=0.5, factor=2.0, cap_s=5.0, attempts=15)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of a task: a record for history, or a transient failure to retry."""

    record: JobRecord | None
    retry: bool = False
    error: str | None = None


class _Status:
    """The worker's live state, read by its heartbeat thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = WorkerState.IDLE
        self.stage: Stage | None = None
        self.progress = 0.0
        self.job_id: str | None = None
        self.repo_url: str | None = None
        self.error: str | None = None

    def set(self, **fields: object) -> None:
        with self.lock:
            for key, value in fields.items():
                setattr(self, key, value)


# Two threads: `info` answers while `run` works (the bridge asks who is idle).
@ray.remote(max_restarts=-1, max_concurrency=2)  # type: ignore[call-overload]
class GraphWorker:
    """One per GPU where the cluster has GPUs, else `workers_per_node` on the CPU."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        if not settings.has_queue:
            raise ConfigError("GraphWorker needs a Redis URL")
        self._settings = settings
        self._id = worker_id
        self._node = socket.gethostname()
        self._device = embed.resolve_device(settings.device)
        self._gpu = open_gpu(self._device, ray.get_gpu_ids())
        embed.warm_up()
        self._broker = Broker.from_settings(settings)
        self._history = History()
        self._db: Database | None = None
        if settings.database_url:
            try:
                self._database()  # an edge node may start before anything else migrated
            except DatabaseUnavailable as exc:
                # Start anyway: jobs park their metadata until PostgreSQL answers.
                log.warning("PostgreSQL unavailable at start; connecting later: %s", exc)
        self._sweep_clones()
        self._status = _Status()
        self._run_lock = threading.Lock()
        self._sink: pipeline.VectorSink | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._beat_ok = False
        self._beat()
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()

    # --- heartbeats -------------------------------------------------------------------
    def _heartbeat(self) -> WorkerHeartbeat:
        s = self._status
        with s.lock:
            return WorkerHeartbeat(
                worker_id=self._id,
                node=self._node,
                device=self._device,
                state=s.state,
                stage=s.stage,
                progress=s.progress,
                job_id=s.job_id,
                repo_url=s.repo_url,
                error=s.error,
                heartbeat_at=utcnow_iso(),
                gpu=self._gpu.read() if self._gpu is not None else None,
            )

    def _sparse(self) -> bool:
        """Idle over a budgeted transport (Upstash REST): beat every idle_heartbeat_s."""
        return self._broker.budgeted and self._status.job_id is None

    def _beat(self) -> None:
        ttl = self._settings.heartbeat_ttl_s
        if self._sparse():  # the key must outlive the longer pause between beats
            ttl += math.ceil(self._settings.idle_heartbeat_s)
        hb = self._heartbeat()
        if hb.gpu is not None:
            edge_metrics().gpu(self._id, hb.gpu)
        try:
            self._broker.heartbeat(hb, ttl_s=ttl)
            self._beat_ok = True
        except NeoRayError:
            self._beat_ok = False
            log.warning("heartbeat to Redis failed", exc_info=True)

    def _heartbeats(self) -> None:
        while not self._stop.is_set():
            s = self._settings
            # A job's start sets _wake, ending an idle pause early: busy beats are frequent.
            self._wake.wait(s.idle_heartbeat_s if self._sparse() else s.heartbeat_interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._beat()

    # --- the work -----------------------------------------------------------------------
    def run(self, task: Task) -> Outcome:
        """Run one task to its end; never raises for a pipeline failure.

        One task at a time (`info` answers on the actor's second thread meanwhile); the job id
        stays set until the record is written and the task acknowledged, so the bridge never
        sees this worker as free, or the job as dropped, in between.
        """
        with self._run_lock:
            started = time.time()
            try:
                return self._run(task, started)
            except NeoRayError as exc:
                # The record could not be written (Redis away past `_finish`'s tries). Nothing
                # was acknowledged: the bridge requeues the task, or only clears it when its
                # record did land (a finished job is never run again).
                log.warning("job %s: could not record its outcome: %s", task.job_id, exc)
                return Outcome(None, retry=True, error=f"{type(exc).__name__}: {exc}"[:500])
            finally:
                self._status.set(stage=None, progress=0.0, job_id=None, repo_url=None)
                self._beat()

    def _run(self, task: Task, started: float) -> Outcome:
        try:
            self._begin(task)
            result = self._pipeline(task)
        except PERMANENT_ERRORS as exc:
            return self._failed(task, started, exc, retry=False)
        except Exception as exc:  # a transient or unknown failure: the bridge may retry
            log.exception("job %s failed", task.job_id)
            return self._failed(task, started, exc, retry=True)
        record = JobRecord(
            repo_url=task.repo_url,
            status=JobStatus.COMPLETE,
            duration_seconds=round(time.time() - started, 3),
            files_processed=result.files,
            embeddings_generated=result.embeddings,
            timestamp=utcnow_iso(),
            job_id=task.job_id,
            ref=task.ref,
            commit_sha=result.graph.commit,
            edges=len(result.graph.edges),
            files_skipped=len(result.graph.skipped),
            stage_seconds=result.stage_seconds,
            worker_id=self._id,
            attempts=task.attempts + 1,
        )
        # Idle is announced before the record lands, so a client that sees the job complete
        # does not then see this worker still training it.
        self._status.set(state=WorkerState.IDLE, stage=None, progress=0.0)
        self._beat()
        self._finish(task, record)
        return Outcome(record)

    def _begin(self, task: Task) -> None:
        self._status.set(
            state=WorkerState.BUSY,
            stage=Stage.CLONING,
            progress=0.0,
            job_id=task.job_id,
            repo_url=task.repo_url,
            error=None,
        )
        self._beat()
        self._wake.set()
        self._broker.set_job_state(
            task.job_id,
            state=JobStatus.RUNNING,
            stage=Stage.CLONING,
            progress=0.0,
            worker_id=self._id,
            started_at=utcnow_iso(),
        )

    def _pipeline(self, task: Task) -> pipeline.PipelineResult:
        settings = self._settings
        ref = pipeline.resolve_source(task.repo_url, settings)
        sink = self._vector_sink(task.job_id)
        reporter = _Reporter(self, task.job_id)
        result = pipeline.run_pipeline(ref, settings, sink, git_ref=task.ref, progress=reporter)
        reporter(Progress(Stage.RECORDING, 0, 1))
        if settings.database_url:
            self._save_metadata(ref.url, result.graph, task.job_id)
        return result

    def _database(self) -> Database:
        """The pool, connected and migrated on first use (DatabaseError while it cannot be)."""
        if self._db is None:
            db = Database.from_settings(self._settings)
            try:
                db.migrate()
            except DatabaseError:
                db.close()
                raise
            self._db = db
        return self._db

    def _save_metadata(self, repo_url: str, graph: RepoGraph, job_id: str) -> None:
        """The repository's files and edges to PostgreSQL; while it is away, parked in Redis
        (`metadata_pending`) for the history actor to write when it answers again, so the
        job completes with what it made instead of running again.

        Metadata over NEO_PARK_METADATA_MAX_MB (compressed) is not parked: the outage then
        fails the attempt, as before, and the bridge retries it.
        """
        try:
            self._database().save_repository(repo_url, graph, job_id=job_id)
            return
        except DatabaseUnavailable as exc:
            outage = exc
        parked = ParkedRepository(repo_url, graph, job_id, datetime.now(UTC)).encode()
        limit = self._settings.park_metadata_max_mb * 2**20
        if len(parked) > limit:
            raise DatabaseUnavailable(
                f"{outage} (the metadata, {len(parked) / 2**20:.1f} MiB compressed, is over "
                f"NEO_PARK_METADATA_MAX_MB={self._settings.park_metadata_max_mb:g}: not parked)"
            ) from outage
        self._broker.park_metadata(repo_url, job_id, parked)
        log.warning(
            "job %s: PostgreSQL unavailable (%s); metadata of %s parked in Redis (%d bytes)",
            job_id, outage, repo_url, len(parked),
        )  # fmt: skip
        try:
            self._history.metadata_parked()
        except NeoRayError:  # it looks for parked metadata on its own, less often
            log.warning("could not tell history about parked metadata", exc_info=True)

    def _vector_sink(self, job_id: str) -> pipeline.VectorSink:
        """The Qdrant server's client (opened once), or the local store's owner actor."""
        if not self._settings.qdrant_url:
            from neo_ray.edge.storekeeper import StoreKeeperSink

            return StoreKeeperSink(job_id)
        if self._sink is None:
            from neo_ray.stores.vectors import VectorStore

            self._sink = VectorStore.open(self._settings)
        return self._sink

    def _failed(self, task: Task, started: float, exc: BaseException, *, retry: bool) -> Outcome:
        message = f"{type(exc).__name__}: {exc}"[:500]
        # The state shows "Error: ..." until the next job, so the status route can show it;
        # after a transient failure only until the worker's services answer again.
        # job_id stays until `run` ends: the bridge asks who holds the job before its record lands.
        self._status.set(state=WorkerState.ERROR, error=message, stage=None)
        self._beat()
        if retry:
            threading.Thread(
                target=self._await_recovery, args=(message,), name="recovery", daemon=True
            ).start()
            return Outcome(None, retry=True, error=message)
        record = failed_record(task, message, time.time() - started, worker_id=self._id)
        self._finish(task, record)
        return Outcome(record, error=message)

    def _await_recovery(self, message: str) -> None:
        """Clear the Error state of a transient failure once Redis takes heartbeats and
        PostgreSQL (when configured) answers; ends early when a job replaces the error."""
        while not self._stop.wait(RECOVERY_CHECK_S):
            s = self._status
            with s.lock:
                if s.state is not WorkerState.ERROR or s.error != message:
                    return  # a job started (or another failure took its place)
            if not self._services_answer():
                continue
            with s.lock:
                if s.state is not WorkerState.ERROR or s.error != message:
                    return
                if s.job_id is not None:
                    continue  # the failed job's `run` has not ended yet
                s.state, s.error = WorkerState.IDLE, None
            log.info("services answer again; the worker is idle (was %s)", message)
            self._beat()
            return

    def _services_answer(self) -> bool:
        """Whether the last heartbeat reached Redis and PostgreSQL (if any) answers a query."""
        if not self._beat_ok:
            return False
        url = self._settings.database_url
        if not url:
            return True
        return ping_url(url, timeout_s=_PING_TIMEOUT_S, ca=self._settings.database_ca)

    def _finish(self, task: Task, record: JobRecord) -> None:
        """Hand the record to history, then release the task from `ingest_processing`.

        The work is done by now: while Redis is away (restarting, a network blip) both steps
        are tried again for about a minute rather than sending the task back to be redone.
        Both are safe to repeat: the same record again is taken once, an ack removes nothing
        twice.
        """

        def waiting(attempt: int, exc: BaseException) -> None:
            log.warning("job %s: Redis away at its end (try %d): %s", task.job_id, attempt, exc)

        for step in (lambda: self._hand_over(record), lambda: self._broker.ack(task)):
            _FINISH_BACKOFF.call(step, retry_on=(QueueUnavailable,), on_failure=waiting)

    def _hand_over(self, record: JobRecord) -> None:
        """The record to the history actor; when none takes it (gone, or not back from a
        restart within the facade's timeout), its Redis step done here and PostgreSQL's share
        parked for the next history actor, as the bridge does: the job is not run again.

        A call that timed out may still land later: the same record again is taken once.
        """
        try:
            self._history.record(record)
        except ActorError as exc:
            log.warning("history did not take job %s (%s); parked", record.job_id, exc)
            if self._broker.finish_job(record.job_id, record):
                self._broker.park_record(record)

    def report(self, event: Progress, job_id: str) -> None:
        self._status.set(stage=event.stage, progress=round(event.fraction, 4))
        self._broker.report_progress(job_id, event)

    @property
    def budgeted(self) -> bool:
        return self._broker.budgeted

    @staticmethod
    def _sweep_clones() -> None:
        """Clone folders of workers killed mid-job (SIGKILL skips their cleanup) go at start."""
        from neo_ray.pipeline import clone

        for folder in clone.sweep_orphans():
            log.warning("removed the clone folder of a dead worker: %s", folder)

    def info(self) -> dict[str, object]:
        """The worker's identity, live state and placement (answers while a job runs)."""
        return {
            **self._heartbeat().model_dump(),
            "pid": os.getpid(),
            "resources": ray.get_runtime_context().get_assigned_resources(),
        }


class _Reporter:
    """Progress callback: every stage change at once, and within a stage at most 5 per second."""

    def __init__(self, worker: GraphWorker, job_id: str) -> None:
        self._worker = worker
        self._job_id = job_id
        self._stage: Stage | None = None
        self._last = 0.0
        self._every = _BUDGETED_PROGRESS_EVERY_S if worker.budgeted else _PROGRESS_EVERY_S

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        if event.stage == self._stage and now - self._last < self._every:
            return
        self._stage, self._last = event.stage, now
        try:
            self._worker.report(event, self._job_id)
        except NeoRayError:
            log.warning("progress report failed", exc_info=True)
