"""The HTTP front over real sockets: a real uvicorn server behind it, or a raw one that
misbehaves on purpose (refuses, dies under a request, never answers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from neo_ray import procs
from neo_ray.control.front import Front

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what it got: method, path, body, the caller's X-Forwarded-For."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "body": body.decode(),
        "forwarded": [v.decode() for k, v in scope["headers"] if k == b"x-forwarded-for"],
        "host": headers.get(b"host", b"").decode(),
    }
    if scope["path"] == "/chunked":  # no Content-Length: uvicorn sends it chunked
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    payload = json.dumps(seen).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def uvicorn_at(port: int) -> AsyncIterator[uvicorn.Server]:
    server = uvicorn.Server(
        uvicorn.Config(echo_app, host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def raw_at(port: int, handler: Handler) -> AsyncIterator[None]:
    server = await asyncio.start_server(handler, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def front_to(upstream_port: int, deadline_s: float = 5.0) -> AsyncIterator[str]:
    port = procs.free_port()
    front = Front("127.0.0.1", port, ("127.0.0.1", upstream_port), deadline_s=deadline_s)
    await front.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await front.close()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


def test_requests_and_answers_pass_through_with_the_callers_address() -> None:
    async def scenario() -> None:
        port = procs.free_port()
        async with (
            uvicorn_at(port),
            front_to(port) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            # Several requests on one kept-alive connection, bodies included.
            for i in range(5):
                reply = await http.post(
                    f"/p/{i}",
                    content=b"x" * (i * 70_000),
                    headers={"X-Forwarded-For": "6.6.6.6"},
                )
                assert reply.status_code == 200
                seen = reply.json()
                assert seen["path"] == f"/p/{i}"
                assert seen["body"] == "x" * (i * 70_000)
                # The caller's own X-Forwarded-For is dropped: the front says who called.
                assert seen["forwarded"] == ["127.0.0.1"]
                assert seen["host"] == base.removeprefix("http://")
            got = await asyncio.gather(*(http.get(f"/g/{i}") for i in range(20)))
            assert sorted(r.json()["path"] for r in got) == sorted(f"/g/{i}" for i in range(20))

    run(scenario())


def test_no_proxy_listening_is_a_503_with_retry_after_then_traffic_resumes() -> None:
    async def scenario() -> None:
        port = procs.free_port()  # nothing listens there yet
        async with front_to(port) as base, httpx.AsyncClient(base_url=base) as http:
            reply = await http.post("/api/x", content=b"{}")
            assert reply.status_code == 503
            assert reply.headers["retry-after"] == "1"
            assert "restarting" in reply.json()["detail"]
            async with uvicorn_at(port):
                assert (await http.get("/back")).status_code == 200

    run(scenario())


def test_a_proxy_dying_under_a_request_is_a_503() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()  # a reset, as a killed process leaves

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, hang_up), front_to(port) as base:
            reply = await httpx.AsyncClient(base_url=base).get("/x")
            assert reply.status_code == 503
            assert reply.headers["retry-after"] == "1"
            assert "stopped" in reply.json()["detail"]

    run(scenario())


def test_a_proxy_that_never_answers_is_a_503_after_the_deadline() -> None:
    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, stuck), front_to(port, deadline_s=0.5) as base:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                started = asyncio.get_running_loop().time()
                reply = await http.get("/x")
                waited = asyncio.get_running_loop().time() - started
            assert reply.status_code == 503
            assert "no answer within 0.5 s" in reply.json()["detail"]
            assert waited < 5

    run(scenario())


def test_an_answer_cut_halfway_is_not_patched_with_a_503() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, half), front_to(port) as base:
            with pytest.raises(httpx.RemoteProtocolError):
                await httpx.AsyncClient(base_url=base).get("/x")

    run(scenario())


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_heads_it_cannot_relay_get_a_4xx(raw: bytes, status: int) -> None:
    async def scenario() -> None:
        port = procs.free_port()
        async with uvicorn_at(port), front_to(port) as base:
            reader, writer = await asyncio.open_connection(*base.removeprefix("http://").split(":"))
            writer.write(raw)
            await writer.drain()
            reply = await reader.read()
            writer.close()
            assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:80]
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["detail"]

    run(scenario())


def test_chunked_empty_and_head_answers_keep_the_connection_usable() -> None:
    async def scenario() -> None:
        port = procs.free_port()
        async with (
            uvicorn_at(port),
            front_to(port) as base,
            httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1)) as http,
        ):
            for _ in range(3):
                assert (await http.get("/chunked")).content == b"one,two,three"
                assert (await http.get("/empty")).status_code == 204
                head = await http.head("/x")
                assert head.status_code == 200 and head.content == b""
                assert (await http.get("/after")).json()["path"] == "/after"

    run(scenario())


def test_a_kept_alive_caller_outlives_the_proxys_connection() -> None:
    """The proxy closes its side after each answer (as a dying or idle-closing one does); the
    caller's connection stays open and its next request goes through a new one."""
    served: list[int] = []

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, once), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            for _ in range(3):
                writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                await writer.drain()
                assert await reader.readuntil(b"\r\n\r\n") == (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
                )
                assert await reader.readexactly(2) == b"ok"
                await asyncio.sleep(0.2)  # the proxy's side is closed by now
            writer.close()
        assert len(served) == 3

    run(scenario())


async def _read_all(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    data = b""
    with contextlib.suppress(TimeoutError):
        while chunk := await asyncio.wait_for(reader.read(65536), timeout_s):
            data += chunk
    return data


def test_an_http11_connection_header_without_close_keeps_the_connection() -> None:
    """`Connection: TE` (any list without `close`) on HTTP/1.1 is a kept-alive connection:
    the next request is answered at once, not after the proxy's keep-alive runs out."""

    async def scenario() -> None:
        port = procs.free_port()
        async with uvicorn_at(port), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            for path in (b"/one", b"/two"):
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: TE\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
                assert head.startswith(b"HTTP/1.1 200 "), head
                size = int(await reader.readuntil(b"\r\n"), 16)
                assert json.loads(await reader.readexactly(size))["path"] == path.decode()
                assert await reader.readexactly(7) == b"\r\n0\r\n\r\n"
            writer.close()

    run(scenario())


def test_pipelined_requests_behind_a_slow_answer_get_no_503_inside_it() -> None:
    """The second of two pipelined requests waits for the first answer to end: its deadline
    never writes a 503 into the middle of the first answer's body."""

    async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
        for _ in range(10):  # 1.5 s for the body, three times the deadline
            await asyncio.sleep(0.15)
            writer.write(b"a")
            await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, slow_body), front_to(port, deadline_s=0.5) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            writer.write(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            await writer.drain()
            data = await _read_all(reader, 3)
            writer.close()
            assert data == (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\naaaaaaaaaa"
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            ), data

    run(scenario())


def test_an_upgrade_the_proxy_declines_leaves_later_heads_rewritten() -> None:
    """Only a `101` switches the connection to raw bytes: after an ordinary answer to a
    request that asked for an upgrade, the next request's X-Forwarded-For is still the front's."""

    async def scenario() -> None:
        port = procs.free_port()
        async with uvicorn_at(port), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            writer.write(
                b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200 "), head
            size = int(await reader.readuntil(b"\r\n"), 16)
            await reader.readexactly(size + 7)
            writer.write(b"GET /next HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            size = int(await reader.readuntil(b"\r\n"), 16)
            seen = json.loads(await reader.readexactly(size))
            writer.close()
            assert seen["path"] == "/next"
            assert seen["forwarded"] == ["127.0.0.1"]

    run(scenario())


def test_a_caller_that_half_closes_after_its_request_gets_the_whole_answer() -> None:
    async def late_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"body")
        await writer.drain()

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, late_body), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            writer.write_eof()  # nothing more to send; the answer is still wanted
            data = await _read_all(reader, 3)
            writer.close()
            assert data == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody", data

    run(scenario())


def test_a_caller_that_never_sends_its_body_is_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that stops coming holds the caller's and the proxy's connections only as long as
    an idle connection would be held."""
    from neo_ray.control import front

    monkeypatch.setattr(front, "IDLE_S", 0.5)
    closed = asyncio.Event()

    async def waits(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the front lets this connection go
        closed.set()

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, waits), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            writer.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            await asyncio.wait_for(closed.wait(), 5)
            writer.close()

    run(scenario())


def test_a_101_switches_to_bytes_both_ways_and_100_continue_passes() -> None:
    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n\r\n")
        while data := await reader.read(100):
            writer.write(data.upper())
        writer.close()

    async def scenario() -> None:
        port = procs.free_port()
        async with raw_at(port, switch), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(b"GET /not-a-request HTTP/1.1\r\n\r\n")  # raw bytes now, not parsed
            assert await asyncio.wait_for(reader.readexactly(31), 3) == (
                b"GET /NOT-A-REQUEST HTTP/1.1\r\n\r\n"
            )
            writer.close()

        async with uvicorn_at(port), front_to(port) as base:
            host, front_port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(front_port))
            writer.write(
                b"POST /c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert continued.startswith(b"HTTP/1.1 100 ")
            writer.write(b"hi")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200 ")
            size = int(await reader.readuntil(b"\r\n"), 16)
            assert json.loads(await reader.readexactly(size))["body"] == "hi"
            writer.close()

    run(scenario())
