"""HistoryActor: the one writer of job records, to Redis (status routes) and PostgreSQL."""

from __future__ import annotations

import logging

import ray

from neo_ray.broker import Broker
from neo_ray.config import Settings
from neo_ray.db import Database
from neo_ray.errors import NeoRayError
from neo_ray.models import JobRecord

NAME = "history"
NAMESPACE = "neo"
HISTORY_KEEP = 100

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class HistoryActor:
    """Mirrors each finished job into Redis (newest first, ≤ 100) and PostgreSQL (unbounded)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("HistoryActor needs a Redis URL")
        self._broker = Broker.connect(settings.redis_url, prefix=settings.redis_prefix)
        self._db = Database.connect(settings.database_url) if settings.database_url else None
        if self._db is not None:
            self._db.migrate()

    def record(self, record: JobRecord) -> None:
        """Write one final record. Redis first: the status routes read it there."""
        self._broker.finish_job(record.job_id, record)
        self._broker.push_history(record, keep=HISTORY_KEEP)
        if self._db is not None:
            try:
                self._db.record_job(record)
            except NeoRayError:
                # Redis already holds the record; PostgreSQL catches up on the next write.
                log.exception("could not write job %s to PostgreSQL", record.job_id)
                raise

    def ping(self) -> bool:
        return True


def get_history() -> ray.actor.ActorHandle:
    """The named history actor (looked up by name, never passed around)."""
    return ray.get_actor(NAME, namespace=NAMESPACE)
