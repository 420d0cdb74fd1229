"""HistoryActor: the one writer of job records, to Redis (status routes) and PostgreSQL."""

from __future__ import annotations

import logging
from collections import deque

import ray

from neo_ray.broker import Broker
from neo_ray.config import Settings
from neo_ray.db import Database
from neo_ray.errors import DatabaseError
from neo_ray.models import JobRecord

NAME = "history"
NAMESPACE = "neo"
HISTORY_KEEP = 100
PENDING_KEEP = 10_000

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class HistoryActor:
    """Mirrors each finished job into Redis (newest first, ≤ 100) and PostgreSQL (unbounded).

    Redis is written first and must succeed: the status routes read it, and a failure there
    reaches the caller. A PostgreSQL failure does not fail the job: the record waits in memory
    and is written with the next one that gets through.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("HistoryActor needs a Redis URL")
        self._broker = Broker.connect(settings.redis_url, prefix=settings.redis_prefix)
        self._db = Database.connect(settings.database_url) if settings.database_url else None
        if self._db is not None:
            self._db.migrate()
        self._pending: deque[JobRecord] = deque(maxlen=PENDING_KEEP)

    def record(self, record: JobRecord) -> None:
        """Write one final record."""
        self._broker.finish_job(record.job_id, record)
        self._broker.push_history(record, keep=HISTORY_KEEP)
        if self._db is None:
            return
        self._pending.append(record)
        self._flush()

    def _flush(self) -> None:
        while self._pending and self._db is not None:
            try:
                self._db.record_job(self._pending[0])
            except DatabaseError:
                log.warning("PostgreSQL unavailable; %d record(s) wait", len(self._pending))
                return
            self._pending.popleft()

    def pending(self) -> int:
        """Records not yet in PostgreSQL."""
        return len(self._pending)

    def ping(self) -> bool:
        return True


def get_history() -> ray.actor.ActorHandle:
    """The named history actor (looked up by name, never passed around)."""
    return ray.get_actor(NAME, namespace=NAMESPACE)
