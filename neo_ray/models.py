"""Typed messages that cross module, process and network boundaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from neo_ray.timeutil import parse_utc, utcnow_iso

__all__ = ["parse_utc", "utcnow_iso"]  # re-exported: the record formats live with the models


class Language(str, Enum):
    """A source language neo-ray parses."""

    PYTHON = "python"
    JAVASCRIPT = "javascript"
    TYPESCRIPT = "typescript"
    JAVA = "java"
    GO = "go"
    RUST = "rust"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A tracked source file: repository-relative POSIX path and its language."""

    path: str
    language: Language


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file left out of the graph, and why (binary, too large, syntax error, ...)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement as written, before resolution.

    `module` is the spec as the language writes it (`a.b.c`, `./util`, `crate::x::y`,
    `github.com/o/r/pkg`); `level` counts Python's leading dots; `names` are the imported
    names where they may themselves be modules (`from a import b` → names=("b",)).
    """

    module: str
    level: int = 0
    names: tuple[str, ...] = ()
    kind: str = "import"


@dataclass(frozen=True, slots=True)
class RepoGraph:
    """The file-level dependency graph of one repository at one commit."""

    repo: str
    commit: str | None
    nodes: tuple[SourceFile, ...]
    edges: tuple[tuple[str, str], ...]
    skipped: tuple[SkippedFile, ...] = ()
    tokens: Mapping[str, tuple[str, ...]] | None = field(default=None, compare=False)
    """Each node's lexical tokens (identifiers, path tokens, imported names), when the build
    collected them (see `neo_ray.pipeline.lexical`); not part of the graph's identity."""

    def to_json(self) -> dict[str, object]:
        """The `neo-ray graph --json` contract."""
        return {
            "repo": self.repo,
            "commit": self.commit,
            "nodes": [{"path": n.path, "language": n.language.value} for n in self.nodes],
            "edges": [[a, b] for a, b in self.edges],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }

    def degrees(self) -> tuple[dict[str, int], dict[str, int]]:
        """In- and out-degree of every node."""
        ins = {n.path: 0 for n in self.nodes}
        outs = dict(ins)
        for a, b in self.edges:
            outs[a] += 1
            ins[b] += 1
        return ins, outs


@dataclass(frozen=True, slots=True)
class Node2VecParams:
    """Hyperparameters of Node2Vec (the seed's defaults)."""

    dim: int = 64
    walk_length: int = 20
    context_size: int = 10
    walks_per_node: int = 10
    p: float = 1.0
    q: float = 1.0
    epochs: int = 10
    num_negative_samples: int = 1
    seed: int = 0


class Stage(str, Enum):
    """Where a job is, in order: the `stage` of its hash, its progress and its heartbeat."""

    QUEUED = "queued"
    """Waiting in `ingest_queue` (written by the enqueue and requeue scripts)."""
    CLONING = "cloning"
    PARSING = "parsing"
    RESOLVING = "resolving"
    TRAINING = "training"
    UPLOADING = "uploading"
    RECORDING = "recording"
    DONE = "done"
    """Complete (written by the finish script)."""

    @property
    def step(self) -> str:
        """The stage's key in `stage_seconds`: the verb of its `-ing` (`cloning` → `clone`).

        Timings keep the short words the records have always had; they come from here, so a
        stage and its timing cannot drift apart.
        """
        return _STEPS.get(self, self.value)


_STEPS = {
    Stage.CLONING: "clone",
    Stage.PARSING: "parse",
    Stage.RESOLVING: "resolve",
    Stage.TRAINING: "train",
    Stage.UPLOADING: "upload",
    Stage.RECORDING: "record",
}


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report: stage, done of total, and a human message."""

    stage: Stage
    done: int = 0
    total: int = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """What one pipeline run produced, with per-stage seconds."""

    graph: RepoGraph
    device: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    embeddings: int = 0

    @property
    def files(self) -> int:
        return len(self.graph.nodes)


class JobStatus(str, Enum):
    """Where a job stands."""

    QUEUED = "queued"
    """In `ingest_queue`, waiting for an idle worker."""
    RUNNING = "running"
    """Handed to a worker; `stage` and `progress` say how far it is."""
    COMPLETE = "complete"
    """Vectors stored and metadata recorded."""
    FAILED = "failed"
    """Gave up after the allowed attempts; `error` says why."""
    SKIPPED = "skipped"
    """Never run; `reason` says why (for example the TTL expired in the queue)."""


class Task(BaseModel):
    """An ingest task as it travels through Redis."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    repo_url: str
    ref: str | None = None
    submitted_at: str
    ttl_seconds: int
    attempts: int = 0

    def expired(self, now: datetime | None = None) -> bool:
        submitted = parse_utc(self.submitted_at)
        age = ((now or datetime.now(UTC)) - submitted).total_seconds()
        return age > self.ttl_seconds


class JobRecord(BaseModel):
    """A finished job as history keeps it (the seed's fields first)."""

    model_config = ConfigDict(frozen=True)

    repo_url: str
    status: JobStatus
    duration_seconds: float
    files_processed: int = 0
    embeddings_generated: int = 0
    timestamp: str
    job_id: str
    ref: str | None = None
    commit_sha: str | None = None
    edges: int = 0
    files_skipped: int = 0
    error: str | None = None
    reason: str | None = None
    stage_seconds: dict[str, float] = {}
    worker_id: str | None = None
    attempts: int = 0


class WorkerState(str, Enum):
    """What a worker is doing, in the seed's words."""

    IDLE = "Idle"
    """Waiting for a task."""
    BUSY = "Training Graph"
    """Running a job; shown as `Training Graph on {repo_url}`."""
    ERROR = "Error"
    """Its last job failed; shown as `Error: {message}` until the next job, or, after a
    transient failure, until the worker's services (Redis, PostgreSQL) answer again."""
    OFFLINE = "Offline"
    """No heartbeat within the TTL: never written by a worker, only shown by the status route."""


class GpuTelemetry(BaseModel):
    """What NVML says of the GPU a worker holds."""

    model_config = ConfigDict(frozen=True)

    name: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int


class WorkerHeartbeat(BaseModel):
    """A worker's heartbeat, written to `worker:{worker_id}` with a TTL."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    node: str
    device: str
    state: WorkerState
    stage: Stage | None = None
    progress: float = 0.0
    job_id: str | None = None
    repo_url: str | None = None
    error: str | None = None
    heartbeat_at: str
    gpu: GpuTelemetry | None = None
    """The GPU's name, utilisation and memory; None on the CPU (`device` says "cpu")."""

    @model_validator(mode="before")
    @classmethod
    def _seed_words(cls, data: Any) -> Any:
        # A heartbeat written before states were an enum carries the seed's whole sentence.
        if isinstance(data, dict) and isinstance(data.get("state"), str):
            state = data["state"]
            if state.startswith(f"{WorkerState.BUSY.value} on "):
                data = {**data, "state": WorkerState.BUSY.value}
            elif state.startswith(f"{WorkerState.ERROR.value}: "):
                data = {**data, "state": WorkerState.ERROR.value, "error": state[7:]}
        return data

    @property
    def status(self) -> str:
        """The seed's sentence: `Idle`, `Training Graph on {repo_url}`, `Error: {message}`."""
        if self.state is WorkerState.BUSY and self.repo_url:
            return f"{self.state.value} on {self.repo_url}"
        if self.state is WorkerState.ERROR:
            return f"{self.state.value}: {self.error or 'unknown'}"
        return self.state.value


class JobState(BaseModel):
    """One job's hash (`job:{job_id}`) as read from Redis: live fields, then the final record.

    Read like the hash it comes from, too (`job["state"]`, `"worker_id" in job`): a field that
    is None counts as absent, as a field missing from the hash does.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str
    state: JobStatus = JobStatus.QUEUED
    stage: Stage | None = None
    progress: float = 0.0
    repo_url: str | None = None
    ref: str | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    worker_id: str | None = None
    cluster_id: str | None = None
    """The edge cluster whose bridge claimed the job (several clusters may share one queue)."""
    claimed_at: str | None = None
    """When the task was last handed out of the queue (stamped by the claim itself)."""
    attempts: int = 0
    done: int | None = None
    total: int | None = None
    message: str | None = None
    task: Task | None = None
    record: JobRecord | None = None

    @property
    def final(self) -> bool:
        """Whether the job has ended (complete, failed or skipped)."""
        return self.state in (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.SKIPPED)

    def __getitem__(self, name: str) -> Any:
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        value = getattr(self, name, None) if name in type(self).model_fields else None
        return default if value is None else value


def failed_record(task: Task, error: str, duration_s: float, *, worker_id: str | None) -> JobRecord:
    """The history record of a job that failed for good."""
    return JobRecord(
        repo_url=task.repo_url,
        status=JobStatus.FAILED,
        duration_seconds=round(duration_s, 3),
        timestamp=utcnow_iso(),
        job_id=task.job_id,
        ref=task.ref,
        error=error,
        worker_id=worker_id,
        attempts=task.attempts + 1,
    )


def skipped_record(task: Task, reason: str) -> JobRecord:
    """The history record of a job that never ran."""
    return JobRecord(
        repo_url=task.repo_url,
        status=JobStatus.SKIPPED,
        duration_seconds=0.0,
        timestamp=utcnow_iso(),
        job_id=task.job_id,
        ref=task.ref,
        reason=reason,
        attempts=task.attempts,
    )
