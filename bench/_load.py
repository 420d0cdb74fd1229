"""A small, bounded HTTP/1.1 load generator on asyncio: open loop at a rate, or closed loop.

It speaks raw HTTP over keep-alive connections instead of using an HTTP client library: on a
two-core machine the generator shares the CPU with the server it measures, so the less it
spends per request the less it distorts the figures.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# Every wait is bounded: a request that takes longer than this counts as an error.
REQUEST_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 256

RequestBytes = Callable[[int], bytes]


@dataclass
class Result:
    """Latencies (seconds) of the answered requests, status counts, and the wall time."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    sent: int = 0
    max_lag_s: float = 0.0

    def percentile(self, q: float) -> float:
        """The q-quantile (nearest rank) in milliseconds; NaN when nothing was answered."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
        return ordered[rank] * 1000.0

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s > 0 else 0.0


def request_bytes(method: str, path: str, host: str, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 request with an empty body, keep-alive."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection") != "close"


class Pool:
    """Keep-alive connections to one server; a request takes an idle one or opens another."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Conn] = []
        self._open = 0

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._open += 1
        return _Conn(reader, writer)

    async def warm(self, count: int) -> None:
        for _ in range(count - len(self._idle)):
            self._idle.append(await self._connect())

    async def send(self, raw: bytes) -> int:
        """Send one request and return its status; the connection goes back when reusable."""
        if self._idle:
            conn = self._idle.pop()
        elif self._open < MAX_CONNECTIONS:
            conn = await self._connect()
        else:
            raise ConnectionError("connection limit reached")
        try:
            conn.writer.write(raw)
            status, keep = await _read_response(conn.reader)
        except BaseException:
            conn.close()
            self._open -= 1
            raise
        if keep:
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        return status

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._open = 0


async def _timed(pool: Pool, raw: bytes, start: float, result: Result) -> None:
    """One request; latency counted from `start` (its scheduled send time in open loop)."""
    try:
        status = await asyncio.wait_for(pool.send(raw), REQUEST_TIMEOUT_S)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.errors[type(exc).__name__] += 1
        return
    result.latencies.append(time.perf_counter() - start)
    result.statuses[status] += 1


async def open_loop(pool: Pool, make: RequestBytes, rate: float, duration_s: float) -> Result:
    """Send `rate * duration_s` requests at fixed intervals, whatever the answers' pace.

    Latency runs from each request's scheduled time, so a server that falls behind shows its
    queueing in the figures (no coordinated omission).
    """
    result = Result()
    count = max(1, int(rate * duration_s))
    interval = 1.0 / rate
    tasks = []
    start = time.perf_counter()
    for i in range(count):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # How late the generator itself sends: were it late, the figures would be ours.
        result.max_lag_s = max(result.max_lag_s, time.perf_counter() - due)
        tasks.append(asyncio.create_task(_timed(pool, make(i), due, result)))
        result.sent += 1
    _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 1.0)
    result.wall_s = time.perf_counter() - start
    for task in pending:
        task.cancel()
    if pending:
        result.errors["unfinished"] += len(pending)
    return result


async def closed_loop(
    pool: Pool, make: RequestBytes, concurrency: int, duration_s: float, max_requests: int
) -> Result:
    """`concurrency` clients, each sending its next request when the last is answered."""
    result = Result()
    start = time.perf_counter()
    deadline = start + duration_s
    counter = iter(range(max_requests))

    async def client() -> None:
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            result.sent += 1
            await _timed(pool, make(i), time.perf_counter(), result)

    await pool.warm(concurrency)
    await asyncio.wait_for(
        asyncio.gather(*(client() for _ in range(concurrency))),
        duration_s + REQUEST_TIMEOUT_S + 1.0,
    )
    result.wall_s = time.perf_counter() - start
    return result
