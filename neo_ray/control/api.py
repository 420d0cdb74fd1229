"""HTTP routes of the control plane: authenticate, validate, gate and enqueue; read status.

The routes hold no job state: everything they answer comes from Redis (and, for /health, a
ping of each store). HTTP status codes are chosen here and nowhere else.
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from neo_ray.config import Settings
from neo_ray.control import dashboard
from neo_ray.errors import InvalidRepoError, NeoRayError, QueueError, QueueFull
from neo_ray.models import JobRecord, JobStatus, Task, WorkerHeartbeat, utcnow_iso
from neo_ray.repo_url import normalize_repo_url, validate_git_ref
from neo_ray.stores.queue import Broker, dedupe_key_for

API = "/api/v1/ingestion"
# Some clients and proxies fold the "//" of a URL embedded in a path into "/".
_FOLDED_SCHEME = re.compile(r"^(https?):/(?!/)", re.IGNORECASE)

HealthCheck = Callable[[], bool]


class ControlState:
    """What the routes need: the settings, the broker, and a health check per store."""

    def __init__(
        self, settings: Settings, broker: Broker, checks: dict[str, HealthCheck | None]
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.checks = checks


_state: ControlState | None = None


def configure(state: ControlState) -> None:
    """Install the state the routes read (once per process: the Serve replica)."""
    global _state
    _state = state


def get_state() -> ControlState:
    if _state is None:
        raise HTTPException(503, "control plane is starting")
    return _state


State = Annotated[ControlState, Depends(get_state)]
router = APIRouter()


def _require_admin(state: ControlState, authorization: str | None) -> None:
    """Bearer auth with a constant-time compare; no token configured → 503, never open."""
    token = state.settings.admin_token
    if token is None:
        raise HTTPException(503, "ingestion is disabled: PHAROS_ADMIN_TOKEN is not configured")
    scheme, _, presented = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    given = presented.strip().encode()
    if scheme.lower() != "bearer" or not given or not hmac.compare_digest(given, expected):
        raise HTTPException(
            401,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="neo-ray"'},
        )


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, f"queue unavailable: {exc}")


@router.post(f"{API}/ingest/{{repo_url:path}}", status_code=202)
def ingest(
    repo_url: Annotated[str, Path(description="github.com/owner/repo or https://host/owner/repo")],
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    ref: Annotated[str | None, Query(max_length=255, description="branch or tag")] = None,
) -> JSONResponse:
    """Queue a repository for ingestion (202), or return the job already queued for it (200)."""
    _require_admin(state, authorization)
    settings = state.settings
    try:
        repo = normalize_repo_url(
            _FOLDED_SCHEME.sub(r"\1://", repo_url),
            allowed_hosts=settings.allowed_hosts,
            allow_local=settings.allow_local_repos,
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
    except QueueFull as exc:
        raise HTTPException(
            429, str(exc), headers={"Retry-After": str(settings.retry_after_s)}
        ) from exc
    except QueueError as exc:
        raise _unavailable(exc) from exc
    job = result.task
    submitted = datetime.fromisoformat(job.submitted_at.replace("Z", "+00:00"))
    body = {
        "job_id": job.job_id,
        "status": JobStatus.QUEUED.value,
        "repo_url": job.repo_url,
        "ref": job.ref,
        "queue_position": result.queue_position,
        "queue_size": result.queue_size,
        "max_queue_size": settings.max_queue_size,
        "expires_at": (submitted + timedelta(seconds=job.ttl_seconds))
        .astimezone(UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if not result.created:
        try:
            body["status"] = _current_status(state.broker, job.job_id)
        except QueueError as exc:
            raise _unavailable(exc) from exc
    return JSONResponse(body, status_code=202 if result.created else 200)


def _current_status(broker: Broker, job_id: str) -> str:
    return str(job_view(job_id, broker.get_job(job_id) or {})["status"])


def _overall_status(workers: list[WorkerHeartbeat]) -> str:
    """The seed's one-line status: Offline, Error: ..., Training Graph on ..., or Idle."""
    if not workers:
        return "Offline"
    busy = [w for w in workers if w.state.startswith("Training Graph")]
    if busy:
        return busy[0].state
    errors = [w for w in workers if w.state.startswith("Error")]
    return errors[0].state if errors else "Idle"


class WorkerStatusReply(BaseModel):
    """The answer of `/worker/status`."""

    status: str = Field(description="Idle, Training Graph on {repo_url}, Error: ..., or Offline")
    workers: list[WorkerHeartbeat] = Field(description="workers with a heartbeat within the TTL")
    queue_size: int = Field(description="tasks waiting in ingest_queue")
    processing: int = Field(description="tasks handed to a worker and not yet finished")
    dead: int = Field(description="tasks in ingest_dead (gave up after NEO_MAX_ATTEMPTS)")


@router.get(f"{API}/worker/status")
def worker_status(state: State) -> WorkerStatusReply:
    """Every live worker (heartbeat within the TTL), the queue and what is being processed."""
    try:
        workers = sorted(state.broker.workers(), key=lambda w: w.worker_id)
        queue_size = state.broker.queue_size()
        processing = len(state.broker.processing())
        dead = state.broker.dead_size()
    except QueueError as exc:
        raise _unavailable(exc) from exc
    return WorkerStatusReply(
        status=_overall_status(workers),
        workers=workers,
        queue_size=queue_size,
        processing=processing,
        dead=dead,
    )


def history_metrics(records: list[JobRecord], now: datetime | None = None) -> dict[str, float]:
    """Success, error and skip rates, mean duration of completed jobs, completions per hour."""
    total = len(records)
    done = [r for r in records if r.status == JobStatus.COMPLETE]
    failed = sum(r.status == JobStatus.FAILED for r in records)
    skipped = sum(r.status == JobStatus.SKIPPED for r in records)
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=1)
    recent = sum(datetime.fromisoformat(r.timestamp.replace("Z", "+00:00")) >= cutoff for r in done)

    def rate(n: int) -> float:
        return round(n / total, 4) if total else 0.0

    mean = sum(r.duration_seconds for r in done) / len(done) if done else 0.0
    return {
        "success_rate": rate(len(done)),
        "average_duration_s": round(mean, 3),
        "throughput_per_hour": float(recent),
        "error_rate": rate(failed),
        "skip_rate": rate(skipped),
    }


@router.get(f"{API}/jobs/history")
def jobs_history(state: State, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
    """The newest `limit` job records; metrics over every record Redis keeps (up to 100)."""
    try:
        records = state.broker.history(100)
    except QueueError as exc:
        raise _unavailable(exc) from exc
    return {
        "jobs": [r.model_dump(mode="json") for r in records[:limit]],
        "metrics": history_metrics(records),
    }


@router.get(f"{API}/jobs/{{job_id}}")
def job(job_id: str, state: State) -> dict[str, Any]:
    """One job: queued or running (with stage and progress), or its final record."""
    try:
        uuid.UUID(job_id)
    except ValueError as exc:
        raise HTTPException(400, f"invalid job id {job_id!r}: expected a UUID") from exc
    try:
        found = state.broker.get_job(job_id)
        if not found:  # the hash of a finished job expires; history still has its record
            found = next(
                (
                    {"state": r.status.value, "record": r.model_dump(mode="json")}
                    for r in state.broker.history(100)
                    if r.job_id == job_id
                ),
                None,
            )
    except QueueError as exc:
        raise _unavailable(exc) from exc
    if not found:
        raise HTTPException(404, f"no job {job_id}")
    return job_view(job_id, found)


_FINAL = {JobStatus.COMPLETE.value, JobStatus.FAILED.value, JobStatus.SKIPPED.value}
_LIVE_FIELDS = (
    "repo_url",
    "ref",
    "submitted_at",
    "started_at",
    "updated_at",
    "worker_id",
    "attempts",
    "done",
    "total",
    "message",
)


def job_view(job_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """A job hash as the route shows it: the final record, or status with stage and progress."""
    status = str(job.get("state") or JobStatus.QUEUED.value)
    record = job.get("record")
    if status in _FINAL and isinstance(record, dict):
        return {**record, "status": status}
    view: dict[str, Any] = {
        "job_id": job_id,
        "status": status,
        "stage": job.get("stage") or status,
        "progress": float(job.get("progress") or 0.0),
    }
    view.update({k: job[k] for k in _LIVE_FIELDS if job.get(k) is not None})
    return view


@router.get("/health")
def health(state: State) -> JSONResponse:
    """Each store's reachability; 503 with the same shape when one is down.

    A store this plane was not configured to use (a cloud plane without NEO_DATABASE_URL or
    NEO_QDRANT_URL) shows as "unconfigured" and does not make the plane unhealthy.
    """
    services = {
        name: "unconfigured" if check is None else ("up" if _safe(check) else "down")
        for name, check in state.checks.items()
    }
    healthy = all(v != "down" for v in services.values())
    return JSONResponse(
        {"status": "healthy" if healthy else "unhealthy", "services": services},
        status_code=200 if healthy else 503,
    )


def _safe(check: HealthCheck) -> bool:
    try:
        return bool(check())
    except Exception:  # a health probe must answer, whatever the store raised
        return False


def create_app() -> FastAPI:
    """The FastAPI app: routes plus JSON `{"detail": ...}` for every error."""
    app = FastAPI(title="neo-ray control plane", version="0.1.0")
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

    return app


def _explain(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"
