"""Typed messages that cross module, process and network boundaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict


def utcnow_iso() -> str:
    """Now, UTC, ISO 8601 with a `Z` (the task and record timestamp format)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    """A pipeline stage, in order."""

    QUEUED = "queued"
    CLONING = "cloning"
    DISCOVERING = "discovering"
    PARSING = "parsing"
    RESOLVING = "resolving"
    TRAINING = "training"
    UPLOADING = "uploading"
    RECORDING = "recording"
    DONE = "done"


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
        submitted = datetime.fromisoformat(self.submitted_at.replace("Z", "+00:00"))
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
    BUSY = "Training Graph"
    ERROR = "Error"
    OFFLINE = "Offline"


class WorkerHeartbeat(BaseModel):
    """A worker's heartbeat, written to `worker:{worker_id}` with a TTL."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    node: str
    device: str
    state: str
    stage: str | None = None
    progress: float = 0.0
    job_id: str | None = None
    repo_url: str | None = None
    heartbeat_at: str


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
