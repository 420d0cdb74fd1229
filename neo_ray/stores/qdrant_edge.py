"""The embedded vector store: Qdrant's own engine in process (qdrant-edge-py), the default.

The only module that imports qdrant_edge. The shard lives in `NEO_DATA_DIR/qdrant-edge/
<collection>`; its write-ahead log is locked to one process, so in local mode one actor
(the StoreKeeper) owns it and every read or write goes through that actor. Each update is in
the WAL when `update` returns and is replayed if the process dies, as a Qdrant server does;
segments are flushed when the store closes (a flush per repository cost more than the upload).

A data directory from the earlier qdrant-client local mode (`NEO_DATA_DIR/qdrant`) is migrated
into the shard on first open and kept aside as `qdrant.migrated`; one that cannot be migrated
is refused with a message that says what to do, never ignored.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    Fusion,
    HasIdCondition,
    MatchAny,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    PayloadSelector,
    Point,
    Prefetch,
    Query,
    QueryRequest,
    SparseVector,
    UpdateOperation,
)

from neo_ray.config import Settings
from neo_ray.errors import StoreError
from neo_ray.stores.vectors import (
    ATTEMPTS,
    INDEXED_FIELDS,
    LEXICAL,
    NEIGHBOR_FIELDS,
    RRF_K,
    FailureHook,
    FilePoint,
    Neighbor,
    Search,
    Sparse,
    VectorStore,
    call_with_retries,
    neighbor,
    short,
)

log = logging.getLogger(__name__)

EDGE_DIR = "qdrant-edge"
OLD_LOCAL_DIR = "qdrant"
MIGRATED_SUFFIX = ".migrated"
# The engine raises plain Exception with a message; a held WAL lock ("WouldBlock") and I/O
# errors may clear, anything else (an incompatible config, a bad request) will not.
_TRANSIENT_MARKS = ("WouldBlock", "Resource temporarily unavailable", "I/O error", "Io error")


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: a lock another owner holds, or I/O."""
    return isinstance(exc, OSError) or any(mark in str(exc) for mark in _TRANSIENT_MARKS)


def _locked(exc: BaseException | None) -> bool:
    return exc is not None and "WouldBlock" in str(exc)


class EdgeStore(VectorStore):
    """Node2Vec and BM25 vectors of files in a Qdrant Edge shard on local disk."""

    _errors = (Exception,)

    def __init__(
        self,
        shard: EdgeShard,
        *,
        collection: str,
        dim: int,
        path: Path,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> None:
        super().__init__(attempts=attempts, backoff_s=backoff_s, on_failure=on_failure)
        self._shard = shard
        self.collection = collection
        self.dim = dim
        self.location = str(path)

    @classmethod
    def open_in(
        cls,
        settings: Settings,
        *,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> EdgeStore:
        """Open (or create) the shard of `settings.qdrant_collection` in the data directory,
        migrating an old local-mode folder first when there is one."""
        path = shard_path(settings)
        retry: dict[str, Any] = {
            "attempts": attempts,
            "backoff_s": backoff_s,
            "on_failure": on_failure,
        }
        old = settings.data_dir / OLD_LOCAL_DIR
        if old.exists():
            migrate_local_mode(old, path, settings)
        shard = _open_shard(path, _config(settings.dim), **retry)
        store = cls(
            shard, collection=settings.qdrant_collection, dim=settings.dim, path=path, **retry
        )
        store._ensure_indexes()
        return store

    @staticmethod
    def _is_transient(exc: BaseException) -> bool:
        return is_transient(exc)

    # --- the interface

    def count(self, repo_url: str | None = None) -> int:
        flt = _repo_filter(repo_url) if repo_url is not None else None
        return self._call(
            f"count of {repo_url or 'all repositories'}",
            lambda: self._shard.count(CountRequest(filter=flt, exact=True)),
        )

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            self._shard.info()
        except Exception:  # the engine raises plain Exception
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._shard.flush()
            finally:
                self._shard.close()

    # --- writes

    def _ensure_collection(self) -> None:
        """The shard is the collection: opening it created or checked it."""

    def _ensure_indexes(self) -> None:
        have = self._call("read of the shard's indexes", lambda: self._shard.info()).payload_schema
        for field in INDEXED_FIELDS:
            if field not in have:
                self._create_index(field)

    def _create_index(self, field: str) -> None:
        operation = UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword)
        self._call(f"index of {field}", lambda: self._shard.update(operation))

    def _upsert(self, points: list[FilePoint], label: str) -> None:
        operation = UpdateOperation.upsert_points([_point(p) for p in points])
        self._call(f"upsert of points {label}", lambda: self._shard.update(operation))

    def _delete_stale(self, repo_url: str, keep: list[str]) -> None:
        kept: list[Any] = [FieldCondition("file_path", match=MatchAny(keep))] if keep else []
        stale = Filter(must=[_match("repo_url", repo_url)], must_not=kept)
        operation = UpdateOperation.delete_points_by_filter(stale)
        self._call(f"delete of stale points of {repo_url}", lambda: self._shard.update(operation))

    def _delete_all(self, repo_url: str) -> None:
        operation = UpdateOperation.delete_points_by_filter(_repo_filter(repo_url))
        self._call(f"delete of {repo_url}", lambda: self._shard.update(operation))

    # --- reads

    def _stored(self, pid: str, label: str) -> tuple[list[float], Sparse | None] | None:
        records = self._call(
            f"retrieve of {label}",
            lambda: self._shard.retrieve([pid], with_payload=False, with_vector=True),
        )
        if not records:
            return None
        vector = records[0].vector
        if isinstance(vector, list):  # a point without a sparse vector comes back as a list
            only: Any = vector
            return [float(x) for x in only], None
        if not isinstance(vector, dict) or not isinstance(vector.get(""), list):
            return None
        lexical = vector.get(LEXICAL)
        sparse = (
            Sparse(list(lexical.indices), [float(v) for v in lexical.values])
            if isinstance(lexical, SparseVector)
            else None
        )
        dense: Any = vector[""]
        return [float(x) for x in dense], sparse

    def _nearest(self, search: Search) -> list[Neighbor]:
        flt = _search_filter(search)
        fields = PayloadSelector.Include(NEIGHBOR_FIELDS)
        if search.mode == "structural":
            request = QueryRequest(
                limit=search.limit, query=Query.Nearest(search.dense), filter=flt,
                with_payload=fields,
            )  # fmt: skip
        elif search.mode == "lexical" and search.sparse is not None:
            request = QueryRequest(
                limit=search.limit, query=Query.Nearest(_sparse(search.sparse), using=LEXICAL),
                filter=flt, with_payload=fields,
            )  # fmt: skip
        else:
            request = QueryRequest(
                limit=search.limit, prefetches=_prefetches(search, flt),
                query=_RRF, filter=flt, with_payload=fields,
            )  # fmt: skip
        return [neighbor(p.payload, p.score) for p in self._shard.query(request)]


# The stub types Fusion's members apart from the Fusion the query accepts; the engine takes it.
_RRF: Any = Fusion.Rrf(k=RRF_K)


def shard_path(settings: Settings) -> Path:
    """Where the shard of the settings' collection lives."""
    return settings.data_dir / EDGE_DIR / settings.qdrant_collection


def _config(dim: int) -> EdgeConfig:
    return EdgeConfig(
        vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine),
        sparse_vectors={LEXICAL: EdgeSparseVectorParams(modifier=Modifier.Idf)},
    )


def _open_shard(path: Path, config: EdgeConfig, **retry: Any) -> EdgeShard:
    """Load the shard at `path` (checking it against `config`), or create it there."""
    exists = (path / "edge_config.json").exists()

    def attempt() -> EdgeShard:
        if exists:
            return EdgeShard.load(str(path), config)
        path.mkdir(parents=True, exist_ok=True)
        return EdgeShard.create(str(path), config)

    try:
        return call_with_retries(
            f"open of the Edge shard at {path}",
            attempt,
            errors=(Exception,),
            is_transient=is_transient,
            **retry,
        )
    except StoreError as exc:
        raise _open_error(path, exc) from exc.__cause__


def _open_error(path: Path, exc: StoreError) -> StoreError:
    cause = exc.__cause__
    if _locked(cause):
        return StoreError(
            f"the embedded Qdrant shard at {path} is owned by another process (one process "
            "opens it at a time): route access through that process (the StoreKeeper actor "
            "of a running system), stop it, or set NEO_QDRANT_URL to use a Qdrant server"
        )
    if cause is not None and "incompatible" in str(cause).lower():
        return StoreError(
            f"the embedded Qdrant shard at {path} does not fit neo-ray's vectors "
            f"({short(cause)}): set NEO_QDRANT_COLLECTION to another name, or NEO_DIM to match"
        )
    return exc


def migrate_local_mode(old: Path, path: Path, settings: Settings) -> int:
    """Move the points of an old qdrant-client local-mode folder into the Edge shard.

    Built in a side folder and renamed into place, then the old folder is renamed to
    `qdrant.migrated` (kept: deleting data is the user's call). Returns the points moved.
    """
    from neo_ray.stores.qdrant_server import read_local_mode

    if path.exists():
        raise StoreError(
            f"both the old Qdrant local-mode folder {old} and the Edge shard {path} exist, "
            f"so neo-ray cannot tell which is current: move {old} away to keep the Edge "
            f"shard, or delete {path} to migrate {old} into it again"
        )
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a migration that stopped half-way
    partial.mkdir(parents=True)
    shard = EdgeShard.create(str(partial), _config(settings.dim))
    moved = 0
    try:
        batch: list[Point] = []
        for point in read_local_mode(old, settings.qdrant_collection, settings.dim):
            batch.append(_point(point))
            if len(batch) == 1000:
                shard.update(UpdateOperation.upsert_points(batch))
                moved, batch = moved + len(batch), []
        if batch:
            shard.update(UpdateOperation.upsert_points(batch))
            moved += len(batch)
        shard.flush()
    finally:
        shard.close()
    partial.rename(path)
    old.rename(_free_name(old.with_name(old.name + MIGRATED_SUFFIX)))
    log.warning(
        "migrated %d points from the old Qdrant local-mode folder %s into the embedded Qdrant "
        "shard %s; the old folder is kept as %s%s and can be deleted; lexical vectors come "
        "with each repository's next ingestion",
        moved, old, path, old.name, MIGRATED_SUFFIX,
    )  # fmt: skip
    return moved


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, … : the first that does not exist."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _point(point: FilePoint) -> Point:
    vector: dict[str, Any] = {"": point.dense}
    if point.sparse is not None:
        vector[LEXICAL] = _sparse(point.sparse)
    return Point(point.id, vector, point.payload)


def _sparse(sparse: Sparse) -> SparseVector:
    return SparseVector(sparse.indices, sparse.values)


def _prefetches(search: Search, flt: Filter) -> list[Prefetch]:
    """The two rankings a hybrid query fuses (only the dense one for a file without tokens)."""
    found = [Prefetch(query=Query.Nearest(search.dense), filter=flt, limit=search.candidates)]
    if search.sparse is not None:
        sparse = Query.Nearest(_sparse(search.sparse), using=LEXICAL)
        found.append(Prefetch(query=sparse, filter=flt, limit=search.candidates))
    return found


def _search_filter(search: Search) -> Filter:
    must: list[Any] = [_match("repo_url", search.repo_url)] if search.repo_url else []
    return Filter(must=must, must_not=[HasIdCondition({search.exclude})])


def _match(key: str, value: str) -> FieldCondition:
    return FieldCondition(key, match=MatchValue(value))


def _repo_filter(repo_url: str) -> Filter:
    return Filter(must=[_match("repo_url", repo_url)])
