"""Every Redis key name neo-ray uses, in one place (ARCHITECTURE.md, "Redis keys")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; the empty prefix gives the seed's names.

    The prefix is prepended verbatim, so it carries its own separator (`"neo:"`).
    """

    prefix: str = ""

    @property
    def queue(self) -> str:
        """List of task JSON; producers push on the left, consumers take from the right."""
        return f"{self.prefix}ingest_queue"

    @property
    def processing(self) -> str:
        """List of task JSON handed to the bridge and not yet acknowledged."""
        return f"{self.prefix}ingest_processing"

    @property
    def dead(self) -> str:
        """List of `{task, error, failed_at}` JSON for tasks that failed too often."""
        return f"{self.prefix}ingest_dead"

    @property
    def history(self) -> str:
        """List of job record JSON, newest first, trimmed."""
        return f"{self.prefix}job_history"

    @property
    def history_pending(self) -> str:
        """Records written to Redis that PostgreSQL has not taken yet (oldest at the tail)."""
        return f"{self.prefix}history_pending"

    @property
    def metadata_pending(self) -> str:
        """Hash: repository URL → `{job_id} {metadata}` PostgreSQL has not taken yet (the
        newest job's; `metadata.ParkedRepository` is the compressed form)."""
        return f"{self.prefix}metadata_pending"

    @property
    def dedupe(self) -> str:
        """Hash: dedupe key (repository and ref) → job id of the job queued or running for it."""
        return f"{self.prefix}ingest_dedupe"

    @property
    def job_prefix(self) -> str:
        """What `job()` prepends to a job id (Lua scripts build job keys from it)."""
        return f"{self.prefix}job:"

    def job(self, job_id: str) -> str:
        """Hash of one job's state, stage, progress and timestamps."""
        return f"{self.job_prefix}{job_id}"

    def claim(self, token: str) -> str:
        """The task a claim token took (claim.lua), so a retried claim returns it again."""
        return f"{self.prefix}claim:{token}"

    def worker(self, worker_id: str) -> str:
        """A worker's heartbeat JSON, expiring after the heartbeat TTL."""
        return f"{self.prefix}worker:{worker_id}"

    def cluster(self, cluster_id: str) -> str:
        """An edge cluster's liveness, renewed by its bridge, expiring after the heartbeat TTL."""
        return f"{self.prefix}cluster:{cluster_id}"

    @property
    def workers_pattern(self) -> str:
        """SCAN pattern matching every worker heartbeat key."""
        return f"{_glob_escape(self.prefix)}worker:*"


def _glob_escape(text: str) -> str:
    # A prefix holding glob characters would otherwise widen the SCAN pattern.
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
