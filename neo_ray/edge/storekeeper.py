"""StoreKeeper: the one actor that owns the embedded Qdrant Edge shard (its WAL is locked)."""

from __future__ import annotations

import contextlib

import numpy as np
import ray

from neo_ray.config import Settings
from neo_ray.errors import NeoRayError
from neo_ray.models import Progress, RepoGraph, Stage
from neo_ray.names import NAMESPACE, STORE
from neo_ray.stores.queue import Broker
from neo_ray.stores.vectors import Mode, Neighbor, Scope, Tokens, VectorStore


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class StoreKeeper:
    """Every read and write of the embedded store goes through here, one process."""

    def __init__(self, settings: Settings) -> None:
        self._store = VectorStore.open(settings)
        self._broker = (
            Broker.connect(settings.redis_url, prefix=settings.redis_prefix)
            if settings.redis_url
            else None
        )

    def replace_repo(
        self,
        graph: RepoGraph,
        vectors: np.ndarray,
        repo_url: str,
        job_id: str | None = None,
        tokens: Tokens | None = None,
    ) -> int:
        """Write a repository's vectors, reporting upload progress into the job's hash."""

        def progress(event: Progress) -> None:
            if self._broker is None or job_id is None:
                return
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

    def ping(self) -> bool:
        return self._store.ping()


class StoreKeeperSink:
    """The pipeline's vector sink in local mode: forwards to the StoreKeeper actor."""

    def __init__(self, job_id: str | None = None) -> None:
        self._keeper = ray.get_actor(STORE, namespace=NAMESPACE)
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
        # Progress goes from the actor straight into the job's hash, not through here.
        ref: ray.ObjectRef = self._keeper.replace_repo.remote(
            graph, vectors, repo_url, self._job_id, dict(tokens) if tokens else None
        )
        return int(ray.get(ref))
