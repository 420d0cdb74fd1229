"""HistoryActor: the one writer of job records, to Redis (status routes) and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time

import ray

from neo_ray.config import Settings
from neo_ray.edge.metrics import edge_metrics
from neo_ray.errors import ConfigError, DatabaseError, DatabaseUnavailable, NeoRayError
from neo_ray.models import JobRecord
from neo_ray.stores.metadata import Database, ParkedRepository
from neo_ray.stores.queue import Broker

HISTORY_KEEP = 100
RETRY_EVERY_S = 30.0

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class HistoryActor:
    """Mirrors each finished job into Redis (newest first, ≤ 100) and PostgreSQL (unbounded).

    Redis is written first and must succeed: the status routes read it, and a failure there
    reaches the caller. A PostgreSQL failure does not fail the job: the record is parked in
    Redis (`history_pending`, which outlives this actor) and written when PostgreSQL answers
    again, with the next record or within `RETRY_EVERY_S`. The same goes for the repository
    metadata a worker parked (`metadata_pending`) when PostgreSQL was away during its job.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.has_queue:
            raise ConfigError("HistoryActor needs a Redis URL")
        self._broker = Broker.from_settings(settings)
        self._settings = settings
        self._database_url = settings.database_url
        self._db: Database | None = None  # connected on first use: PostgreSQL may be down now
        self._lock = threading.Lock()
        # Whether Redis may hold parked records: checked once here, set when one is parked,
        # so an idle actor sends no commands (Upstash REST counts every one).
        self._maybe_parked = True
        if self._database_url:
            threading.Thread(target=self._retry_parked, name="parked", daemon=True).start()

    def record(self, record: JobRecord) -> bool:
        """Write one final record; False when the job had already ended with another one.

        A job may run twice (its worker's node vanished, the task went back to the queue, the
        first run finished after all): the first record stands, the second is dropped here,
        so every job has one record in Redis and in PostgreSQL.
        """
        # The final state and the history entry land in one step (finish.lua).
        if not self._broker.finish_job(record.job_id, record, keep_history=HISTORY_KEEP):
            log.warning("job %s already has a final record; dropping a second", record.job_id)
            return False
        edge_metrics().job(record, self._settings)
        if not self._database_url:
            return True
        with self._lock:
            if self._flush() and self._write(record):
                return True
            self._broker.park_record(record)
            self._maybe_parked = True
        return True

    def _write(self, record: JobRecord) -> bool:
        try:
            self._database().record_job(record)
            return True
        except DatabaseError:
            log.warning("PostgreSQL unavailable; job %s parked in Redis", record.job_id)
            return False

    def _database(self) -> Database:
        """The pool, connected and migrated on first use (DatabaseError while it cannot be)."""
        if self._db is None:
            if not self._database_url:
                raise DatabaseError("no database configured")
            db = Database.from_settings(self._settings)
            try:
                db.migrate()
            except DatabaseError:
                db.close()
                raise
            self._db = db
        return self._db

    def _flush(self) -> bool:
        """Write the parked records, oldest first, then the parked repository metadata;
        False when PostgreSQL is still away."""
        if not self._maybe_parked:
            return True
        while parked := self._broker.parked_records():
            for raw, record in parked:
                if not self._write(record):
                    return False
                self._broker.unpark_record(raw)
        if not self._flush_metadata():
            return False
        self._maybe_parked = False
        return True

    def _flush_metadata(self) -> bool:
        """Write each repository's parked metadata; False when PostgreSQL is still away.

        Metadata PostgreSQL refuses (not an outage: it never could be written) is dropped
        with an error in the log, so it cannot hold back what waits behind it.
        """
        for repo_url in self._broker.parked_metadata_repos():
            entry = self._broker.parked_metadata(repo_url)
            if entry is None:
                continue
            job_id, text = entry
            try:
                db = self._database()  # a failure here says nothing of the metadata
            except DatabaseError:
                log.warning("PostgreSQL unavailable; metadata of %s stays parked", repo_url)
                return False
            try:
                saved = db.save_parked(ParkedRepository.decode(text))
            except DatabaseUnavailable:
                log.warning("PostgreSQL unavailable; metadata of %s stays parked", repo_url)
                return False
            except (DatabaseError, ValueError) as exc:
                log.error("dropping parked metadata of %s (job %s): %s", repo_url, job_id, exc)
            else:
                if not saved:
                    log.info("parked metadata of %s (job %s) is older than the saved one; "
                             "dropped", repo_url, job_id)  # fmt: skip
            self._broker.unpark_metadata(repo_url, job_id)
        return True

    def metadata_parked(self) -> None:
        """A worker parked a repository's metadata: look for it at the next write or retry."""
        with self._lock:
            self._maybe_parked = True

    def _retry_parked(self) -> None:
        """Every RETRY_EVERY_S: write what is parked. Never ends on an error: it logs it."""
        rounds = 0
        while True:
            time.sleep(RETRY_EVERY_S)
            rounds += 1
            try:
                with self._lock:
                    # Now and then look again even when this actor parked nothing: the
                    # bridge parks records it could not hand over, a worker metadata it
                    # could not announce (a few Redis reads in 10 rounds).
                    self._maybe_parked = self._maybe_parked or rounds % 10 == 0
                    self._flush()
            except NeoRayError:
                log.warning("retrying parked history records failed", exc_info=True)
            except Exception:  # a bug must not end the thread silently: log, keep going
                log.exception("unexpected error while retrying parked history records")

    def pending(self) -> int:
        """Records not yet in PostgreSQL."""
        return self._broker.parked_count()

    def pending_metadata(self) -> int:
        """Repositories whose metadata is not yet in PostgreSQL."""
        return self._broker.parked_metadata_count()

    def ping(self) -> bool:
        return True
