"""Bulk ingestion: submit a file of repository URLs through the HTTP gate and follow every job.

Used by `neo-ray bulk FILE` and by `scripts/bulk_ingest.py` (the `ray job submit` entry point).
It is a plain HTTP client of the control plane, like any user: the same token, the same queue
cap. A full queue (429) is waited out, honouring `Retry-After`, while the jobs already queued
are followed; a line the client or the server rejects is reported and skipped.

Exit status: 0 when every job completed, 1 when any job failed or was skipped, or any line was
rejected (the other lines still ran).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from neo_ray.config import Settings
from neo_ray.errors import ConfigError, NeoRayError

# States a job ends in, and the one that counts as success.
FINAL = frozenset({"complete", "failed", "skipped"})
REJECTED = "rejected"
POLL_EVERY_S = 0.5
# A Retry-After the server forgot, or one absurdly long, is bounded by these.
DEFAULT_RETRY_S = 5.0
MAX_RETRY_S = 300.0
# How long a control plane that stopped answering is waited for before the run gives up.
UNREACHABLE_FOR_S = 120.0
ADMIN_TOKEN_FILE = "admin-token"


@dataclass
class Entry:
    """One line of the input: what to submit, and what became of it."""

    line: int
    source: str
    job_id: str | None = None
    status: str = "pending"
    files: int | None = None
    seconds: float | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.status in FINAL or self.status == REJECTED


# --------------------------------------------------------------------------- the input


def read_lines(path: str, stdin: IO[str] | None = None) -> list[str]:
    """The lines of `path` (`-` reads standard input)."""
    if path == "-":
        return (stdin or sys.stdin).read().splitlines()
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def parse_entries(lines: Iterable[str]) -> list[Entry]:
    """One entry per URL line; `#` starts a comment, blank lines are skipped.

    A line that cannot be a repository URL (several words) is kept as a rejected entry, so
    that it shows in the summary; the server judges the rest (host allowlist, form).
    """
    entries = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()  # repository URLs never hold a fragment
        if not text:
            continue
        entry = Entry(number, text)
        if len(text.split()) > 1:
            entry.status, entry.error = REJECTED, "not one URL (whitespace inside)"
        elif Path(text).expanduser().is_dir():
            # A local folder (tests, demos) goes as file://, as `neo-ray ingest` sends it.
            entry.source = Path(text).expanduser().resolve().as_uri()
        entries.append(entry)
    return entries


# --------------------------------------------------------------------------- where the API is


def locate_api(settings: Settings) -> tuple[str, str | None]:
    """The control plane's base URL and the admin token.

    The URL: NEO_API_URL, else the running system's record (`neo-ray up`), else the
    configured host and port. The token: PHAROS_ADMIN_TOKEN, else the data dir's token file.
    """
    from neo_ray import raycluster

    data_dir = raycluster.recorded_data_dir() or settings.data_dir
    if "NEO_DATA_DIR" in os.environ:
        data_dir = settings.data_dir
    state = raycluster.read_system(data_dir) or {}
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    base = (
        os.environ.get("NEO_API_URL") or state.get("api") or f"http://{host}:{settings.http_port}"
    )
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    path = data_dir / ADMIN_TOKEN_FILE
    if token is None and path.exists():
        token = path.read_text(encoding="utf-8").strip()
    return str(base).rstrip("/"), token


# --------------------------------------------------------------------------- the run


class BulkRun:
    """Submits entries one by one and follows the queued ones until every one has ended."""

    def __init__(
        self,
        http: httpx.Client,
        token: str | None,
        entries: Sequence[Entry],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.entries = list(entries)
        self._pending = [e for e in self.entries if not e.finished]
        self._sleep = sleep
        self._not_before = 0.0  # monotonic time before which the gate said "full"
        self._unreachable_since: float | None = None

    def counts(self) -> Counter[str]:
        return Counter(e.status for e in self.entries)

    def run(self, on_change: Callable[[BulkRun], None] = lambda run: None) -> list[Entry]:
        while any(not e.finished for e in self.entries):
            try:
                self._submit_while_open()
                self._poll()
                self._unreachable_since = None
            except httpx.TransportError as exc:
                self._unreachable(exc)
            on_change(self)
            if any(not e.finished for e in self.entries):
                self._sleep(POLL_EVERY_S)
        return self.entries

    def _unreachable(self, exc: httpx.TransportError) -> None:
        """Tolerate a control plane restart; give up when it stays away, or was never there."""
        if not any(e.job_id for e in self.entries):
            raise NeoRayError(f"cannot reach the control plane at {self.http.base_url}: {exc}")
        now = time.monotonic()
        self._unreachable_since = self._unreachable_since or now
        if now - self._unreachable_since > UNREACHABLE_FOR_S:
            raise NeoRayError(f"the control plane stopped answering: {exc}") from exc

    def _submit_while_open(self) -> None:
        while self._pending and time.monotonic() >= self._not_before:
            entry = self._pending[0]
            if not self._submit(entry):
                return  # the queue is full: follow the running jobs meanwhile
            self._pending.pop(0)

    def _submit(self, entry: Entry) -> bool:
        """POST one entry; False when the gate answered 429 (the entry stays pending)."""
        path = f"/api/v1/ingestion/ingest/{quote(entry.source, safe='')}"
        reply = self.http.post(path, headers=self.headers)
        if reply.status_code == 429:
            self._not_before = time.monotonic() + retry_after(reply)
            return False
        body = _json(reply)
        if reply.status_code in (200, 202):
            entry.job_id, entry.status = str(body["job_id"]), str(body.get("status", "queued"))
            entry.started = time.monotonic()
        elif reply.status_code in (401, 503):
            # Every other line would meet the same answer: stop with the server's reason.
            raise NeoRayError(f"HTTP {reply.status_code}: {body.get('detail', body)}")
        else:
            entry.status = REJECTED
            entry.error = f"HTTP {reply.status_code}: {body.get('detail', body)}"
            print(f"line {entry.line}: skipped {entry.source}: {entry.error}", file=sys.stderr)
        return True

    def _poll(self) -> None:
        for entry in self.entries:
            if entry.job_id is None or entry.finished:
                continue
            reply = self.http.get(f"/api/v1/ingestion/jobs/{entry.job_id}")
            if reply.status_code != 200:
                continue  # a job hash not visible yet, or a control plane restarting
            settle(entry, _json(reply))


def settle(entry: Entry, job: dict[str, Any]) -> None:
    """Copy a job's state (live or final record) into its entry."""
    entry.status = str(job.get("status", entry.status))
    if entry.status not in FINAL:
        return
    entry.files = job.get("files_processed")
    entry.seconds = job.get("duration_seconds")
    if entry.seconds is None:
        entry.seconds = round(time.monotonic() - entry.started, 2)
    entry.error = job.get("error") or job.get("reason")


def retry_after(reply: httpx.Response) -> float:
    """Seconds to wait from a 429's `Retry-After` (delta seconds), bounded."""
    try:
        seconds = float(reply.headers.get("Retry-After", DEFAULT_RETRY_S))
    except ValueError:
        seconds = DEFAULT_RETRY_S
    return min(max(seconds, 0.0), MAX_RETRY_S)


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {"detail": reply.text[:200]}
    return dict(body) if isinstance(body, dict) else {"detail": body}


# --------------------------------------------------------------------------- showing it


class Bar:
    """A tqdm bar on stderr: finished / total, with the count of each state beside it."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc="bulk", file=sys.stderr, disable=not enabled, unit="job")

    def __call__(self, run: BulkRun) -> None:
        counts = run.counts()
        self._bar.n = sum(n for s, n in counts.items() if s in FINAL or s == REJECTED)
        self._bar.set_postfix_str(" ".join(f"{s}={n}" for s, n in sorted(counts.items())))
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def table(entries: Sequence[Entry]) -> str:
    """The outcome of every entry: job id, repository, status, files, seconds, error."""
    head = ("job id", "repo", "status", "files", "seconds", "error")
    rows = [
        (
            e.job_id or f"line:{e.line}",  # one word, so columns split
            e.source,
            e.status,
            "" if e.files is None else str(e.files),
            "" if e.seconds is None else f"{e.seconds:.1f}",
            (e.error or "").replace("\n", " ")[:80],
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    header = "  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()
    return "\n".join([header, *lines])


def exit_code(entries: Sequence[Entry]) -> int:
    return 0 if all(e.status == "complete" for e in entries) else 1


def bulk(
    path: str, settings: Settings, *, progress: bool = True, out: IO[str] | None = None
) -> int:
    """Submit every repository in `path`, follow them to the end, print the table."""
    out = out or sys.stdout
    entries = parse_entries(read_lines(path))
    for e in entries:
        if e.status == REJECTED:
            print(f"line {e.line}: skipped {e.source!r}: {e.error}", file=sys.stderr)
    if not entries:
        print("no repositories to ingest", file=sys.stderr)
        return 0
    base, token = locate_api(settings)
    bar = Bar(len(entries), enabled=progress)
    try:
        with httpx.Client(base_url=base, timeout=30.0) as http:
            BulkRun(http, token, entries).run(bar)
    finally:
        bar.close()
    print(table(entries), file=out)
    counts = Counter(e.status for e in entries)
    print("total " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())), file=out)
    return exit_code(entries)
