"""HTTP routes of the control plane: authenticate, validate, gate and enqueue; read status.

The routes hold no job state: everything they answer comes from Redis (and, for /health, a
ping of each store). HTTP status codes are chosen here and nowhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from neo_ray.config import Settings
from neo_ray.control import dashboard, schemas
from neo_ray.control.schemas import (
    Health,
    HistoryMetrics,
    IngestAccepted,
    JobHistory,
    JobView,
    LiveJob,
    WorkerStatus,
    WorkerView,
)
from neo_ray.errors import InvalidRepoError, NeoRayError, QueueError, QueueFull
from neo_ray.models import (
    JobRecord,
    JobState,
    JobStatus,
    Stage,
    Task,
    WorkerHeartbeat,
    WorkerState,
)
from neo_ray.repo_url import normalize_repo_url, validate_git_ref
from neo_ray.stores.queue import Broker, EnqueueResult, dedupe_key_for
from neo_ray.timeutil import format_utc, parse_utc, utcnow_iso

log = logging.getLogger(__name__)

API = "/api/v1/ingestion"
# Some clients and proxies fold the "//" of a URL embedded in a path into "/".
_FOLDED_SCHEME = re.compile(r"^(https?):/(?!/)", re.IGNORECASE)

HealthCheck = Callable[[], bool]


class _AnyPath(Convertor[str]):
    """Starlette's `path` with line breaks too: its `.*` stops at one, which turned a URL
    with an encoded newline into a bare 404 instead of the route's reasoned 400."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())
# A job id as the schema documents it (the route also checks it with uuid.UUID).
_UUID = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


class StatusCache:
    """The last `/worker/status` body, shared by the requests that come while it is young.

    Dashboards poll the status; under load every request would otherwise make its own Redis
    round trip (and, over Upstash REST, spend a command). Heartbeats change every couple of
    seconds, so a snapshot younger than `max_age_s` is as good as a fresh one. Past that, one
    request refreshes it in the background while the others still get the previous one, for
    up to `STALE_FACTOR` times the age; older than that (Redis down, say), requests wait for
    the refresh and see its error.
    """

    STALE_FACTOR = 4

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._body: Any = None
        self._at = float("-inf")
        self._task: asyncio.Task[Any] | None = None

    async def get(self, read: Callable[[], Any]) -> Any:
        age = time.monotonic() - self._at
        if age < self.max_age_s:
            return self._body
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._refresh(read))
            self._task.add_done_callback(_retrieve)
        if age < self.max_age_s * self.STALE_FACTOR:
            return self._body  # slightly stale: answered now, refreshed in the background
        return await asyncio.shield(self._task)

    async def _refresh(self, read: Callable[[], Any]) -> Any:
        body = await run_in_threadpool(read)
        self._body, self._at = body, time.monotonic()
        return body


def _retrieve(task: asyncio.Task[Any]) -> None:
    # A background refresh nobody awaited may fail; its error shows on a later request.
    if not task.cancelled():
        task.exception()


class ControlState:
    """What the routes need: the settings, the broker, and a health check per store."""

    def __init__(
        self, settings: Settings, broker: Broker, checks: dict[str, HealthCheck | None]
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.checks = checks
        self.status_cache = StatusCache(settings.status_cache_s)


_state: ControlState | None = None


def configure(state: ControlState, app: FastAPI | None = None) -> None:
    """Install the state the routes read: on `app` (plain ASGI, one per app), else for the
    whole process (the Serve replica)."""
    global _state
    if app is not None:
        app.state.control = state
    else:
        _state = state


async def get_state(request: Request) -> ControlState:
    # async: a sync dependency costs every request a hop through the thread pool.
    state = getattr(request.app.state, "control", None) or _state
    if state is None:
        raise HTTPException(503, "control plane is starting")
    return state


State = Annotated[ControlState, Depends(get_state)]
router = APIRouter()


def client_of(request: Request) -> str:
    """Who asked, for the log: the peer's address, and what a proxy in front says it forwarded
    (named as such: a client can write that header itself)."""
    peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    return f"{peer} (forwarded for {forwarded[:200]!r})" if forwarded else peer


def _require_admin(state: ControlState, authorization: str | None, request: Request) -> None:
    """Bearer auth with a constant-time compare; no token configured → 503, never open.

    A refusal is logged with the client's address and the route, never with what was presented.
    """
    token = state.settings.admin_token
    if token is None:
        raise HTTPException(503, "ingestion is disabled: PHAROS_ADMIN_TOKEN is not configured")
    scheme, _, presented = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    given = presented.strip().encode()
    if scheme.lower() != "bearer" or not given or not hmac.compare_digest(given, expected):
        log.warning(
            "refused %s %s from %s: %s bearer token",
            request.method,
            request.url.path,
            client_of(request),
            "wrong" if given else "no",
        )
        raise HTTPException(
            401,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="neo-ray"'},
        )


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, f"queue unavailable: {exc}")


@router.post(
    f"{API}/ingest/{{repo_url:anypath}}",
    status_code=202,
    response_model=IngestAccepted,
    responses={
        200: {"model": IngestAccepted, "description": "Already queued or running: that job"},
        **schemas.errors(400, 401, 429, 503),
    },
)
def ingest(
    repo_url: Annotated[str, Path(description="github.com/owner/repo or https://host/owner/repo")],
    state: State,
    request: Request,
    response: Response,
    authorization: Annotated[str | None, Header()] = None,
    ref: Annotated[str | None, Query(max_length=255, description="branch or tag")] = None,
) -> IngestAccepted:
    """Queue a repository for ingestion (202), or return the job already queued for it (200)."""
    _require_admin(state, authorization, request)
    settings = state.settings
    try:
        repo = normalize_repo_url(
            _FOLDED_SCHEME.sub(r"\1://", repo_url),
            allowed_hosts=settings.allowed_hosts,
            allow_local=settings.submission_root is not None,
            local_root=settings.submission_root,
        )
        ref = validate_git_ref(ref)
    except InvalidRepoError as exc:
        raise HTTPException(400, f"invalid repository URL: {exc}") from exc
    task = Task(
        job_id=str(uuid.uuid4()),
        repo_url=repo.url,
        ref=ref,
        submitted_at=utcnow_iso(),
        ttl_seconds=settings.task_ttl_s,
    )
    try:
        result = state.broker.enqueue(
            task, cap=settings.max_queue_size, dedupe_key=dedupe_key_for(repo.url, ref)
        )
        status = JobStatus.QUEUED if result.created else _current_status(state.broker, result.task)
    except QueueFull as exc:
        raise HTTPException(
            429, str(exc), headers={"Retry-After": str(settings.retry_after_s)}
        ) from exc
    except QueueError as exc:
        raise _unavailable(exc) from exc
    response.status_code = 202 if result.created else 200
    return _accepted(result, status, settings.max_queue_size)


def _accepted(result: EnqueueResult, status: JobStatus, cap: int) -> IngestAccepted:
    """The answer to a submission: the job queued (or found queued) and when it expires."""
    job = result.task
    expires = parse_utc(job.submitted_at) + timedelta(seconds=job.ttl_seconds)
    return IngestAccepted(
        job_id=job.job_id,
        status=status,
        repo_url=job.repo_url,
        ref=job.ref,
        queue_position=result.queue_position,
        queue_size=result.queue_size,
        max_queue_size=cap,
        expires_at=format_utc(expires, micros=False),
    )


def _current_status(broker: Broker, task: Task) -> JobStatus:
    """The status of the job already queued for a resubmission (its hash says)."""
    job = broker.get_job(task.job_id)
    return job.state if job is not None else JobStatus.QUEUED


def _overall_status(workers: list[WorkerHeartbeat]) -> str:
    """The seed's one-line status: Offline, Error: ..., Training Graph on ..., or Idle."""
    if not workers:
        return WorkerState.OFFLINE.value
    for wanted in (WorkerState.BUSY, WorkerState.ERROR):
        found = [w for w in workers if w.state is wanted]
        if found:
            return found[0].status
    return WorkerState.IDLE.value


@router.get(f"{API}/worker/status", response_model=WorkerStatus, responses=schemas.errors(503))
async def worker_status(state: State) -> WorkerStatus:
    """Every live worker (heartbeat within the TTL), the queue and what is being processed."""
    try:
        body = await state.status_cache.get(lambda: _status_body(state.broker))
    except QueueError as exc:
        raise _unavailable(exc) from exc
    return body


def _status_body(broker: Broker) -> WorkerStatus:
    # One round trip (status.lua): each extra one is a cross-process wake-up on a CPU the
    # server shares with Redis and, in local mode, a training worker (BENCHMARKS.md).
    snapshot = broker.status()
    return WorkerStatus(
        status=_overall_status(snapshot.workers),
        workers=[WorkerView.of(w) for w in snapshot.workers],
        queue_size=snapshot.queue_size,
        processing=snapshot.processing,
        dead=snapshot.dead,
    )


def history_metrics(records: list[JobRecord], now: datetime | None = None) -> HistoryMetrics:
    """Success, error and skip rates, mean duration of completed jobs, completions per hour."""
    total = len(records)
    done = [r for r in records if r.status == JobStatus.COMPLETE]
    failed = sum(r.status == JobStatus.FAILED for r in records)
    skipped = sum(r.status == JobStatus.SKIPPED for r in records)
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=1)
    recent = sum(parse_utc(r.timestamp) >= cutoff for r in done)

    def rate(n: int) -> float:
        return round(n / total, 4) if total else 0.0

    mean = sum(r.duration_seconds for r in done) / len(done) if done else 0.0
    return HistoryMetrics(
        success_rate=rate(len(done)),
        average_duration_s=round(mean, 3),
        throughput_per_hour=float(recent),
        error_rate=rate(failed),
        skip_rate=rate(skipped),
    )


@router.get(
    f"{API}/jobs/history",
    response_model=JobHistory,
    responses=schemas.errors(400, 503),
)
def jobs_history(state: State, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> JobHistory:
    """The newest `limit` job records; metrics over every record Redis keeps (up to 100)."""
    try:
        records = state.broker.history(100)
    except QueueError as exc:
        raise _unavailable(exc) from exc
    return JobHistory(jobs=records[:limit], metrics=history_metrics(records))


@router.get(
    f"{API}/jobs/{{job_id}}",
    response_model=JobView,
    responses=schemas.errors(400, 404, 503),
)
def job(
    job_id: Annotated[str, Path(pattern=_UUID, description="the job's id (a UUID)")],
    state: State,
) -> LiveJob | JobRecord:
    """One job: queued or running (with stage and progress), or its final record."""
    try:
        uuid.UUID(job_id)
    except ValueError as exc:
        raise HTTPException(400, f"invalid job id {job_id!r}: expected a UUID") from exc
    try:
        found = state.broker.get_job(job_id)
        if found is None:  # the hash of a finished job expires; history still has its record
            record = next((r for r in state.broker.history(100) if r.job_id == job_id), None)
            if record is not None:
                return record
    except QueueError as exc:
        raise _unavailable(exc) from exc
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_view(found)


def job_view(job: JobState) -> LiveJob | JobRecord:
    """A job's hash as the route shows it: the final record, or status with stage and progress."""
    if job.final and job.record is not None:
        return job.record
    stage = job.stage or (Stage.QUEUED if job.state is JobStatus.QUEUED else None)
    live = job.model_dump(include=set(LiveJob.model_fields) - {"status", "stage"})
    return LiveJob(**live, status=job.state, stage=stage)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A configured store is down"}},
)
def health(state: State, response: Response) -> Health:
    """Each store's reachability; 503 with the same shape when one is down.

    A store this plane was not configured to use (a cloud plane without NEO_DATABASE_URL or
    NEO_QDRANT_URL) shows as "unconfigured" and does not make the plane unhealthy.
    """
    services: dict[str, Literal["up", "down", "unconfigured"]] = {
        name: "unconfigured" if check is None else ("up" if _safe(check) else "down")
        for name, check in state.checks.items()
    }
    healthy = all(v != "down" for v in services.values())
    response.status_code = 200 if healthy else 503
    return Health(status="healthy" if healthy else "unhealthy", services=services)


def _safe(check: HealthCheck) -> bool:
    try:
        return bool(check())
    except Exception:  # a health probe must answer, whatever the store raised
        return False


def create_app(lifespan: Any = None) -> FastAPI:
    """The FastAPI app: routes plus JSON `{"detail": ...}` for every error."""
    app = FastAPI(title="neo-ray control plane", version="0.1.0", lifespan=lifespan)
    app.include_router(router)
    app.include_router(dashboard.router)
    from neo_ray.control.search import router as search_router  # it imports this module

    app.include_router(search_router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _explain(exc)}, status_code=400)

    @app.exception_handler(NeoRayError)
    async def _neo(_: Request, exc: NeoRayError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    _document_400_not_422(app)
    return app


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; ours answer 400 instead."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _explain(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"
