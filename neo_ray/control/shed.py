"""An ASGI middleware for Serve's HTTP proxy: no answer from a replica becomes a 503.

When every replica of a deployment is gone (killed, restarting), Serve's proxy holds requests
until one is back, and a request whose replica dies under it ends without a response (the
server then says 500). Both are a temporary lack of replicas, which clients should retry:
this middleware answers them `503` with `Retry-After`, the first after `deadline_s` without
the start of a response. A response that has started passes through untouched.

Serve installs it in its proxy through `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`
(`middlewares` below), which neo-ray sets in the environment of the Serve controller; the
proxy the controller starts inherits it (system.serve_controller_env). Pure ASGI, no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from starlette.middleware import Middleware

Message = dict[str, Any]
CALLBACK = "neo_ray.control.shed:middlewares"
DEADLINE_ENV = "NEO_HTTP_DEADLINE_S"
DEFAULT_DEADLINE_S = 20.0
RETRY_AFTER_S = 1


def middlewares() -> list[Middleware]:
    """Serve's proxy callback: the middleware, with the deadline of the proxy's environment."""
    deadline = float(os.environ.get(DEADLINE_ENV, DEFAULT_DEADLINE_S))
    return [Middleware(ShedWithoutReplica, deadline_s=deadline, retry_after_s=RETRY_AFTER_S)]


class ShedWithoutReplica:
    """Answer 503 + Retry-After where the proxy would hang or end without an answer."""

    def __init__(
        self, app: Any, deadline_s: float = DEFAULT_DEADLINE_S, retry_after_s: int = RETRY_AFTER_S
    ) -> None:
        self.app = app
        self.deadline_s = deadline_s
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def forward(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        call = asyncio.ensure_future(self.app(scope, receive, forward))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait(
                {call, waiter}, timeout=self.deadline_s, return_when="FIRST_COMPLETED"
            )
        finally:
            waiter.cancel()
        if not started.is_set() and not call.done():  # no replica answered in time
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
            await self._unavailable(send, f"no replica answered within {self.deadline_s:g} s")
            return
        try:
            await call
        except Exception:
            if started.is_set():
                raise
        if not started.is_set():  # ended without a response: its replica died
            await self._unavailable(send, "the replica serving this request stopped")

    async def _unavailable(self, send: Any, reason: str) -> None:
        body = json.dumps({"detail": f"control plane unavailable: {reason}; retry"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after_s).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
