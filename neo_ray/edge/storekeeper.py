"""StoreKeeper: the one actor that owns the embedded Qdrant Edge shard (its WAL is locked)."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import ray

from neo_ray.config import Settings
from neo_ray.edge.facades import Store
from neo_ray.errors import NeoRayError
from neo_ray.models import Progress, RepoGraph
from neo_ray.stores.queue import Broker
from neo_ray.stores.vectors import Mode, Neighbor, Scope, Tokens, VectorStore


# `ping` runs in a concurrency group of its own: in the default group it queued behind a
# long upload (one `replace_repo` call) and /health, waiting 2 s, reported a busy store "down".
@ray.remote(  # type: ignore[call-overload]
    num_cpus=0, max_restarts=-1, max_task_retries=-1, concurrency_groups={"probe": 1}
)
class StoreKeeper:
    """Every read and write of the embedded store goes through here, one at a time; only
    the health probe runs beside them (its own thread)."""

    def __init__(self, settings: Settings) -> None:
        self._store = VectorStore.open(settings)
        self._broker = Broker.from_settings(settings) if settings.has_queue else None

    def replace_repo(
        self,
        graph: RepoGraph,
        vectors: np.ndarray,
        repo_url: str,
        job_id: str | None = None,
        tokens: Tokens | None = None,
    ) -> int:
        """Write a repository's vectors, reporting upload progress into the job's hash."""

        last = [float("-inf")]

        def progress(event: Progress) -> None:
            if self._broker is None or job_id is None:
                return
            # Over Upstash REST every command counts: at most one report a second, and the last.
            now = time.monotonic()
            final = event.done >= event.total
            if self._broker.budgeted and not final and now - last[0] < 1.0:
                return
            last[0] = now
            # Progress is best-effort: a Redis blip must not fail the upload itself.
            with contextlib.suppress(NeoRayError):
                self._broker.report_progress(job_id, event)

        return self._store.replace_repo(
            graph, vectors, repo_url=repo_url, tokens=tokens, progress=progress
        )

    def similar(
        self,
        repo_url: str,
        file_path: str,
        k: int = 10,
        *,
        scope: Scope = "repo",
        mode: Mode = "structural",
    ) -> list[Neighbor]:
        return self._store.similar(repo_url, file_path, k, scope=scope, mode=mode)

    def delete_repo(self, repo_url: str) -> int:
        return self._store.delete_repo(repo_url)

    def count(self, repo_url: str | None = None) -> int:
        return self._store.count(repo_url)

    @ray.method(concurrency_group="probe")
    def ping(self) -> bool:
        return self._store.ping()


class StoreKeeperSink:
    """The pipeline's vector sink in local mode: forwards to the StoreKeeper actor."""

    def __init__(self, job_id: str | None = None) -> None:
        self._store = Store()
        self._job_id = job_id

    def replace_repo(
        self,
        graph: RepoGraph,
        vectors: np.ndarray,
        *,
        repo_url: str,
        tokens: Tokens | None = None,
        progress: object = None,
    ) -> int:
        return self._store.replace_repo(graph, vectors, repo_url, self._job_id, tokens)
