"""The HTTP answers of the control plane as models: what `/openapi.json` describes, exactly."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from neo_ray.models import GpuTelemetry, JobRecord, JobStatus, Stage, WorkerHeartbeat


class ErrorBody(BaseModel):
    """Every error answer: `{"detail": "..."}`, saying why."""

    detail: str


# The error answers each route may give, for `responses=` (FastAPI documents them from here).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid input; `detail` says why"},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token"},
    404: {"model": ErrorBody, "description": "No such job"},
    429: {"model": ErrorBody, "description": "Queue full; retry after `Retry-After` seconds"},
    503: {"model": ErrorBody, "description": "Redis unreachable, or no admin token configured"},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of these error codes."""
    return {code: ERRORS[code] for code in codes}


class IngestAccepted(BaseModel):
    """A submission: the job queued now (202), or the one already queued for it (200)."""

    job_id: str
    status: JobStatus
    repo_url: str
    ref: str | None
    queue_position: int = Field(description="1-based from the consumer end; 0 once running")
    queue_size: int
    max_queue_size: int
    expires_at: str = Field(description="UTC, ISO 8601 with Z: when the queued task expires")


class WorkerView(BaseModel):
    """One live worker as the status route shows it (`state` in the seed's words)."""

    worker_id: str
    node: str
    device: str
    state: str = Field(description="Idle, Training Graph on {repo_url}, or Error: {message}")
    stage: Stage | None
    progress: float
    job_id: str | None
    repo_url: str | None
    heartbeat_at: str
    gpu: GpuTelemetry | None = Field(
        None, description="the GPU's name, utilisation and memory; null on the CPU"
    )

    @classmethod
    def of(cls, hb: WorkerHeartbeat) -> WorkerView:
        fields = hb.model_dump(exclude={"state", "error"})
        return cls(**fields, state=hb.status)


class WorkerStatus(BaseModel):
    """Every live worker, the seed's one-line status, the queue and what is in progress."""

    status: str = Field(description="Offline, Error: ..., Training Graph on ..., or Idle")
    workers: list[WorkerView]
    queue_size: int = Field(description="tasks waiting in ingest_queue")
    processing: int = Field(description="tasks handed to a worker and not yet finished")
    dead: int = Field(description="tasks in ingest_dead (gave up after NEO_MAX_ATTEMPTS)")


class HistoryMetrics(BaseModel):
    """Rates over the records Redis keeps (up to 100)."""

    success_rate: float
    average_duration_s: float
    throughput_per_hour: float
    error_rate: float
    skip_rate: float


class JobHistory(BaseModel):
    """The newest job records and the metrics over all kept ones."""

    jobs: list[JobRecord]
    metrics: HistoryMetrics


class LiveJob(BaseModel):
    """A job not finished yet: its status, stage and progress (fields it lacks are left out)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    status: JobStatus
    stage: Stage | None = None
    progress: float = Field(ge=0.0, le=1.0)
    repo_url: str | None = None
    ref: str | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    worker_id: str | None = None
    attempts: int | None = None
    done: int | None = None
    total: int | None = None
    message: str | None = None

    # No return annotation on purpose: with one, pydantic would document this model as a bare
    # object; without, /openapi.json keeps every field (each optional one may be absent).
    @model_serializer(mode="wrap")
    def _without_absent(self, handler: SerializerFunctionWrapHandler):
        return {k: v for k, v in handler(self).items() if v is not None}


# A live job, or the final record of a finished one (tried in that order).
JobView = Annotated[LiveJob | JobRecord, Field(union_mode="left_to_right")]


class Health(BaseModel):
    """Each store's reachability; `unconfigured` stores do not make the plane unhealthy."""

    status: Literal["healthy", "unhealthy"]
    services: dict[str, Literal["up", "down", "unconfigured"]]
