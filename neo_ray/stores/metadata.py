"""PostgreSQL through a psycopg 3 pool: migrations, job records, repositories, import graphs."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from neo_ray.config import Settings
from neo_ray.errors import ConfigError, DatabaseError
from neo_ray.models import JobRecord, RepoGraph
from neo_ray.timeutil import parse_utc

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key for migrations ("neo-ray" in ASCII, as a 64-bit number), so two
# processes starting together apply each migration once.
_MIGRATION_LOCK = 0x6E656F2D726179

# ingestion_jobs' columns besides `record`, named as JobRecord's fields.
_JOB_COLUMNS = (
    "job_id", "repo_url", "ref", "status", "commit_sha", "duration_seconds", "files_processed",
    "embeddings_generated", "edges", "files_skipped", "error", "reason", "stage_seconds",
    "worker_id", "attempts", "timestamp",
)  # fmt: skip
_UPSERT_JOB = sql.SQL(
    "INSERT INTO ingestion_jobs ({columns}) VALUES ({values})"
    " ON CONFLICT (job_id) DO UPDATE SET {updates}"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, (*_JOB_COLUMNS, "record"))),
    values=sql.SQL(", ").join(map(sql.Placeholder, (*_JOB_COLUMNS, "record"))),
    updates=sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in (*_JOB_COLUMNS, "record")
        if c != "job_id"
    ),
)


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository as the `repositories` table holds it."""

    repo_url: str
    last_commit_sha: str | None
    last_ingested_at: datetime
    files: int
    edges: int
    files_skipped: int


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Translate psycopg's errors (and the pool's timeouts) into DatabaseError."""
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseError(f"PostgreSQL failed to {what}: {redact(str(exc))}") from exc


# --------------------------------------------------------------------------- TLS and errors

_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
_URL_SETTING = "NEO_DATABASE_URL"
_CA_SETTING = "NEO_DATABASE_CA"


def tls_options(url: str, ca: Path | None = None) -> dict[str, str]:
    """libpq options that put `url` on TLS: `sslmode=require` for any remote host whose URL
    does not choose a mode (Neon refuses plain connections anyway), and with a root
    certificate (NEO_DATABASE_CA) `verify-full` against it. An explicit sslmode in the URL is
    kept, except that a CA upgrades require/prefer/allow to verify-full."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        raise ConfigError(f"{_URL_SETTING} is not a valid PostgreSQL URL ({redact(url)})") from None
    mode = params.get("sslmode")
    if ca is not None:
        if not ca.is_file():
            raise ConfigError(f"{_CA_SETTING} names no readable file: {ca}")
        if mode == "disable":
            raise ConfigError(f"{_CA_SETTING} is set but {_URL_SETTING} says sslmode=disable")
        keep = mode in ("verify-ca", "verify-full")
        return {"sslmode": str(mode) if keep else "verify-full", "sslrootcert": str(ca)}
    host = str(params.get("host") or "")
    if mode is None and not host.startswith("/") and host not in _LOCAL_HOSTS:
        return {"sslmode": "require"}
    return {}


def redact(text: str, url: str | None = None) -> str:
    """`text` with the password of `url` (or of any URL or `password=` inside it) masked."""
    password = None
    if url:
        with contextlib.suppress(psycopg.Error):
            password = conninfo_to_dict(url).get("password")
    if password:
        text = text.replace(str(password), "***")
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)


def _connect_error(url: str, ca: Path | None, exc: BaseException) -> DatabaseError:
    """A connection failure that names the setting to check; never the password."""
    message = redact(str(exc).strip(), url)
    hint = _URL_SETTING
    lowered = message.lower()
    if "certificate" in lowered or "ssl" in lowered:
        hint = f"{_URL_SETTING} and {_CA_SETTING}" if ca else f"{_URL_SETTING} (sslmode)"
    return DatabaseError(f"cannot connect to PostgreSQL at {redact(url)}: {message} (check {hint})")


def ping_url(url: str, *, timeout_s: float = 2.0, ca: Path | None = None) -> bool:
    """Whether PostgreSQL at `url` answers a query, on a fresh connection (no pool to keep)."""
    try:
        timeout = max(1, round(timeout_s))  # libpq takes whole seconds
        conninfo = make_conninfo(url, **tls_options(url, ca))
        with psycopg.connect(conninfo, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, ConfigError):
        return False
    return True


def probe(url: str, *, ca: Path | None = None, timeout_s: float = 5.0) -> None:
    """Connect once and run a query; raise DatabaseError naming the setting when it fails."""
    conninfo = make_conninfo(url, **tls_options(url, ca))
    try:
        timeout = max(1, round(timeout_s))
        with psycopg.connect(conninfo, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise _connect_error(url, ca, exc) from None


class Database:
    """The system's PostgreSQL: one pool per process, each method one transaction."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout_s: float = 10.0,
        ca: Path | None = None,
    ) -> Database:
        """Open a pool and wait until `min_size` connections are up (DatabaseError if not).

        TLS as `tls_options` says; a failure names the setting to check, never the password.
        """
        kwargs: dict[str, Any] = {
            "application_name": "neo-ray",
            "connect_timeout": max(1, int(timeout_s)),
            **tls_options(url, ca),
        }
        pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max(max_size, min_size),
            open=False,
            timeout=timeout_s,
            # A connection broken by a server restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            kwargs=kwargs,
        )
        try:
            pool.open(wait=True, timeout=timeout_s)
        except (psycopg.Error, PoolTimeout):
            pool.close()
            # The pool only says it timed out: one direct try tells why (bad password,
            # certificate, host), which is what the user must fix.
            probe(url, ca=ca, timeout_s=timeout_s)
            raise DatabaseError(
                f"PostgreSQL at {redact(url)} gave no connection within {timeout_s:.0f} s "
                f"(check {_URL_SETTING})"
            ) from None
        return cls(pool)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Database:
        """The pool the settings name: NEO_DATABASE_URL, NEO_DATABASE_CA, a small pool."""
        if not settings.database_url:
            raise ConfigError(f"no database configured: set {_URL_SETTING}")
        size = settings.database_pool_size
        return cls.connect(settings.database_url, max_size=size, ca=settings.database_ca, **kwargs)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        # The pool's context commits on success and rolls back on an exception.
        with _translated(what), self._pool.connection() as conn:
            yield conn

    def ping(self) -> bool:
        """True when PostgreSQL answers a query; False (never an exception) otherwise."""
        try:
            with self._conn("answer a ping") as conn:
                conn.execute("SELECT 1")
        except DatabaseError:
            return False
        return True

    # ----------------------------------------------------------------- migrations

    def migrate(self) -> list[str]:
        """Apply `neo_ray/stores/sql/*.sql` not yet applied, in name order; return those applied."""
        applied: list[str] = []
        with self._conn("migrate") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, script in _migrations():
                if version in done:
                    continue
                log.info("applying migration %s", version)
                # bytes: a whole file of statements, sent as one simple query.
                conn.execute(script.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        return applied

    # ----------------------------------------------------------------- job records

    def record_job(self, record: JobRecord) -> None:
        """Insert or replace the record of `record.job_id`."""
        fields = record.model_dump(mode="json")
        row: dict[str, Any] = {column: fields[column] for column in _JOB_COLUMNS}
        row["stage_seconds"] = Jsonb(record.stage_seconds)
        row["timestamp"] = _parse_timestamp(record.timestamp)
        # The whole record too: fields added to JobRecord later live there without a migration.
        row["record"] = Jsonb(fields)
        with self._conn("record a job") as conn:
            conn.execute(_UPSERT_JOB, row)

    def jobs(self, limit: int, repo_url: str | None = None) -> list[JobRecord]:
        """The newest `limit` job records, of one repository when `repo_url` is given."""
        with self._conn("read job records") as conn:
            if repo_url is None:
                rows = conn.execute(
                    'SELECT record FROM ingestion_jobs ORDER BY "timestamp" DESC LIMIT %s',
                    (max(limit, 0),),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT record FROM ingestion_jobs WHERE repo_url = %s"
                    ' ORDER BY "timestamp" DESC LIMIT %s',
                    (repo_url, max(limit, 0)),
                ).fetchall()
        return [JobRecord.model_validate(row[0]) for row in rows]

    # ----------------------------------------------------------------- repositories

    def save_repository(self, repo_url: str, graph: RepoGraph) -> None:
        """Upsert the repository and replace its files and edges, in one transaction."""
        paths = {node.path for node in graph.nodes}
        edges = list(dict.fromkeys(graph.edges))
        stray = [edge for edge in edges if edge[0] not in paths or edge[1] not in paths]
        if stray:
            raise DatabaseError(f"edge {stray[0]} names a file that is not a node of the graph")
        ins, outs = graph.degrees()
        with self._conn("save a repository") as conn:
            repo_id = _upsert_repository(conn, repo_url, graph, len(edges))
            # Replace, not merge: files gone from the repository must go with their edges.
            conn.execute("DELETE FROM dependencies WHERE repo_id = %s", (repo_id,))
            conn.execute("DELETE FROM files WHERE repo_id = %s", (repo_id,))
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY files (repo_id, path, language, in_degree, out_degree, commit_sha)"
                    " FROM STDIN"
                ) as copy:
                    for node in graph.nodes:
                        copy.write_row(
                            (repo_id, node.path, node.language.value, ins[node.path],
                             outs[node.path], graph.commit)
                        )  # fmt: skip
                with cur.copy("COPY dependencies (repo_id, src_path, dst_path) FROM STDIN") as copy:
                    for src, dst in edges:
                        copy.write_row((repo_id, src, dst))

    def repository(self, repo_url: str) -> Repository | None:
        """The `repositories` row of `repo_url`, None when it was never saved."""
        with self._conn("read a repository") as conn:
            row = conn.execute(
                "SELECT repo_url, last_commit_sha, last_ingested_at, files, edges, files_skipped"
                " FROM repositories WHERE repo_url = %s",
                (repo_url,),
            ).fetchone()
        return None if row is None else Repository(*row)

    def dependents(self, repo_url: str, path: str) -> list[str]:
        """Files of the repository that import `path`, sorted."""
        return self._neighbours(repo_url, path, "src_path", "dst_path")

    def dependencies(self, repo_url: str, path: str) -> list[str]:
        """Files of the repository that `path` imports, sorted."""
        return self._neighbours(repo_url, path, "dst_path", "src_path")

    def _neighbours(self, repo_url: str, path: str, want: str, given: str) -> list[str]:
        query = sql.SQL(
            "SELECT d.{want} FROM dependencies d JOIN repositories r ON r.id = d.repo_id"
            " WHERE r.repo_url = %s AND d.{given} = %s ORDER BY 1"
        ).format(want=sql.Identifier(want), given=sql.Identifier(given))
        with self._conn("read dependencies") as conn:
            rows = conn.execute(query, (repo_url, path)).fetchall()
        return [row[0] for row in rows]


def _upsert_repository(
    conn: psycopg.Connection[Any], repo_url: str, graph: RepoGraph, edges: int
) -> int:
    # The row lock taken here serialises two workers saving the same repository.
    row = conn.execute(
        "INSERT INTO repositories (repo_url, last_commit_sha, last_ingested_at, files, edges,"
        " files_skipped) VALUES (%s, %s, now(), %s, %s, %s)"
        " ON CONFLICT (repo_url) DO UPDATE SET last_commit_sha = EXCLUDED.last_commit_sha,"
        " last_ingested_at = EXCLUDED.last_ingested_at, files = EXCLUDED.files,"
        " edges = EXCLUDED.edges, files_skipped = EXCLUDED.files_skipped"
        " RETURNING id",
        (repo_url, graph.commit, len(graph.nodes), edges, len(graph.skipped)),
    ).fetchone()
    if row is None:
        raise DatabaseError(f"upserting repository {repo_url} returned no id")
    return int(row[0])


def _migrations() -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped in neo_ray/stores/sql, in name order."""
    folder = resources.files("neo_ray.stores").joinpath("sql")
    scripts = [entry for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in sorted(scripts, key=lambda e: e.name)
    ]


def _parse_timestamp(text: str) -> datetime:
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise DatabaseError(f"job record timestamp {text!r} is not ISO 8601") from exc
