"""The vector store: one Node2Vec vector per file in Qdrant, replaced per repository.

The only module that imports qdrant_client. Embedded local mode (a folder in the data
directory, locked to one process) unless a Qdrant server URL is configured. Every request
goes through `call_with_retries`: transient failures are tried 3 times with exponential
backoff, then reported as StoreError naming the operation; requests the store refuses
(4xx, invalid input) fail at once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, uuid5

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from neo_ray.config import Settings
from neo_ray.errors import FileNotStored, StoreError
from neo_ray.models import Progress, RepoGraph, Stage, utcnow_iso
from neo_ray.retry import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH_SIZE = 100
ATTEMPTS = 3
MODEL = "node2vec"
_INDEXED_FIELDS = ("repo_url", "file_path")
# Errors a later attempt may not meet again: the network, a busy server, local-mode storage
# (a folder or SQLite file another writer holds). 4xx answers and ValueError are final.
_TRANSIENT = (ResponseHandlingException, UnexpectedResponse, OSError, RuntimeError, sqlite3.Error)
_FINAL = (ValueError,)
_LOCKED = "already accessed by another instance"

FailureHook = Callable[[str, int, BaseException], None]
"""Called after every failed attempt with (operation, attempt number from 1, error)."""
ProgressHook = Callable[[Progress], None]


def point_id(repo_url: str, file_path: str) -> str:
    """The point id of a file: UUID5 in the URL namespace of ``f"{repo_url}:{file_path}"``."""
    return str(uuid5(NAMESPACE_URL, f"{repo_url}:{file_path}"))


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A file whose vector lies near the queried file's, with its cosine similarity."""

    file_path: str
    score: float
    repo_url: str


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, UnexpectedResponse):
        code = exc.status_code or 0
        return code >= 500 or code in (408, 429)
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, _FINAL)


def call_with_retries(
    operation: str,
    fn: Callable[[], T],
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = 0.5,
    on_failure: FailureHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn`; retry transient failures with backoff `backoff_s` × 2^(attempt-1).

    Raises StoreError naming `operation` once `attempts` tries failed, or at once for a
    failure a retry cannot fix. The original error is the StoreError's `__cause__`.
    """
    if attempts < 1:
        raise StoreError(f"qdrant {operation}: attempts must be ≥ 1, got {attempts}")

    def failed(attempt: int, exc: BaseException) -> None:
        log.warning("qdrant %s: attempt %d/%d failed: %s", operation, attempt, attempts, exc)
        if on_failure is not None:
            on_failure(operation, attempt, exc)

    policy = Backoff(first_s=backoff_s, attempts=attempts)
    try:
        return policy.call(
            fn,
            retry_on=(*_TRANSIENT, *_FINAL),
            transient=_is_transient,
            on_failure=failed,
            sleep=sleep,
        )
    except (*_TRANSIENT, *_FINAL) as exc:
        if not _is_transient(exc):
            raise StoreError(f"qdrant {operation} was refused: {_short(exc)}") from exc
        raise StoreError(
            f"qdrant {operation} failed after {attempts} attempts: {_short(exc)}"
        ) from exc


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class VectorStore:
    """Node2Vec vectors of files in one Qdrant collection (cosine), keyed by repo and path."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        collection: str,
        dim: int,
        local: bool,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> None:
        self._client = client
        self.collection = collection
        self.dim = dim
        self.local = local
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._on_failure = on_failure
        self._ready = False
        self._closed = False

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> VectorStore:
        """Connect to `settings.qdrant_url`, or open the local store in the data directory."""
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            # The version check runs in a thread and only warns; ping() says more.
            client = QdrantClient(url=settings.qdrant_url, api_key=key, check_compatibility=False)
            local = False
        else:
            client = _open_local(settings.data_dir / "qdrant", attempts, backoff_s, on_failure)
            local = True
        return cls(
            client,
            collection=settings.qdrant_collection,
            dim=settings.dim,
            local=local,
            attempts=attempts,
            backoff_s=backoff_s,
            on_failure=on_failure,
        )

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes

    def replace_repo(
        self,
        graph: RepoGraph,
        vectors: np.ndarray,
        *,
        repo_url: str,
        progress: ProgressHook | None = None,
    ) -> int:
        """Store one vector per node of `graph` (row i for node i), then delete the repo's
        points for files no longer in it. Returns the number of points written."""
        self._check_vectors(graph, vectors)
        self._ensure_collection()
        points = list(self._points(graph, vectors, repo_url))
        total = len(points)
        for start in range(0, total, BATCH_SIZE):
            batch = points[start : start + BATCH_SIZE]
            self._upsert(batch, f"{start + 1}-{start + len(batch)} of {total} for {repo_url}")
            if progress is not None:
                progress(Progress(Stage.UPLOADING, start + len(batch), total))
        if total == 0 and progress is not None:
            progress(Progress(Stage.UPLOADING, 0, 0))
        self._delete_stale(repo_url, [node.path for node in graph.nodes])
        return total

    def delete_repo(self, repo_url: str) -> int:
        """Delete every point of `repo_url`; return how many there were."""
        existing = self.count(repo_url)
        if existing:
            selector = models.FilterSelector(filter=_repo_filter(repo_url))
            self._call(
                f"delete of {repo_url}",
                lambda: self._client.delete(self.collection, points_selector=selector, wait=True),
            )
        return existing

    # --- reads

    def similar(
        self, repo_url: str, file_path: str, k: int = 10, *, same_repo: bool = True
    ) -> list[Neighbor]:
        """The `k` files nearest to `file_path`'s vector, itself excluded, best first.

        Node2Vec spaces of different repositories are unrelated, so by default only the same
        repository is searched. FileNotStored when the file has no vector.
        """
        self._ensure_collection()
        pid = point_id(repo_url, file_path)
        records = self._call(
            f"retrieve of {repo_url}:{file_path}",
            lambda: self._client.retrieve(self.collection, ids=[pid], with_vectors=True),
        )
        if not records or not isinstance(records[0].vector, list):
            raise FileNotStored(f"{file_path} of {repo_url} has no vector in the store")
        query: list[float] = [float(x) for x in records[0].vector]  # type: ignore[arg-type]
        must: list[models.Condition] = [_match("repo_url", repo_url)] if same_repo else []
        exclude: list[models.Condition] = [models.HasIdCondition(has_id=[pid])]
        response = self._call(
            f"query of neighbours of {repo_url}:{file_path}",
            lambda: self._client.query_points(
                self.collection,
                query=query,
                query_filter=models.Filter(must=must, must_not=exclude),
                limit=k,
                with_payload=list(_INDEXED_FIELDS),
            ),
        )
        return [
            Neighbor(
                file_path=str((p.payload or {})["file_path"]),
                score=float(p.score),
                repo_url=str((p.payload or {})["repo_url"]),
            )
            for p in response.points
        ]

    def count(self, repo_url: str | None = None) -> int:
        """Points in the collection, or of one repository."""
        self._ensure_collection()
        flt = _repo_filter(repo_url) if repo_url is not None else None
        result = self._call(
            f"count of {repo_url or 'all repositories'}",
            lambda: self._client.count(self.collection, count_filter=flt, exact=True),
        )
        return int(result.count)

    def ping(self) -> bool:
        """Whether the store answers now (one attempt, no retries)."""
        if self._closed:
            return False
        try:
            self._client.get_collections()
        except (*_TRANSIENT, *_FINAL):
            return False
        return True

    def close(self) -> None:
        """Release the client (and, in local mode, the folder's lock). Idempotent."""
        if not self._closed:
            self._closed = True
            self._client.close()

    # --- internals

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError(f"qdrant {operation}: the vector store is closed")
        return call_with_retries(
            operation,
            fn,
            attempts=self._attempts,
            backoff_s=self._backoff_s,
            on_failure=self._on_failure,
        )

    def _ensure_collection(self) -> None:
        """Create the collection on first use, or check that the existing one fits."""
        if self._ready:
            return
        name = self.collection
        exists = self._call(
            f"check of collection {name}", lambda: self._client.collection_exists(name)
        )
        if exists:
            self._check_collection()
        else:
            self._create_collection()
        if not self.local:
            # Local mode ignores payload indexes (and warns); a server filters faster with them.
            for field in _INDEXED_FIELDS:
                self._create_index(field)
        self._ready = True

    def _upsert(self, points: list[models.PointStruct], label: str) -> None:
        self._call(
            f"upsert of points {label}",
            lambda: self._client.upsert(self.collection, points=points, wait=True),
        )

    def _create_index(self, field: str) -> None:
        schema = models.PayloadSchemaType.KEYWORD
        self._call(
            f"index of {field} in {self.collection}",
            lambda: self._client.create_payload_index(self.collection, field, field_schema=schema),
        )

    def _create_collection(self) -> None:
        name = self.collection
        params = models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
        try:
            self._call(
                f"creation of collection {name}",
                lambda: self._client.create_collection(name, vectors_config=params),
            )
        except StoreError:
            # Another worker may have created it in the meantime (the server answers 409).
            if not self._call(
                f"check of collection {name}", lambda: self._client.collection_exists(name)
            ):
                raise
            self._check_collection()

    def _check_collection(self) -> None:
        name = self.collection
        info = self._call(f"read of collection {name}", lambda: self._client.get_collection(name))
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise StoreError(f"collection {name} uses named vectors; neo-ray needs one vector")
        if params.size != self.dim or params.distance != models.Distance.COSINE:
            raise StoreError(
                f"collection {name} holds {params.size}-dimensional {params.distance.value} "
                f"vectors, but neo-ray writes {self.dim}-dimensional Cosine ones: set "
                "NEO_QDRANT_COLLECTION to another name, or NEO_DIM to match"
            )

    def _check_vectors(self, graph: RepoGraph, vectors: np.ndarray) -> None:
        expected = (len(graph.nodes), self.dim)
        if vectors.ndim != 2 or vectors.shape != expected:
            raise StoreError(f"vectors have shape {vectors.shape}; expected {expected}")
        if not np.isfinite(vectors).all():
            raise StoreError("vectors contain NaN or infinite values")

    def _points(
        self, graph: RepoGraph, vectors: np.ndarray, repo_url: str
    ) -> Iterator[models.PointStruct]:
        ins, outs = graph.degrees()
        ingested_at = utcnow_iso()
        rows = vectors.astype(np.float32, copy=False)
        for node, row in zip(graph.nodes, rows, strict=True):
            payload: dict[str, Any] = {
                "repo_url": repo_url,
                "file_path": node.path,
                "language": node.language.value,
                "commit_sha": graph.commit,
                "in_degree": ins[node.path],
                "out_degree": outs[node.path],
                "model": MODEL,
                "ingested_at": ingested_at,
            }
            yield models.PointStruct(
                id=point_id(repo_url, node.path), vector=row.tolist(), payload=payload
            )

    def _delete_stale(self, repo_url: str, paths: list[str]) -> None:
        """Delete the repository's points whose file is not in `paths`."""
        keep: list[models.Condition] = (
            [models.FieldCondition(key="file_path", match=models.MatchAny(any=paths))]
            if paths
            else []
        )
        stale = models.Filter(must=[_match("repo_url", repo_url)], must_not=keep)
        self._call(
            f"delete of stale points of {repo_url}",
            lambda: self._client.delete(
                self.collection, points_selector=models.FilterSelector(filter=stale), wait=True
            ),
        )


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _repo_filter(repo_url: str) -> models.Filter:
    return models.Filter(must=[_match("repo_url", repo_url)])


def _open_local(
    path: Path, attempts: int, backoff_s: float, on_failure: FailureHook | None
) -> QdrantClient:
    """Open the embedded store, telling the caller plainly when another process owns it."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        return call_with_retries(
            f"open of the local store at {path}",
            lambda: QdrantClient(path=str(path)),
            attempts=attempts,
            backoff_s=backoff_s,
            on_failure=on_failure,
        )
    except StoreError as exc:
        if _LOCKED in str(exc.__cause__):
            raise StoreError(
                f"the local Qdrant store at {path} is owned by another process (local mode "
                "lets one process open it): route access through that process, or set "
                "NEO_QDRANT_URL to use a Qdrant server"
            ) from exc.__cause__
        raise
