"""Read routes over what was ingested: similar files with evidence, dependency walks, the impact
of a change, and the repositories themselves.

Graph facts come from PostgreSQL (`stores.metadata`); vectors from the Qdrant server when
NEO_QDRANT_URL is set, else from the StoreKeeper actor that owns the embedded store (local
mode). Both are reached lazily on the first request, so importing this module loads neither
Ray nor the vector store's client: the cloud plane stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from neo_ray import names
from neo_ray.config import Mode, Settings
from neo_ray.control import schemas
from neo_ray.control.api import ControlState, _require_admin, get_state
from neo_ray.errors import DatabaseError, InvalidRepoError, NeoRayError, NotFound, StoreError
from neo_ray.models import JobRecord
from neo_ray.repo_url import normalize_repo_url
from neo_ray.stores.metadata import Database, Direction, Overlap, Reached, Repository

if TYPE_CHECKING:
    from neo_ray.stores.vectors import Neighbor

T = TypeVar("T")
StoreScope = Literal["repo", "all"]
StoreMode = Literal["structural", "lexical", "hybrid"]

MAX_DEPTH = 10
# Evidence looks this far for a path between the query and a result; farther is "unrelated".
EVIDENCE_DEPTH = MAX_DEPTH
# A vector call that takes longer than this is a store in trouble, not a slow answer.
VECTOR_TIMEOUT_S = 15.0


class Scope(str, Enum):
    """Where `similar` looks for neighbours."""

    REPO = "repo"
    """The queried file's repository only (Node2Vec spaces of two repositories are unrelated)."""
    ALL = "all"
    """Every ingested repository."""


class SearchMode(str, Enum):
    """Which vectors rank the neighbours."""

    STRUCTURAL = "structural"
    """Node2Vec vectors of the import graph (cosine)."""
    LEXICAL = "lexical"
    """BM25 over identifiers, path tokens and imported names."""
    HYBRID = "hybrid"
    """Both rankings fused by reciprocal rank."""


# Chosen from bench/bench_cochange.py (BENCHMARKS.md, "Search quality against co-change"): on
# 8 repositories with history, lexical neighbours changed together with the file most often
# (precision@5 0.68, recall@10 0.52; hybrid 0.63 and 0.47, structural 0.50 and 0.35, random
# 0.25 and 0.19), and the order held with a stricter truth and another Node2Vec seed.
DEFAULT_MODE = SearchMode.LEXICAL


# --------------------------------------------------------------------------- response models


class Evidence(BaseModel):
    """Why a neighbour may be related, checkable in the import graph."""

    shared_neighbors: list[str] = Field(description="files adjacent to both (either way)")
    graph_distance: int | None = Field(
        description=f"undirected hops between the two files; null beyond {EVIDENCE_DEPTH}, "
        "unconnected, or in another repository"
    )
    common_imports: list[str] = Field(description="files both import")


class SimilarFile(BaseModel):
    repo_url: str
    file_path: str
    language: str
    score: float
    evidence: Evidence


class SimilarQuery(BaseModel):
    repo_url: str
    file_path: str
    language: str | None
    limit: int
    scope: Scope
    mode: SearchMode


class SimilarResponse(BaseModel):
    query: SimilarQuery
    results: list[SimilarFile]


class GraphFile(BaseModel):
    file_path: str
    language: str
    depth: int
    path: list[str] = Field(description="one shortest path: the queried file first, this one last")


class DepthGroup(BaseModel):
    depth: int
    count: int
    files: list[GraphFile]


class GraphResponse(BaseModel):
    repo_url: str
    file_path: str
    direction: str = Field(description="dependencies (what it imports) or dependents")
    depth: int
    total: int
    by_depth: list[DepthGroup]


class ImpactRequest(BaseModel):
    repo_url: str = Field(max_length=2048)
    files: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=10_000, description="repository-relative paths a change touches"
    )
    depth: int | None = Field(
        default=None, ge=1, description="stop this many levels out (default: the whole closure)"
    )


class ImpactResponse(BaseModel):
    repo_url: str
    files: list[str] = Field(description="the changed files that are in the graph")
    not_in_graph: list[str] = Field(description="changed files the graph does not hold")
    total: int
    by_depth: list[DepthGroup]


class RepositoryView(BaseModel):
    id: int
    repo_url: str
    commit_sha: str | None
    files: int
    edges: int
    files_skipped: int
    languages: dict[str, int]
    last_ingested_at: str
    job_id: str | None = Field(description="the job that produced the current graph")


class RepositoryList(BaseModel):
    repositories: list[RepositoryView]
    limit: int
    offset: int


class RepositoryDetail(RepositoryView):
    job: JobRecord | None = Field(description="that job's record, once history holds it")


# --------------------------------------------------------------------------- backends


class VectorReader(Protocol):
    """What the routes need of the vector store."""

    def similar(
        self, repo_url: str, file_path: str, k: int, *, scope: StoreScope, mode: StoreMode
    ) -> list[Neighbor]: ...


class _StoreReader:
    """The Qdrant server, through the vector store's client (opened once per process)."""

    def __init__(self, settings: Settings) -> None:
        from neo_ray.stores.vectors import VectorStore

        self._store = VectorStore.open(settings)

    def similar(
        self, repo_url: str, file_path: str, k: int, *, scope: StoreScope, mode: StoreMode
    ) -> list[Neighbor]:
        return list(self._store.similar(repo_url, file_path, k, scope=scope, mode=mode))


class _ActorReader:
    """The embedded store, through the one actor that owns it (local mode)."""

    def similar(
        self, repo_url: str, file_path: str, k: int, *, scope: StoreScope, mode: StoreMode
    ) -> list[Neighbor]:
        import ray

        if not ray.is_initialized():  # a plain ASGI process: never start or join a cluster here
            raise HTTPException(503, "similarity search needs the Ray app or NEO_QDRANT_URL")
        keeper = ray.get_actor(names.STORE, namespace=names.NAMESPACE)
        ref: Any = keeper.similar.remote(repo_url, file_path, k, scope=scope, mode=mode)
        return list(ray.get(ref, timeout=VECTOR_TIMEOUT_S))


class _Backends:
    """The database pool and vector reader of this process, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        self._db: Database | None = None
        self._vectors: VectorReader | None = None

    def _for(self, settings: Settings) -> None:
        if settings is not self._settings:  # reconfigured (tests): start over
            self._release()
            self._settings = settings

    def _release(self) -> None:
        if self._db is not None:
            self._db.close()
        self._settings, self._db, self._vectors = None, None, None

    def close(self) -> None:
        """Close the pool; the next request opens what it needs again."""
        with self._lock:
            self._release()

    def database(self, settings: Settings) -> Database:
        with self._lock:
            self._for(settings)
            if self._db is None:
                if not settings.database_url:
                    raise HTTPException(503, "graph queries need NEO_DATABASE_URL")
                try:
                    self._db = Database.from_settings(settings)
                except DatabaseError as exc:
                    raise HTTPException(503, f"database unavailable: {exc}") from exc
            return self._db

    def vectors(self, settings: Settings) -> VectorReader:
        with self._lock:
            self._for(settings)
            if self._vectors is None:
                if settings.qdrant_url:
                    self._vectors = _StoreReader(settings)
                elif settings.mode is Mode.CLOUD:
                    raise HTTPException(503, "similarity search needs NEO_QDRANT_URL in cloud mode")
                else:
                    self._vectors = _ActorReader()
            return self._vectors


_backends = _Backends()


def _admin(
    state: Annotated[ControlState, Depends(get_state)],
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> ControlState:
    """The bearer check of the ingestion route: these routes expose repository content."""
    _require_admin(state, authorization, request)
    return state


Admin = Annotated[ControlState, Depends(_admin)]
RepoUrl = Annotated[
    str, Query(min_length=1, max_length=2048, description="as given to the ingest route")
]
FilePath = Annotated[
    str, Query(min_length=1, max_length=4096, description="repository-relative POSIX path")
]
Depth = Annotated[int, Query(ge=1, le=MAX_DEPTH, description="levels to walk (1..10)")]

router = APIRouter(tags=["search"])


def _repo(state: ControlState, repo_url: str) -> str:
    """The canonical form the ingest route stored the repository under (400 if invalid)."""
    settings = state.settings
    try:
        # The ingest route's rules exactly: local paths only under NEO_LOCAL_REPOS_ROOT.
        return normalize_repo_url(
            repo_url,
            allowed_hosts=settings.allowed_hosts,
            allow_local=settings.submission_root is not None,
            local_root=settings.submission_root,
        ).url
    except InvalidRepoError as exc:
        raise HTTPException(400, f"invalid repository URL: {exc}") from exc


def _db_call(fn: Callable[[], T]) -> T:
    """Run a database query: unknown repository or file → 404, PostgreSQL down → 503."""
    try:
        return fn()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except DatabaseError as exc:
        raise HTTPException(503, f"database unavailable: {exc}") from exc


def _groups(reached: Sequence[Reached]) -> list[DepthGroup]:
    """Files by depth, nearest first (the walk returns them sorted by depth, then path)."""
    groups: dict[int, list[GraphFile]] = {}
    for r in reached:
        groups.setdefault(r.depth, []).append(
            GraphFile(file_path=r.path, language=r.language, depth=r.depth, path=list(r.via))
        )
    return [DepthGroup(depth=d, count=len(fs), files=fs) for d, fs in sorted(groups.items())]


def _walk_route(
    state: ControlState, repo_url: str, file_path: str, depth: int, direction: Direction
) -> GraphResponse:
    repo = _repo(state, repo_url)
    db = _backends.database(state.settings)
    reached = _db_call(lambda: db.walk(repo, [file_path], direction, depth))
    return GraphResponse(
        repo_url=repo,
        file_path=file_path,
        direction=direction.value,
        depth=depth,
        total=len(reached),
        by_depth=_groups(reached),
    )


# Every error these routes can give, each with its body's model (`{"detail": ...}`).
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **schemas.errors(400, 401, 503),
    404: {"model": schemas.ErrorBody, "description": "unknown repository or file"},
}


@router.get("/api/v1/graph/dependencies", response_model=GraphResponse, responses=_NOT_FOUND)
def dependencies(
    state: Admin, repo_url: RepoUrl, file_path: FilePath, depth: Depth = 1
) -> GraphResponse:
    """What a file imports, directly (depth 1) or transitively, by depth, each with one
    shortest path."""
    return _walk_route(state, repo_url, file_path, depth, Direction.DEPENDENCIES)


@router.get("/api/v1/graph/dependents", response_model=GraphResponse, responses=_NOT_FOUND)
def dependents(
    state: Admin, repo_url: RepoUrl, file_path: FilePath, depth: Depth = 1
) -> GraphResponse:
    """The files that import a file, directly or transitively, by depth, each with one
    shortest path."""
    return _walk_route(state, repo_url, file_path, depth, Direction.DEPENDENTS)


@router.post("/api/v1/graph/impact", response_model=ImpactResponse, responses=_NOT_FOUND)
def impact(state: Admin, body: ImpactRequest) -> ImpactResponse:
    """Every file that transitively depends on the files a change touches, by depth.

    Changed files the graph does not hold (a README, a deleted file) are listed, not refused:
    `git diff --name-only` names them too.
    """
    repo = _repo(state, body.repo_url)
    db = _backends.database(state.settings)
    known = _db_call(lambda: db.known_files(repo, body.files))
    depth = body.depth if body.depth is not None else 2**31 - 1
    reached = _db_call(lambda: db.walk(repo, known, Direction.DEPENDENTS, depth, strict=False))
    present = set(known)
    return ImpactResponse(
        repo_url=repo,
        files=known,
        not_in_graph=[f for f in dict.fromkeys(body.files) if f not in present],
        total=len(reached),
        by_depth=_groups(reached),
    )


def _repository_view(repo: Repository) -> dict[str, Any]:
    return {
        "id": repo.id,
        "repo_url": repo.repo_url,
        "commit_sha": repo.last_commit_sha,
        "files": repo.files,
        "edges": repo.edges,
        "files_skipped": repo.files_skipped,
        "languages": repo.languages,
        "last_ingested_at": repo.last_ingested_at.isoformat().replace("+00:00", "Z"),
        "job_id": repo.last_job_id,
    }


@router.get(
    "/api/v1/repositories", response_model=RepositoryList, responses=schemas.errors(400, 401, 503)
)
def repositories(
    state: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # PostgreSQL's bigint
) -> RepositoryList:
    """Ingested repositories, most recently ingested first."""
    db = _backends.database(state.settings)
    found = _db_call(lambda: db.repositories(limit, offset))
    return RepositoryList(
        repositories=[RepositoryView(**_repository_view(r)) for r in found],
        limit=limit,
        offset=offset,
    )


@router.get(
    "/api/v1/repositories/{repo_id}",
    response_model=RepositoryDetail,
    responses={
        **schemas.errors(400, 401, 503),
        404: {"model": schemas.ErrorBody, "description": "no such repository"},
    },
)
def repository(state: Admin, repo_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> RepositoryDetail:
    """One repository, with the record of the job that produced its graph."""
    db = _backends.database(state.settings)
    found = _db_call(lambda: db.repository_by_id(repo_id))
    if found is None:
        raise HTTPException(404, f"no repository with id {repo_id}")
    job = None
    if found.last_job_id is not None:
        job = _db_call(lambda: db.job(found.last_job_id or ""))
    return RepositoryDetail(**_repository_view(found), job=job)


@router.get("/api/v1/search/similar", response_model=SimilarResponse, responses=_NOT_FOUND)
def similar(
    state: Admin,
    repo_url: RepoUrl,
    file_path: FilePath,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    scope: Scope = Scope.REPO,
    mode: SearchMode = DEFAULT_MODE,
) -> SimilarResponse:
    """The files nearest to a file (itself excluded), each with evidence from the graph."""
    repo = _repo(state, repo_url)
    settings = state.settings
    db = _backends.database(settings) if settings.database_url else None
    language = None
    if db is not None:  # a clear 404 before asking the vector store
        language = _db_call(lambda: db.language_of(repo, file_path))
    neighbours = _neighbours(settings, repo, file_path, limit, scope, mode)
    results = _with_evidence(db, repo, file_path, neighbours)
    query = SimilarQuery(
        repo_url=repo, file_path=file_path, language=language, limit=limit, scope=scope, mode=mode
    )
    return SimilarResponse(query=query, results=results)


def _with_evidence(
    db: Database | None, repo: str, file_path: str, neighbours: Sequence[Neighbor]
) -> list[SimilarFile]:
    """Each neighbour with what the graph says of it and the queried file (nothing for a
    file of another repository: their graphs do not meet)."""
    same = [n.file_path for n in neighbours if n.repo_url == repo]
    overlaps: dict[str, Overlap] = {}
    distances: dict[str, int] = {}
    if db is not None and same:
        overlaps = _db_call(lambda: db.overlaps(repo, file_path, same))
        distances = _db_call(lambda: db.distances(repo, file_path, same, EVIDENCE_DEPTH))
    results = []
    for n in neighbours:
        here = n.repo_url == repo
        overlap = overlaps.get(n.file_path) if here else None
        evidence = Evidence(
            shared_neighbors=list(overlap.shared_neighbors) if overlap else [],
            graph_distance=distances.get(n.file_path) if here else None,
            common_imports=list(overlap.common_imports) if overlap else [],
        )
        results.append(
            SimilarFile(
                repo_url=n.repo_url,
                file_path=n.file_path,
                language=n.language,
                score=n.score,
                evidence=evidence,
            )
        )
    return results


def _neighbours(
    settings: Settings, repo: str, file_path: str, limit: int, scope: Scope, mode: SearchMode
) -> list[Neighbor]:
    """The vector store's answer; its refusals as 404 (no vector) or 503 (store down)."""
    from neo_ray.stores.vectors import FileNotStored  # numpy with it: not at import time

    try:
        reader = _backends.vectors(settings)
        return reader.similar(repo, file_path, limit, scope=scope.value, mode=mode.value)
    except HTTPException:
        raise
    except FileNotStored as exc:
        raise HTTPException(404, str(exc)) from exc
    except StoreError as exc:
        raise HTTPException(503, f"vector store unavailable: {exc}") from exc
    except NeoRayError:
        raise
    except Exception as exc:  # the actor unreachable or timed out (Ray's own errors)
        raise HTTPException(503, f"vector store unavailable: {type(exc).__name__}: {exc}") from exc
