"""The vector store on a Qdrant server or Qdrant Cloud, through qdrant-client.

The only module that imports qdrant_client. Chosen when `NEO_QDRANT_URL` is set (with
`NEO_QDRANT_API_KEY` for Qdrant Cloud). Several workers share the collection, so its creation
is safe when two race: the loser's "already exists" is answered by checking the collection's
configuration and moving on. qdrant-client's local mode (`QdrantClient(path=...)`) speaks the
same API, which is how the tests run this module without a server, and how an old neo-ray data
directory is read for migration (`read_local_mode`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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
)

# Errors a later attempt may not meet again: the network, a busy server, local-mode storage
# (a folder or SQLite file another writer holds). 4xx answers and ValueError are final.
_TRANSIENT = (ResponseHandlingException, UnexpectedResponse, OSError, RuntimeError, sqlite3.Error)
_FINAL = (ValueError,)
_LOCKED = "already accessed by another instance"


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may succeed: 5xx, 408, 429, network and storage errors; not 4xx."""
    if isinstance(exc, UnexpectedResponse):
        code = exc.status_code or 0
        return code >= 500 or code in (408, 429)
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, _FINAL)


RETRIED = (*_TRANSIENT, *_FINAL)
"""What the store catches from qdrant-client (`is_transient` sorts it)."""


class ServerStore(VectorStore):
    """Node2Vec and BM25 vectors of files in a Qdrant server's collection."""

    _errors = RETRIED

    def __init__(
        self,
        client: QdrantClient,
        *,
        collection: str,
        dim: int,
        local: bool,
        location: str,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> None:
        super().__init__(attempts=attempts, backoff_s=backoff_s, on_failure=on_failure)
        self._client = client
        self.collection = collection
        self.dim = dim
        self.local = local
        self.location = location
        self._ready = False

    @classmethod
    def connect(
        cls,
        settings: Settings,
        *,
        attempts: int = ATTEMPTS,
        backoff_s: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> ServerStore:
        """A client of `settings.qdrant_url` (with its API key); connects on first request."""
        if not settings.qdrant_url:
            raise StoreError("NEO_QDRANT_URL is not set: no Qdrant server to connect to")
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        # The version check runs in a thread and only warns; ping() says more.
        client = QdrantClient(url=settings.qdrant_url, api_key=key, check_compatibility=False)
        return cls(
            client,
            collection=settings.qdrant_collection,
            dim=settings.dim,
            local=False,
            location=settings.qdrant_url,
            attempts=attempts,
            backoff_s=backoff_s,
            on_failure=on_failure,
        )

    @staticmethod
    def _is_transient(exc: BaseException) -> bool:
        return is_transient(exc)

    # --- the interface

    def count(self, repo_url: str | None = None) -> int:
        self._ensure_collection()
        flt = _repo_filter(repo_url) if repo_url is not None else None
        result = self._call(
            f"count of {repo_url or 'all repositories'}",
            lambda: self._client.count(self.collection, count_filter=flt, exact=True),
        )
        return int(result.count)

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            self._client.get_collections()
        except RETRIED:
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # --- writes

    def _upsert(self, points: list[FilePoint], label: str) -> None:
        structs = [_struct(p) for p in points]
        self._call(
            f"upsert of points {label}",
            lambda: self._client.upsert(self.collection, points=structs, wait=True),
        )

    def _delete_stale(self, repo_url: str, keep: list[str]) -> None:
        kept: list[models.Condition] = (
            [models.FieldCondition(key="file_path", match=models.MatchAny(any=keep))]
            if keep
            else []
        )
        self._delete(
            f"delete of stale points of {repo_url}",
            models.Filter(must=[_match("repo_url", repo_url)], must_not=kept),
        )

    def _delete_all(self, repo_url: str) -> None:
        self._delete(f"delete of {repo_url}", _repo_filter(repo_url))

    def _delete(self, operation: str, flt: models.Filter) -> None:
        selector = models.FilterSelector(filter=flt)
        self._call(
            operation,
            lambda: self._client.delete(self.collection, points_selector=selector, wait=True),
        )

    # --- reads

    def _stored(self, pid: str, label: str) -> tuple[list[float], Sparse | None] | None:
        records = self._call(
            f"retrieve of {label}",
            lambda: self._client.retrieve(self.collection, ids=[pid], with_vectors=True),
        )
        if not records:
            return None
        vector = records[0].vector
        if isinstance(vector, list):  # a point written before the lexical vector existed
            only: Any = vector
            return [float(x) for x in only], None
        if not isinstance(vector, dict) or not isinstance(vector.get(""), list):
            return None
        lexical = vector.get(LEXICAL)
        sparse = (
            Sparse(list(lexical.indices), list(lexical.values))
            if isinstance(lexical, models.SparseVector)
            else None
        )
        dense: Any = vector[""]
        return [float(x) for x in dense], sparse

    def _nearest(self, search: Search) -> list[Neighbor]:
        flt = _search_filter(search)
        if search.mode == "structural":
            query: Any = search.dense
            prefetch = None
            using = None
        elif search.mode == "lexical" and search.sparse is not None:
            query, prefetch, using = _sparse(search.sparse), None, LEXICAL
        else:
            query = models.RrfQuery(rrf=models.Rrf(k=RRF_K))
            prefetch = _prefetches(search, flt)
            using = None
        response = self._client.query_points(
            self.collection,
            query=query,
            using=using,
            prefetch=prefetch,
            query_filter=flt,
            limit=search.limit,
            with_payload=NEIGHBOR_FIELDS,
        )
        return [neighbor(p.payload, p.score) for p in response.points]

    # --- the collection

    def _ensure_collection(self) -> None:
        """Create the collection on first use, or check (and complete) the existing one."""
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
            # Creating an index that exists is a no-op on the server, so racing workers agree.
            for field in INDEXED_FIELDS:
                self._create_index(field)
        self._ready = True

    def _create_index(self, field: str) -> None:
        schema = models.PayloadSchemaType.KEYWORD
        self._call(
            f"index of {field} in {self.collection}",
            lambda: self._client.create_payload_index(self.collection, field, field_schema=schema),
        )

    def _create_collection(self) -> None:
        name = self.collection
        try:
            self._call(
                f"creation of collection {name}",
                lambda: self._client.create_collection(
                    name,
                    vectors_config=models.VectorParams(
                        size=self.dim, distance=models.Distance.COSINE
                    ),
                    sparse_vectors_config={LEXICAL: _SPARSE_PARAMS},
                ),
            )
        except StoreError:
            # Another worker created it since our check (a server answers 409, local mode
            # raises ValueError): if it is there now, check that it fits and move on.
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
            raise StoreError(f"collection {name} uses named dense vectors; neo-ray needs one")
        if params.size != self.dim or params.distance != models.Distance.COSINE:
            raise StoreError(
                f"collection {name} holds {params.size}-dimensional {params.distance.value} "
                f"vectors, but neo-ray writes {self.dim}-dimensional Cosine ones: set "
                "NEO_QDRANT_COLLECTION to another name, or NEO_DIM to match"
            )
        sparse = info.config.params.sparse_vectors or {}
        if LEXICAL not in sparse:
            self._add_lexical_vector()
        elif sparse[LEXICAL].modifier != models.Modifier.IDF:
            raise StoreError(
                f"collection {name}'s sparse vector '{LEXICAL}' has no IDF modifier: set "
                "NEO_QDRANT_COLLECTION to another name, or recreate the collection"
            )

    def _add_lexical_vector(self) -> None:
        """A collection from before lexical search: add the sparse vector (Qdrant ≥ 1.17)."""
        name = self.collection
        config = models.SparseVectorNameConfig(sparse=_SPARSE_CONFIG)
        try:
            self._call(
                f"addition of the '{LEXICAL}' sparse vector to collection {name}",
                lambda: self._client.create_vector_name(name, LEXICAL, config, wait=True),
            )
        except StoreError as exc:
            raise StoreError(
                f"collection {name} predates lexical search and the server would not add its "
                f"'{LEXICAL}' sparse vector ({exc}): upgrade the server, or set "
                "NEO_QDRANT_COLLECTION to a new collection and ingest again"
            ) from exc.__cause__


_SPARSE_PARAMS = models.SparseVectorParams(modifier=models.Modifier.IDF)
_SPARSE_CONFIG = models.SparseVectorConfig(modifier=models.Modifier.IDF)


def _struct(point: FilePoint) -> models.PointStruct:
    vector: dict[str, Any] = {"": point.dense}
    if point.sparse is not None:
        vector[LEXICAL] = _sparse(point.sparse)
    return models.PointStruct(id=point.id, vector=vector, payload=point.payload)


def _sparse(sparse: Sparse) -> models.SparseVector:
    return models.SparseVector(indices=sparse.indices, values=sparse.values)


def _prefetches(search: Search, flt: models.Filter) -> list[models.Prefetch]:
    """The two rankings a hybrid query fuses (only the dense one for a file without tokens)."""
    found = [models.Prefetch(query=search.dense, filter=flt, limit=search.candidates)]
    if search.sparse is not None:
        found.append(
            models.Prefetch(
                query=_sparse(search.sparse), using=LEXICAL, filter=flt, limit=search.candidates
            )
        )
    return found


def _search_filter(search: Search) -> models.Filter:
    must: list[models.Condition] = (
        [_match("repo_url", search.repo_url)] if search.repo_url is not None else []
    )
    return models.Filter(must=must, must_not=[models.HasIdCondition(has_id=[search.exclude])])


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _repo_filter(repo_url: str) -> models.Filter:
    return models.Filter(must=[_match("repo_url", repo_url)])


# --- qdrant-client's local mode: the tests' engine, and the old data directory's format


def open_local_mode(
    path: Path,
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = 0.5,
    on_failure: FailureHook | None = None,
) -> QdrantClient:
    """Open a local-mode folder, telling the caller plainly when another process owns it."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        return call_with_retries(
            f"open of the local store at {path}",
            lambda: QdrantClient(path=str(path)),
            errors=RETRIED,
            is_transient=is_transient,
            attempts=attempts,
            backoff_s=backoff_s,
            on_failure=on_failure,
        )
    except StoreError as exc:
        if _LOCKED in str(exc.__cause__):
            raise StoreError(
                f"the Qdrant local-mode folder {path} is owned by another process (it lets "
                "one process open it): stop that process first"
            ) from exc.__cause__
        raise


def local_mode_store(path: Path, settings: Settings, **retry: Any) -> ServerStore:
    """This store on qdrant-client's local mode in `path` (tests, benchmarks)."""
    client = open_local_mode(path, **retry)
    return ServerStore(
        client,
        collection=settings.qdrant_collection,
        dim=settings.dim,
        local=True,
        location=str(path),
        **retry,
    )


def read_local_mode(path: Path, collection: str, dim: int) -> Iterator[FilePoint]:
    """Every point of `collection` in an old local-mode folder (none when it has no such
    collection); StoreError when its vectors are not `dim`-dimensional."""
    client = open_local_mode(path, attempts=1)
    try:
        if not client.collection_exists(collection):
            return
        params = client.get_collection(collection).config.params.vectors
        size = params.size if isinstance(params, models.VectorParams) else None
        if size != dim:
            raise StoreError(
                f"the old local-mode store {path} holds {size}-dimensional vectors in "
                f"{collection}, but neo-ray writes {dim}: set NEO_DIM={size} to migrate it, "
                "or move the folder away to start empty"
            )
        offset: Any = None
        while True:
            records, offset = client.scroll(
                collection, limit=1000, offset=offset, with_payload=True, with_vectors=True
            )
            for record in records:
                yield _file_point(record)
            if offset is None:
                return
    finally:
        client.close()


def _file_point(record: models.Record) -> FilePoint:
    vector = record.vector
    dense = vector.get("") if isinstance(vector, dict) else vector
    if not isinstance(dense, list):
        raise StoreError(f"point {record.id} of the old local-mode store has no dense vector")
    return FilePoint(str(record.id), [float(x) for x in dense], None, dict(record.payload or {}))  # type: ignore[arg-type]
