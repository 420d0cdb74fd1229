"""PostgreSQL through a psycopg 3 pool: migrations, job records, repositories, import graphs."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from neo_ray.config import Settings
from neo_ray.errors import ConfigError, DatabaseError, DatabaseUnavailable, NotFound
from neo_ray.models import JobRecord, Language, RepoGraph, SkippedFile, SourceFile
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
    """A repository as the `repositories` table holds it, with its files per language."""

    repo_url: str
    last_commit_sha: str | None
    last_ingested_at: datetime
    files: int
    edges: int
    files_skipped: int
    id: int = 0
    last_job_id: str | None = None
    languages: dict[str, int] = field(default_factory=dict)


class Direction(str, Enum):
    """Which way a walk over the import graph follows its edges."""

    DEPENDENCIES = "dependencies"
    """From a file to the files it imports."""
    DEPENDENTS = "dependents"
    """From a file to the files that import it."""
    EITHER = "either"
    """Both ways: the graph as undirected (distance between two files)."""


@dataclass(frozen=True, slots=True)
class Reached:
    """A file a walk reached: its distance from the start and one shortest path to it."""

    path: str
    language: str
    depth: int
    via: tuple[str, ...]
    """The files along one shortest path, the start first and this file last; of several
    shortest paths, the one whose files come first in path order, nearest the file first."""


@dataclass(frozen=True, slots=True)
class Overlap:
    """What a file shares with the queried one in the import graph."""

    shared_neighbors: tuple[str, ...]
    """Files adjacent to both (imported by, or importing, each of them)."""
    common_imports: tuple[str, ...]
    """Files both import."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Translate psycopg's errors into DatabaseError: DatabaseUnavailable for a connection
    that failed or broke, a pool that timed out, or a server that could not run it for now
    (OperationalError, InterfaceError); the others refuse the statement or its data."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL failed to {what}: {redact(str(exc))}") from exc
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


def _connect_error(url: str, ca: Path | None, exc: BaseException) -> DatabaseUnavailable:
    """A connection failure that names the setting to check; never the password."""
    message = redact(str(exc).strip(), url)
    hint = _URL_SETTING
    lowered = message.lower()
    if "certificate" in lowered or "ssl" in lowered:
        hint = f"{_URL_SETTING} and {_CA_SETTING}" if ca else f"{_URL_SETTING} (sslmode)"
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {redact(url)}: {message} (check {hint})"
    )


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


# --------------------------------------------------------------------------- parked metadata

# The form a repository's metadata waits in Redis while PostgreSQL is away: this tag, then
# base64 of zlib-compressed JSON. Edges are pairs of indexes into the file list (a path is
# written once), so a repository of 100,000 files takes a few MiB at most.
_PARKED_TAG = "z1:"


@dataclass(frozen=True, slots=True)
class ParkedRepository:
    """What `save_repository` would have written, kept until PostgreSQL takes it."""

    repo_url: str
    graph: RepoGraph
    job_id: str | None
    ingested_at: datetime

    def encode(self) -> str:
        """The compact text form (`_PARKED_TAG` + base64 of zlib-compressed JSON)."""
        g = self.graph
        index = {node.path: i for i, node in enumerate(g.nodes)}
        body = {
            "repo_url": self.repo_url,
            "job_id": self.job_id,
            "ingested_at": self.ingested_at.isoformat(),
            "commit": g.commit,
            "paths": [node.path for node in g.nodes],
            "languages": [node.language.value for node in g.nodes],
            # A stray edge (a file that is no node) is kept by name: save_repository refuses it.
            "edges": [[index.get(a, a), index.get(b, b)] for a, b in g.edges],
            "skipped": [[s.path, s.reason] for s in g.skipped],
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return _PARKED_TAG + base64.b64encode(zlib.compress(raw, 6)).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> ParkedRepository:
        """The inverse of `encode`; ValueError for anything else."""
        if not text.startswith(_PARKED_TAG):
            raise ValueError(f"not parked metadata: {text[:40]!r}")
        try:
            body = json.loads(zlib.decompress(base64.b64decode(text[len(_PARKED_TAG) :])))
            paths: list[str] = body["paths"]
            nodes = tuple(
                SourceFile(p, Language(lang))
                for p, lang in zip(paths, body["languages"], strict=True)
            )

            def name(end: int | str) -> str:
                return paths[end] if isinstance(end, int) else end

            graph = RepoGraph(
                repo=body["repo_url"],
                commit=body["commit"],
                nodes=nodes,
                edges=tuple((name(a), name(b)) for a, b in body["edges"]),
                skipped=tuple(SkippedFile(p, r) for p, r in body["skipped"]),
            )
            return cls(body["repo_url"], graph, body["job_id"], parse_utc(body["ingested_at"]))
        except (KeyError, TypeError, IndexError, zlib.error, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable parked metadata: {exc}") from exc


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
            raise DatabaseUnavailable(
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

    def job(self, job_id: str) -> JobRecord | None:
        """The record of one job, None when there is none."""
        with self._conn("read a job record") as conn:
            row = conn.execute(
                "SELECT record FROM ingestion_jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
        return None if row is None else JobRecord.model_validate(row[0])

    # ----------------------------------------------------------------- repositories

    def save_repository(
        self,
        repo_url: str,
        graph: RepoGraph,
        job_id: str | None = None,
        *,
        ingested_at: datetime | None = None,
    ) -> bool:
        """Upsert the repository and replace its files and edges, in one transaction.

        `ingested_at` (a parked write: `ParkedRepository`) is when the job finished: the rows
        are then replaced only if no later ingest of the repository is saved already, and
        False says that one stood. Without it the time is the server's now, and it always
        replaces.
        """
        paths = {node.path for node in graph.nodes}
        edges = list(dict.fromkeys(graph.edges))
        stray = [edge for edge in edges if edge[0] not in paths or edge[1] not in paths]
        if stray:
            raise DatabaseError(f"edge {stray[0]} names a file that is not a node of the graph")
        ins, outs = graph.degrees()
        with self._conn("save a repository") as conn:
            repo_id = _upsert_repository(conn, repo_url, graph, len(edges), job_id, ingested_at)
            if repo_id is None:
                return False
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
        return True

    def save_parked(self, parked: ParkedRepository) -> bool:
        """Write metadata that waited in Redis; False when a later ingest was saved first."""
        return self.save_repository(
            parked.repo_url, parked.graph, parked.job_id, ingested_at=parked.ingested_at
        )

    def repository(self, repo_url: str) -> Repository | None:
        """The `repositories` row of `repo_url`, None when it was never saved."""
        with self._conn("read a repository") as conn:
            found = _repositories(conn, "WHERE r.repo_url = %s", (repo_url,))
        return found[0] if found else None

    def repository_by_id(self, repo_id: int) -> Repository | None:
        """The repository with id `repo_id`, None when there is none."""
        with self._conn("read a repository") as conn:
            found = _repositories(conn, "WHERE r.id = %s", (repo_id,))
        return found[0] if found else None

    def repositories(self, limit: int = 100, offset: int = 0) -> list[Repository]:
        """Ingested repositories, most recently ingested first."""
        with self._conn("list repositories") as conn:
            return _repositories(
                conn, "ORDER BY r.last_ingested_at DESC, r.id LIMIT %s OFFSET %s", (limit, offset)
            )

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

    # ----------------------------------------------------------------- graph walks

    def walk(
        self,
        repo_url: str,
        starts: Sequence[str],
        direction: Direction,
        max_depth: int,
        *,
        strict: bool = True,
    ) -> list[Reached]:
        """Every file within `max_depth` steps of `starts`, nearest first, each with its
        distance and one shortest path (the starts themselves left out).

        NotFound for an unknown repository, and with `strict` for a start that is not one of
        its files (else unknown starts are ignored). One recursive query does the walk.
        """
        with self._conn("walk the import graph") as conn:
            repo_id = _repo_id(conn, repo_url)
            known = _known_files(conn, repo_id, starts, strict=strict, repo_url=repo_url)
            if not known:
                return []
            rows = conn.execute(
                _walk_query(direction),
                {"repo_id": repo_id, "starts": known, "max_depth": max_depth},
            ).fetchall()
        return [Reached(path, language, depth, tuple(via)) for path, language, depth, via in rows]

    def language_of(self, repo_url: str, path: str) -> str:
        """The language of one file; NotFound for an unknown repository or file."""
        with self._conn("read a file") as conn:
            repo_id = _repo_id(conn, repo_url)
            row = conn.execute(
                "SELECT language FROM files WHERE repo_id = %s AND path = %s", (repo_id, path)
            ).fetchone()
        if row is None:
            raise NotFound(f"{path} is not a file of {repo_url} (as last ingested)")
        return str(row[0])

    def known_files(self, repo_url: str, paths: Sequence[str]) -> list[str]:
        """Those of `paths` that are files of the repository (NotFound for an unknown one)."""
        with self._conn("read files") as conn:
            repo_id = _repo_id(conn, repo_url)
            return _known_files(conn, repo_id, paths, strict=False, repo_url=repo_url)

    def distances(
        self, repo_url: str, path: str, targets: Sequence[str], max_depth: int
    ) -> dict[str, int]:
        """Undirected graph distance from `path` to each of `targets` within `max_depth`
        (targets farther away or unconnected are left out)."""
        with self._conn("measure graph distances") as conn:
            repo_id = _repo_id(conn, repo_url)
            rows = conn.execute(
                _distance_query(),
                {"repo_id": repo_id, "starts": [path], "max_depth": max_depth,
                 "targets": list(targets)},
            ).fetchall()  # fmt: skip
        return {target: int(depth) for target, depth in rows}

    def overlaps(self, repo_url: str, path: str, others: Sequence[str]) -> dict[str, Overlap]:
        """For each of `others`, the files it and `path` are both adjacent to, and both import."""
        with self._conn("read shared neighbours") as conn:
            repo_id = _repo_id(conn, repo_url)
            rows = conn.execute(
                _OVERLAP_QUERY, {"repo_id": repo_id, "query": path, "others": list(others)}
            ).fetchall()
        found = {other: Overlap(tuple(shared), tuple(common)) for other, shared, common in rows}
        return {other: found.get(other, Overlap((), ())) for other in others}


_UPSERT_REPOSITORY = (
    "INSERT INTO repositories (repo_url, last_commit_sha, last_ingested_at, files, edges,"
    " files_skipped, last_job_id) VALUES (%s, %s, coalesce(%s, now()), %s, %s, %s, %s)"
    " ON CONFLICT (repo_url) DO UPDATE SET last_commit_sha = EXCLUDED.last_commit_sha,"
    " last_ingested_at = EXCLUDED.last_ingested_at, files = EXCLUDED.files,"
    " edges = EXCLUDED.edges, files_skipped = EXCLUDED.files_skipped,"
    " last_job_id = EXCLUDED.last_job_id"
)


def _upsert_repository(
    conn: psycopg.Connection[Any],
    repo_url: str,
    graph: RepoGraph,
    edges: int,
    job_id: str | None,
    ingested_at: datetime | None = None,
) -> int | None:
    """The repository's id after the upsert; None when `ingested_at` is older than the
    ingest already saved (that one stands)."""
    query = _UPSERT_REPOSITORY
    if ingested_at is not None:
        query += " WHERE repositories.last_ingested_at <= EXCLUDED.last_ingested_at"
    # The row lock taken here serialises two workers saving the same repository.
    row = conn.execute(
        (query + " RETURNING id").encode(),
        (repo_url, graph.commit, ingested_at, len(graph.nodes), edges, len(graph.skipped), job_id),
    ).fetchone()
    if row is None:
        if ingested_at is not None:
            return None
        raise DatabaseError(f"upserting repository {repo_url} returned no id")
    return int(row[0])


def _repo_id(conn: psycopg.Connection[Any], repo_url: str) -> int:
    row = conn.execute("SELECT id FROM repositories WHERE repo_url = %s", (repo_url,)).fetchone()
    if row is None:
        raise NotFound(f"repository {repo_url} has not been ingested")
    return int(row[0])


def _known_files(
    conn: psycopg.Connection[Any],
    repo_id: int,
    paths: Sequence[str],
    *,
    strict: bool,
    repo_url: str,
) -> list[str]:
    """`paths` that are files of the repository, deduplicated, in the order given."""
    wanted = list(dict.fromkeys(paths))
    rows = conn.execute(
        "SELECT path FROM files WHERE repo_id = %s AND path = ANY(%s)", (repo_id, wanted)
    ).fetchall()
    present = {row[0] for row in rows}
    missing = [p for p in wanted if p not in present]
    if strict and missing:
        raise NotFound(f"{missing[0]} is not a file of {repo_url} (as last ingested)")
    return [p for p in wanted if p in present]


# One step of a walk, as (from, to) pairs: the edges importer → imported, read either way.
_STEPS = {
    Direction.DEPENDENCIES: "SELECT src_path, dst_path FROM dependencies WHERE repo_id = {r}",
    Direction.DEPENDENTS: "SELECT dst_path, src_path FROM dependencies WHERE repo_id = {r}",
    Direction.EITHER: (
        "SELECT src_path, dst_path FROM dependencies WHERE repo_id = {r}"
        " UNION SELECT dst_path, src_path FROM dependencies WHERE repo_id = {r}"
    ),
}

# Breadth-first search in one recursive query. Each level is one row holding its frontier
# and every file seen so far, so a file is reached once, at its shortest distance, and the
# recursion ends when a level finds nothing new (cycles included): at most (levels) rows,
# each step reading only the edges out of the frontier (the index on either end of an
# edge).
_BFS = """
WITH RECURSIVE step(src, dst) AS NOT MATERIALIZED ({step}),
bfs(depth, frontier, seen) AS (
    SELECT 0, %(starts)s::text[], %(starts)s::text[]
  UNION ALL
    SELECT b.depth + 1, nxt.found, b.seen || nxt.found
    FROM bfs b CROSS JOIN LATERAL (
        SELECT array_agg(n ORDER BY n) AS found FROM (
            SELECT s.dst FROM step s WHERE s.src = ANY(b.frontier)
            EXCEPT SELECT unnest(b.seen)
        ) AS fresh(n)
    ) AS nxt
    WHERE nxt.found IS NOT NULL AND b.depth < %(max_depth)s
),
reached(path, depth) AS (
    SELECT n, b.depth FROM bfs b CROSS JOIN LATERAL unnest(b.frontier) AS n
)"""

# Then each reached file takes as parent the first (in path order) file one level nearer with
# an edge to it, and a second recursion follows parents out from the starts to give every
# file its path.
_WALK = (
    _BFS
    + """,
parent(path, depth, via) AS (
    SELECT r.path, r.depth, min(p.path)
    FROM reached r
    JOIN step s ON s.dst = r.path
    JOIN reached p ON p.path = s.src AND p.depth = r.depth - 1
    WHERE r.depth > 0
    GROUP BY r.path, r.depth
),
trail(path, depth, via) AS (
    SELECT path, 0, ARRAY[path] FROM reached WHERE depth = 0
  UNION ALL
    SELECT c.path, c.depth, t.via || c.path FROM parent c JOIN trail t ON t.path = c.via
)
SELECT t.path, f.language, t.depth, t.via
FROM trail t JOIN files f ON f.repo_id = %(repo_id)s AND f.path = t.path
WHERE t.depth > 0
ORDER BY t.depth, t.path
"""
)

# Only the distances to some files: the walk without parents and paths.
_DISTANCES = (
    _BFS
    + """
SELECT path, depth FROM reached WHERE depth > 0 AND path = ANY(%(targets)s)
"""
)


def _distance_query() -> bytes:
    step = _STEPS[Direction.EITHER].format(r="%(repo_id)s")
    return _DISTANCES.format(step=step).encode()


def _walk_query(direction: Direction) -> bytes:
    step = _STEPS[direction].format(r="%(repo_id)s")
    return _WALK.format(step=step).encode()


# Neighbours (either way) of the queried file and of each other file, matched up.
_OVERLAP_QUERY = b"""
WITH adjacent(file, other, imports) AS (
    SELECT src_path, dst_path, true FROM dependencies
    WHERE repo_id = %(repo_id)s AND (src_path = %(query)s OR src_path = ANY(%(others)s))
  UNION ALL
    SELECT dst_path, src_path, false FROM dependencies
    WHERE repo_id = %(repo_id)s AND (dst_path = %(query)s OR dst_path = ANY(%(others)s))
)
SELECT o.file,
       array_agg(DISTINCT o.other ORDER BY o.other),
       coalesce(array_agg(DISTINCT o.other ORDER BY o.other) FILTER (WHERE o.imports AND q.imports),
                '{}')
FROM adjacent o JOIN adjacent q ON q.file = %(query)s AND q.other = o.other
WHERE o.file <> %(query)s AND o.other <> %(query)s AND o.other <> o.file
GROUP BY o.file
"""


_REPOSITORIES = """
SELECT r.repo_url, r.last_commit_sha, r.last_ingested_at, r.files, r.edges, r.files_skipped,
       r.id, r.last_job_id,
       coalesce((SELECT jsonb_object_agg(l.language, l.n) FROM (
           SELECT language, count(*) AS n FROM files f WHERE f.repo_id = r.id GROUP BY language
       ) l), '{{}}'::jsonb)
FROM repositories r {where}
"""


def _repositories(
    conn: psycopg.Connection[Any], where: str, params: tuple[Any, ...]
) -> list[Repository]:
    rows = conn.execute(_REPOSITORIES.format(where=where).encode(), params).fetchall()
    return [
        Repository(
            repo_url=url, last_commit_sha=sha, last_ingested_at=at, files=files, edges=edges,
            files_skipped=skipped, id=repo_id, last_job_id=job_id, languages=dict(languages),
        )
        for url, sha, at, files, edges, skipped, repo_id, job_id, languages in rows
    ]  # fmt: skip


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
