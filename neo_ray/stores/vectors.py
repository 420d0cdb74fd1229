"""The vector store's interface: a structural (Node2Vec) and a lexical (BM25) vector per file.

Two engines implement it: Qdrant Edge in process (`qdrant_edge.py`, the default: a shard in
the data directory) and a Qdrant server or Qdrant Cloud through qdrant-client
(`qdrant_server.py`, when `NEO_QDRANT_URL` is set). This module holds what both share, so they
store exactly the same thing: point ids, the payload, the lexical vector's formula, the query
modes, the retry policy, and `VectorStore.open`, which picks the engine from the settings.
Neither engine's library is imported here.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args
from uuid import NAMESPACE_URL, uuid5

import numpy as np

from neo_ray.config import Settings
from neo_ray.errors import StoreError
from neo_ray.models import Progress, RepoGraph, Stage, utcnow_iso

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH_SIZE = 100
ATTEMPTS = 3
MODEL = "node2vec"
LEXICAL = "lexical"
"""Name of the sparse (BM25) vector; the dense Node2Vec vector is the unnamed default one."""
INDEXED_FIELDS = ("repo_url", "language", "file_path")
"""Keyword payload indexes: repo_url and language for filtered search, file_path for the
deletion of a repository's stale points."""
NEIGHBOR_FIELDS = ["repo_url", "file_path", "language"]
RRF_K = 60
"""Reciprocal-rank fusion's constant (Cormack et al. 2009): a file at rank r (from 0) of a
result list adds 1 / (RRF_K + r) to its fused score."""
BM25_K1 = 1.2
BM25_B = 0.75

Scope = Literal["repo", "all"]
Mode = Literal["structural", "lexical", "hybrid"]
FailureHook = Callable[[str, int, BaseException], None]
"""Called after every failed attempt with (operation, attempt number from 1, error)."""
ProgressHook = Callable[[Progress], None]
Tokens = Mapping[str, Sequence[str]]
"""Lexical tokens per file path (identifiers, path tokens, imported names)."""


def point_id(repo_url: str, file_path: str) -> str:
    """The point id of a file: UUID5 in the URL namespace of ``f"{repo_url}:{file_path}"``."""
    return str(uuid5(NAMESPACE_URL, f"{repo_url}:{file_path}"))


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A file near the queried one: cosine (structural), BM25 (lexical) or fused (hybrid)."""

    repo_url: str
    file_path: str
    language: str
    score: float


@dataclass(frozen=True, slots=True)
class Sparse:
    """A sparse vector: sorted, distinct indices and their values."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class FilePoint:
    """One file's point as both engines store it."""

    id: str
    dense: list[float]
    sparse: Sparse | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Search:
    """A neighbour query, engine-neutral: which vectors, which files, how many."""

    mode: Mode
    dense: list[float]
    sparse: Sparse | None
    repo_url: str | None
    exclude: str
    limit: int

    @property
    def candidates(self) -> int:
        """How many each ranking contributes to a fusion: deep enough that RRF sees overlap."""
        return max(50, 5 * self.limit)


class FileNotStored(StoreError):
    """The queried file has no vector in the store (never ingested, or removed)."""


class InvalidQuery(StoreError):
    """A neighbour query's parameters are out of range (k, scope or mode)."""


def token_index(token: str) -> int:
    """A token's dimension in the sparse vector: CRC-32 of its UTF-8 bytes (stable, 32-bit)."""
    return zlib.crc32(token.encode("utf-8"))


def lexical_vector(tokens: Sequence[str], mean_length: float) -> Sparse | None:
    """BM25's term weight per token, tf·(k1+1) / (tf + k1·(1 − b + b·len/mean)); None if empty.

    The engine multiplies in each term's IDF at query time (the sparse vector's IDF modifier),
    so a query of the file's distinct terms, each weighted 1, scores documents by BM25.
    """
    if not tokens:
        return None
    counts: Counter[int] = Counter()
    # Count the strings first (C speed), then hash each distinct one; colliding hashes add up.
    for token, tf in Counter(tokens).items():
        counts[zlib.crc32(token.encode("utf-8"))] += tf  # token_index, inlined: the hot loop
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len(tokens) / max(mean_length, 1.0))
    indices = sorted(counts)
    values = [counts[i] * (BM25_K1 + 1.0) / (counts[i] + norm) for i in indices]
    return Sparse(indices, values)


def query_terms(stored: Sparse) -> Sparse:
    """The lexical query of a stored file: each of its distinct terms once (IDF does the rest)."""
    return Sparse(list(stored.indices), [1.0] * len(stored.indices))


def call_with_retries(
    operation: str,
    fn: Callable[[], T],
    *,
    errors: tuple[type[BaseException], ...],
    is_transient: Callable[[BaseException], bool],
    attempts: int = ATTEMPTS,
    backoff_s: float = 0.5,
    on_failure: FailureHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn`; retry the `errors` that `is_transient` accepts, backoff `backoff_s` × 2^(n-1).

    Raises StoreError naming `operation` once `attempts` tries failed, or at once for a
    failure a retry cannot fix. The original error is the StoreError's `__cause__`.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except errors as exc:
            transient = is_transient(exc)
            log.warning("qdrant %s: attempt %d/%d failed: %s", operation, attempt, attempts, exc)
            if on_failure is not None:
                on_failure(operation, attempt, exc)
            if not transient:
                raise StoreError(f"qdrant {operation} was refused: {short(exc)}") from exc
            if attempt == attempts:
                raise StoreError(
                    f"qdrant {operation} failed after {attempts} attempts: {short(exc)}"
                ) from exc
            sleep(backoff_s * 2 ** (attempt - 1))
    raise StoreError(f"qdrant {operation}: attempts must be ≥ 1, got {attempts}")


def short(exc: BaseException, limit: int = 300) -> str:
    """An error's message on one line, at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_query(k: int, scope: str, mode: str) -> None:
    """InvalidQuery unless 1 ≤ k ≤ 1000 and scope and mode are known."""
    if not 1 <= k <= 1000:
        raise InvalidQuery(f"k must be between 1 and 1000, got {k}")
    if scope not in get_args(Scope):
        raise InvalidQuery(f"scope must be one of {', '.join(get_args(Scope))}, got {scope!r}")
    if mode not in get_args(Mode):
        raise InvalidQuery(f"mode must be one of {', '.join(get_args(Mode))}, got {mode!r}")


class VectorStore(ABC):
    """Files' vectors in one Qdrant collection (cosine, `dim`), keyed by repository and path.

    Subclasses supply the engine's requests; the semantics (which points, which payload,
    replace-on-reingest, the query modes) live here, the same for every engine.
    """

    collection: str
    dim: int
    location: str
    """Where the points live: a folder or a server URL (for messages)."""
    _errors: tuple[type[BaseException], ...]

    def __init__(
        self,
        *,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> None:
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._on_failure = on_failure
        self._closed = False

    @staticmethod
    def open(
        settings: Settings,
        *,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> VectorStore:
        """The Qdrant server of `settings.qdrant_url`, else the Edge shard in the data dir."""
        retry: dict[str, Any] = {
            "attempts": attempts,
            "backoff_s": backoff_s,
            "on_failure": on_failure,
        }
        if settings.qdrant_url:
            from neo_ray.stores.qdrant_server import ServerStore

            return ServerStore.connect(settings, **retry)
        from neo_ray.stores.qdrant_edge import EdgeStore

        return EdgeStore.open_in(settings, **retry)

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
        tokens: Tokens | None = None,
        progress: ProgressHook | None = None,
    ) -> int:
        """Store one point per node of `graph` (row i for node i, lexical vector from
        `tokens[path]` when given), then delete the repo's points for files no longer in it.
        Returns the number of points written."""
        self._check_vectors(graph, vectors)
        self._check_tokens(graph, tokens)
        self._ensure_collection()
        points = list(self._points(graph, vectors, repo_url, tokens or {}))
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
            self._delete_all(repo_url)
        return existing

    # --- reads

    def similar(
        self,
        repo_url: str,
        file_path: str,
        k: int = 10,
        *,
        scope: Scope = "repo",
        mode: Mode = "structural",
    ) -> list[Neighbor]:
        """The `k` files nearest to `file_path`, itself excluded, best first.

        `mode`: structural (cosine of Node2Vec vectors), lexical (BM25 of the file's tokens)
        or hybrid (reciprocal-rank fusion of both). Node2Vec spaces of different repositories
        are unrelated, so `scope="repo"` (the default) searches the file's repository only.
        FileNotStored when the file has no point; InvalidQuery for bad parameters.
        """
        check_query(k, scope, mode)
        self._ensure_collection()
        pid = point_id(repo_url, file_path)
        stored = self._stored(pid, f"{repo_url}:{file_path}")
        if stored is None:
            raise FileNotStored(f"{file_path} of {repo_url} has no vector in the store")
        dense, sparse = stored
        if mode == "lexical" and sparse is None:
            return []  # a file without tokens has no lexical neighbours
        search = Search(
            mode=mode,
            dense=dense,
            sparse=query_terms(sparse) if sparse is not None else None,
            repo_url=repo_url if scope == "repo" else None,
            exclude=pid,
            limit=k,
        )
        return self._call(
            f"query of neighbours of {repo_url}:{file_path}", lambda: self._nearest(search)
        )

    @abstractmethod
    def count(self, repo_url: str | None = None) -> int:
        """Points in the collection, or of one repository."""

    @abstractmethod
    def ping(self) -> bool:
        """Whether the store answers now (one attempt, no retries)."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine (and the folder's lock, for an embedded one). Idempotent."""

    # --- what each engine supplies

    @abstractmethod
    def _ensure_collection(self) -> None:
        """Create the collection on first use, or check that the existing one fits."""

    @abstractmethod
    def _upsert(self, points: list[FilePoint], label: str) -> None: ...

    @abstractmethod
    def _delete_stale(self, repo_url: str, keep: list[str]) -> None:
        """Delete the repository's points whose file_path is not in `keep`."""

    @abstractmethod
    def _delete_all(self, repo_url: str) -> None: ...

    @abstractmethod
    def _stored(self, pid: str, label: str) -> tuple[list[float], Sparse | None] | None:
        """A point's dense and sparse vectors, or None when there is no such point."""

    @abstractmethod
    def _nearest(self, search: Search) -> list[Neighbor]:
        """Run one neighbour query (one attempt; `similar` retries it)."""

    @staticmethod
    def _is_transient(exc: BaseException) -> bool:
        return True

    # --- shared internals

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError(f"qdrant {operation}: the vector store is closed")
        return call_with_retries(
            operation,
            fn,
            errors=self._errors,
            is_transient=self._is_transient,
            attempts=self._attempts,
            backoff_s=self._backoff_s,
            on_failure=self._on_failure,
        )

    def _check_vectors(self, graph: RepoGraph, vectors: np.ndarray) -> None:
        expected = (len(graph.nodes), self.dim)
        if vectors.ndim != 2 or vectors.shape != expected:
            raise StoreError(f"vectors have shape {vectors.shape}; expected {expected}")
        if not np.isfinite(vectors).all():
            raise StoreError("vectors contain NaN or infinite values")

    @staticmethod
    def _check_tokens(graph: RepoGraph, tokens: Tokens | None) -> None:
        if not tokens:
            return
        unknown = set(tokens) - {node.path for node in graph.nodes}
        if unknown:
            listed = ", ".join(sorted(unknown)[:5])
            raise StoreError(f"tokens given for {len(unknown)} file(s) not in the graph: {listed}")

    def _points(
        self, graph: RepoGraph, vectors: np.ndarray, repo_url: str, tokens: Tokens
    ) -> Iterator[FilePoint]:
        ins, outs = graph.degrees()
        ingested_at = utcnow_iso()
        rows = vectors.astype(np.float32, copy=False).tolist()
        lengths = [len(t) for t in tokens.values() if t]
        mean_length = math.fsum(lengths) / len(lengths) if lengths else 0.0
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
            sparse = lexical_vector(tokens.get(node.path, ()), mean_length)
            yield FilePoint(point_id(repo_url, node.path), row, sparse, payload)


def neighbor(payload: Mapping[str, Any] | None, score: float) -> Neighbor:
    """A Neighbor from a scored point's payload."""
    fields = payload or {}
    return Neighbor(
        repo_url=str(fields["repo_url"]),
        file_path=str(fields["file_path"]),
        language=str(fields.get("language", "")),
        score=float(score),
    )
