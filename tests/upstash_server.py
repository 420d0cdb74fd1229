"""An Upstash-REST-compatible server in front of a real redis-server, for tests and benchmarks.

Upstash's own servers are out of reach here, so the tests start this: it speaks the REST
protocol (POST of a command array to `/`, a 2-D array to `/pipeline` and `/multi-exec`,
`Authorization: Bearer`, `Upstash-Encoding: base64`) and runs every command on the real
Redis it fronts, unchanged. It counts commands (as Upstash bills them: one per command, a
pipeline of n is n) and can lose replies on purpose: `lose_replies(n, command)` runs the next
n matching commands and then drops the connection without answering, as a network that failed
after the server did its work.

Run it alone with `python tests/upstash_server.py REDIS_URL TOKEN` (prints its URL).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from redis._parsers.base import BaseParser
from redis.exceptions import ResponseError

# redis-py strips an error's code ("NOSCRIPT ...") into its exception class; put it back.
_CODES = {cls: code for code, cls in BaseParser.EXCEPTION_CLASSES.items() if isinstance(cls, type)}


class UpstashServer:
    """The REST front (a thread) and its fault switches; `url` is its base URL."""

    def __init__(self, redis_url: str, token: str) -> None:
        self.token = token
        self.counts: Counter[str] = Counter()
        # RESP2, as Upstash answers: HGETALL is a flat list of pairs, not a map.
        self._pool = redis.ConnectionPool.from_url(redis_url, protocol=2)
        self._lock = threading.Lock()
        self._lose: list[tuple[int, str | None]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> UpstashServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._pool.disconnect()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def lose_replies(self, n: int = 1, command: str | None = None) -> None:
        """Run the next `n` requests (whose first command is `command`, if given), then drop
        the connection without a reply."""
        with self._lock:
            self._lose.append((n, command.upper() if command else None))

    def _should_lose(self, name: str) -> bool:
        with self._lock:
            for i, (n, command) in enumerate(self._lose):
                if command is None or command == name:
                    self._lose[i] = (n - 1, command)
                    self._lose = [(k, c) for k, c in self._lose if k > 0]
                    return True
            return False

    def run(self, commands: list[list[str]], *, transaction: bool) -> list[dict[str, Any]]:
        """Run commands on Redis; one `{"result"}` or `{"error"}` per command."""
        with self._lock:
            self.counts.update(str(c[0]).upper() for c in commands if c)
        conn = self._pool.get_connection()
        try:
            if transaction:
                return _multi_exec(conn, commands)
            return [_one(conn, command) for command in commands]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)


def _error(exc: ResponseError) -> str:
    return f"{_CODES.get(type(exc), 'ERR')} {exc}"


def _one(conn: Any, command: list[str]) -> dict[str, Any]:
    try:
        conn.send_command(*command)
        return {"result": conn.read_response()}
    except ResponseError as exc:
        return {"error": _error(exc)}


def _multi_exec(conn: Any, commands: list[list[str]]) -> list[dict[str, Any]]:
    conn.send_command("MULTI")
    conn.read_response()
    for command in commands:
        conn.send_command(*command)
        try:
            conn.read_response()  # QUEUED
        except ResponseError as exc:
            conn.send_command("DISCARD")
            conn.read_response()
            return [{"error": _error(exc)} for _ in commands]
    conn.send_command("EXEC")
    replies = conn.read_response()
    return [
        {"error": _error(r)} if isinstance(r, ResponseError) else {"result": r} for r in replies
    ]


def _encode(value: Any, b64: bool) -> Any:
    """A RESP reply as Upstash's JSON shows it (strings base64 with Upstash-Encoding)."""
    if isinstance(value, bytes):
        if value == b"OK":
            return "OK"
        return base64.b64encode(value).decode() if b64 else value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_encode(v, b64) for v in value]
    if isinstance(value, dict):  # "result" / "error" wrappers
        return {k: _encode(v, b64) if k == "result" else v for k, v in value.items()}
    return value


def _handler_for(server: UpstashServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                self._reply(401, {"error": "Unauthorized"})
                return
            try:
                parsed = json.loads(body)
            except ValueError:
                self._reply(400, {"error": "ERR failed to parse command"})
                return
            path = self.path.rstrip("/")
            batch = path in ("/pipeline", "/multi-exec")
            commands = parsed if batch else [parsed]
            if not _well_formed(commands) or path not in ("", "/pipeline", "/multi-exec"):
                self._reply(400, {"error": "ERR failed to parse command"})
                return
            lose = server._should_lose(str(commands[0][0]).upper())
            results = server.run(commands, transaction=path == "/multi-exec")
            if lose:
                self.close_connection = True
                self.connection.shutdown(2)  # the work is done; the reply never arrives
                return
            b64 = self.headers.get("Upstash-Encoding") == "base64"
            encoded = [_encode(r, b64) for r in results]
            if batch:
                self._reply(200, encoded)
            else:
                self._reply(400 if "error" in encoded[0] else 200, encoded[0])

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _well_formed(commands: Any) -> bool:
    return (
        isinstance(commands, list)
        and bool(commands)
        and all(isinstance(c, list) and c for c in commands)
        and all(isinstance(a, str | int | float) for c in commands for a in c)
    )


@contextmanager
def running(redis_url: str, token: str) -> Iterator[UpstashServer]:
    """Start a server in front of `redis_url`; stop it afterwards."""
    server = UpstashServer(redis_url, token).start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    with running(sys.argv[1], sys.argv[2]) as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
