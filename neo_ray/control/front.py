"""The HTTP front: the port users call, kept open while Serve's proxy dies and comes back.

Serve's HTTP proxy is a Ray actor. When it dies, Serve starts another in a few seconds, and
meanwhile nothing listens on its port: clients are refused, and a request the proxy held is
cut without an answer. The front listens on `NEO_HTTP_HOST:NEO_HTTP_PORT` instead and relays
each connection to the proxy on a loopback port. It answers itself only where the proxy
cannot:

- the proxy refuses the connection (it is being replaced): `503` with `Retry-After`;
- the proxy's connection ends after a request and before any byte of its answer: `503`;
- no byte of an answer within `deadline_s` (the proxy is stuck): `503`;
- a request head it cannot relay (too large, malformed, a chunked body): `4xx`.

A caller's kept-alive connection outlives the proxy's: when the proxy closes its side between
requests (it died, or its keep-alive ran out), the next request opens a new one, so a caller
never sends a request into a connection that is being closed.

It reads request heads only, to set `X-Forwarded-For` to the caller's address (the API logs
refused tokens with it; a value the caller wrote is dropped) and to know where a request ends.
Answers pass through as bytes. Pure asyncio, no Ray: `FrontActor` runs it on the head node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

HEAD_LIMIT = 64 * 1024
"""The largest request head relayed (request line and headers); a larger one is a 431."""
CONNECT_TIMEOUT_S = 2.0
IDLE_S = 120.0
"""A caller's connection with no request for this long is closed."""
CHUNK = 64 * 1024
RETRY_AFTER_S = 1


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass
class _Request:
    method: bytes
    head: bytes
    length: int
    upgrade: bool
    last: bool  # the caller asked to close after the answer (or speaks HTTP/1.0)


def answer(status: int, reason: str, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer with a JSON `detail`, closing the connection."""
    body = json.dumps({"detail": detail}).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        lines.append(f"retry-after: {retry_after}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_head(head: bytes, client: str) -> _Request:
    """Check a request head and rewrite it for the proxy: `X-Forwarded-For` is the caller."""
    lines = head[:-4].split(b"\r\n")
    request_line, fields = lines[0], lines[1:]
    if request_line.count(b" ") != 2 or not request_line.split(b" ")[2].startswith(b"HTTP/1."):
        raise _Refused(400, "Bad Request", "malformed request line")
    kept: list[bytes] = []
    lengths: set[bytes] = set()
    upgrade = False
    connection: set[bytes] = set()  # the tokens of every Connection header
    for line in fields:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise _Refused(400, "Bad Request", "malformed header line")
        key, value = name.lower(), value.strip()
        if key == b"x-forwarded-for":
            continue
        if key == b"content-length":
            lengths.add(value)
        elif key == b"transfer-encoding":
            raise _Refused(411, "Length Required", "send the body with Content-Length")
        elif key == b"upgrade":
            upgrade = True
        elif key == b"connection":
            connection |= {token.strip() for token in value.lower().split(b",")}
        kept.append(line)
    if len(lengths) > 1:
        raise _Refused(400, "Bad Request", "conflicting Content-Length headers")
    length = lengths.pop() if lengths else b"0"
    if not length.isdigit() or len(length) > 18:
        raise _Refused(400, "Bad Request", "Content-Length is not a number")
    kept.append(b"X-Forwarded-For: " + client.encode())
    head = b"\r\n".join([request_line, *kept]) + b"\r\n\r\n"
    method = request_line.split(b" ", 1)[0]
    # HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless `keep-alive`.
    if request_line.endswith(b"HTTP/1.1"):
        last = b"close" in connection
    else:
        last = b"keep-alive" not in connection
    return _Request(method, head, int(length), upgrade, last)


async def read_request(reader: asyncio.StreamReader, client: str) -> _Request | None:
    """The next request head, rewritten; None when the caller closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # closed, with or without half a head: nothing to answer
    except asyncio.LimitOverrunError as exc:
        raise _Refused(431, "Request Header Fields Too Large", "request head too large") from exc
    return parse_head(head, client)


class _Upstream:
    """One connection to the proxy. Its pump copies each answer to the caller as it comes,
    reading just enough of it (head, Content-Length, chunks) to know where it ends: when the
    proxy's side closes between answers, the caller's connection stays open for the next
    request; when it closes inside one, the caller's connection is closed too (the answer
    is cut and cannot be mended)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        caller: asyncio.StreamWriter,
    ) -> None:
        self.reader, self.writer, self.caller = reader, writer, caller
        self.started = asyncio.Event()  # a byte of answer came since the last request
        self.answered = asyncio.Event()  # the last request's answer has ended
        self.switched = False  # the answer was a 101: raw bytes from here on
        self.methods: deque[bytes] = deque()  # of the requests not yet answered
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        inside = False  # whether the proxy's bytes so far stop inside an answer
        try:
            while True:
                head = await self._head()
                if head is None:
                    return
                status, length, chunked = _answer_head(head)
                self.switched = status == 101
                self.started.set()
                await self._out(head)
                inside = True
                if status == 101:  # switched protocols: bytes until the end
                    await self._out_rest()
                    return
                if status < 200:  # 100 Continue and the like: the answer follows
                    continue
                method = self.methods.popleft() if self.methods else b"GET"
                if method == b"HEAD" or status in (204, 304):
                    pass
                elif chunked:
                    await self._out_chunks()
                elif length is not None:
                    await self._out_exactly(length)
                else:  # delimited by the close: the caller's connection ends with it
                    await self._out_rest()
                    return
                inside = False
                self.answered.set()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            log.debug("the proxy's connection broke", exc_info=True)
        finally:
            self.writer.close()
            if inside:
                self.caller.close()

    async def _head(self) -> bytes | None:
        """The next answer head; None at a clean close before one."""
        try:
            return await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None

    async def _out_chunks(self) -> None:
        while size := int((line := await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await self._out(line)
            await self._out_exactly(size + 2)
        await self._out(line)
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
            await self._out(line)
        await self._out(line)

    async def _out(self, data: bytes) -> None:
        self.caller.write(data)
        await self.caller.drain()

    async def _out_exactly(self, length: int) -> None:
        while length > 0:
            chunk = await self.reader.read(min(CHUNK, length))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", length)
            await self._out(chunk)
            length -= len(chunk)

    async def _out_rest(self) -> None:
        while chunk := await self.reader.read(CHUNK):
            await self._out(chunk)

    @property
    def closed(self) -> bool:
        return self.pump.done()

    async def send(self, request: _Request, reader: asyncio.StreamReader) -> bool:
        """Send the request and its body on; False when the caller left halfway."""
        self.started.clear()
        self.answered.clear()
        self.methods.append(request.method)
        self.writer.write(request.head)
        remaining = request.length
        while remaining > 0:
            if not (chunk := await _body_chunk(reader, remaining)):
                return False
            self.writer.write(chunk)
            await self.writer.drain()
            remaining -= len(chunk)
        await self.writer.drain()
        return True

    async def _until(self, event: asyncio.Event, timeout_s: float | None = None) -> None:
        """Return once `event` is set, the proxy's connection has ended, or `timeout_s` passed."""
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait(
                {waiter, self.pump}, timeout=timeout_s, return_when="FIRST_COMPLETED"
            )
        finally:
            waiter.cancel()

    async def answer_started(self, deadline_s: float) -> str | None:
        """None once the answer begins; else why it never will."""
        await self._until(self.started, deadline_s)
        if self.started.is_set():
            return None
        if self.closed:
            return "the HTTP proxy stopped; retry"
        return f"no answer within {deadline_s:g} s; retry"

    async def answer_ended(self) -> None:
        """Return once the answer has ended, or the proxy's connection has."""
        await self._until(self.answered)

    async def close(self) -> None:
        self.pump.cancel()
        await asyncio.gather(self.pump, return_exceptions=True)


class Front:
    """Relay `host:port` to the proxy at `upstream`; answer 503 where the proxy cannot."""

    def __init__(
        self,
        host: str,
        port: int,
        upstream: tuple[str, int],
        *,
        deadline_s: float,
        retry_after_s: int = RETRY_AFTER_S,
    ) -> None:
        self.host, self.port, self.upstream = host, port, upstream
        self.deadline_s = deadline_s
        self.retry_after_s = retry_after_s
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=HEAD_LIMIT, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _unavailable(self, detail: str) -> bytes:
        return answer(503, "Service Unavailable", detail, retry_after=self.retry_after_s)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "unknown"
        upstream: _Upstream | None = None
        try:
            upstream = await self._serve(reader, writer, client)
        except Exception:  # one connection's trouble never reaches the server
            log.debug("connection from %s ended with an error", client, exc_info=True)
        finally:
            if upstream is not None:
                await upstream.close()
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> _Upstream | None:
        """Relay the caller's requests one after another. The proxy's connection is opened
        for the first and again whenever the proxy closed it between requests (a new proxy
        after the old one died), so that a kept-alive caller never meets a closed socket."""
        upstream: _Upstream | None = None
        while True:
            try:
                request = await asyncio.wait_for(read_request(reader, client), IDLE_S)
            except _Refused as refused:
                writer.write(answer(refused.status, refused.reason, refused.detail))
                await writer.drain()
                return upstream
            except TimeoutError:
                return upstream
            if request is None:
                return upstream
            if upstream is None or upstream.closed:
                if upstream is not None:
                    await upstream.close()
                upstream = None
                try:
                    ureader, uwriter = await asyncio.wait_for(
                        asyncio.open_connection(*self.upstream), CONNECT_TIMEOUT_S
                    )
                except (OSError, TimeoutError):
                    # Read the body too, so that closing does not reset the answer.
                    if await _skip(reader, request.length):
                        writer.write(self._unavailable("the HTTP proxy is restarting; retry"))
                        await writer.drain()
                    return None
                upstream = _Upstream(ureader, uwriter, writer)
            try:
                if not await upstream.send(request, reader):
                    return upstream
            except ConnectionError:
                pass  # the proxy went away: answer_started says so
            why = await upstream.answer_started(self.deadline_s)
            if why is not None:
                writer.write(self._unavailable(why))
                await writer.drain()
                return upstream
            if request.upgrade and upstream.switched:  # another protocol: bytes both ways
                while chunk := await reader.read(CHUNK):
                    upstream.writer.write(chunk)
                    await upstream.writer.drain()
                await upstream.pump
                return upstream
            # One answer at a time: the next request (pipelined, or after a half-close) is
            # read only once this answer has ended, so no 503 lands inside it.
            await upstream.answer_ended()
            if request.last:
                return upstream


def _answer_head(head: bytes) -> tuple[int, int | None, bool]:
    """Status, Content-Length and whether chunked, of an answer's head."""
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return status, length, chunked


async def _skip(reader: asyncio.StreamReader, length: int) -> bool:
    """Read and drop a body; False when the caller left before its end."""
    while length > 0:
        if not (chunk := await _body_chunk(reader, length)):
            return False
        length -= len(chunk)
    return True


async def _body_chunk(reader: asyncio.StreamReader, remaining: int) -> bytes:
    """The next piece of a request body; b"" when the caller left, or stopped sending for
    `IDLE_S` (let go like an idle connection)."""
    try:
        return await asyncio.wait_for(reader.read(min(CHUNK, remaining)), IDLE_S)
    except TimeoutError:
        return b""


def run_in_thread(front: Front, timeout_s: float = 30.0) -> asyncio.AbstractEventLoop:
    """Run `front` on its own event loop in a daemon thread; return once it listens."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(front.start())
        except BaseException as exc:  # the bind failed: __init__ reports it
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    threading.Thread(target=main, name="neo-front", daemon=True).start()
    if not started.wait(timeout_s):
        raise TimeoutError(f"the HTTP front did not start in {timeout_s:.0f} s")
    if failure:
        raise failure[0]
    return loop
