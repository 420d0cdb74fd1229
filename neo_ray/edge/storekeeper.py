"""StoreKeeper: the one actor that owns Qdrant's embedded local-mode folder (it locks it)."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import ray

from neo_ray.config import Settings
from neo_ray.errors import NeoRayError
from neo_ray.models import Progress, RepoGraph, Stage
from neo_ray.names import NAMESPACE, STORE
from neo_ray.stores.queue import Broker
from neo_ray.stores.vectors import Neighbor, VectorStore


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class StoreKeeper:
    """Every read and write of the embedded store goes through here, one process."""

    def __init__(self, settings: Settings) -> None:
        self._store = VectorStore.open(settings)
        self._broker = Broker.from_settings(settings) if settings.has_queue else None

    def replace_repo(
        self, graph: RepoGraph, vectors: np.ndarray, repo_url: str, job_id: str | None = None
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
                self._broker.set_job_state(
                    job_id,
                    stage=Stage.UPLOADING.value,
                    progress=round(event.fraction, 4),
                    done=event.done,
                    total=event.total,
                    message=f"uploading {event.done}/{event.total}",
                )

        return self._store.replace_repo(graph, vectors, repo_url=repo_url, progress=progress)

    def similar(self, repo_url: str, file_path: str, k: int = 10) -> list[Neighbor]:
        return self._store.similar(repo_url, file_path, k=k)

    def count(self, repo_url: str | None = None) -> int:
        return self._store.count(repo_url)

    def ping(self) -> bool:
        return self._store.ping()


class StoreKeeperSink:
    """The pipeline's vector sink in local mode: forwards to the StoreKeeper actor."""

    def __init__(self, job_id: str | None = None) -> None:
        self._keeper = ray.get_actor(STORE, namespace=NAMESPACE)
        self._job_id = job_id

    def replace_repo(
        self, graph: RepoGraph, vectors: np.ndarray, *, repo_url: str, progress: object = None
    ) -> int:
        ref: ray.ObjectRef = self._keeper.replace_repo.remote(
            graph, vectors, repo_url, self._job_id
        )
        return int(ray.get(ref))
