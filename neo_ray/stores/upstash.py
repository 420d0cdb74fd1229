"""Upstash REST transport for the queue: one HTTPS POST per command, each with a deadline.

The wire protocol (Upstash's REST API): POST a JSON array `["LPOP", "q", "10"]` to the base
URL with `Authorization: Bearer TOKEN`; the reply is `{"result": ...}` or `{"error": ...}`.
With `Upstash-Encoding: base64` every string in a result comes back base64-encoded (so binary
and odd UTF-8 survive JSON); `OK` stays plain. `Upstash-Sync-Token` from one reply, sent with
the next request, gives read-your-writes across Upstash's replicas.

This speaks the protocol over httpx directly rather than through the `upstash-redis` SDK: the
SDK's HTTP client has no timeout (`httpx.Client(timeout=None)`), repeats every failed call
whatever it was (`rest_retries`), and reads an HTTP error page as JSON. Here a call that
never reached the server (connect failed) is repeated once; a call whose reply was lost (read
timeout, connection reset) is repeated once only when it is idempotent: reads, SET/HSET-style
writes, and the Lua scripts marked so (a claim carries its token, so a repeated claim returns
the task it took). Anything else surfaces as QueueUnavailable instead of running twice.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from neo_ray.errors import QueueError, QueueUnavailable
from neo_ray.stores.queue import Arg, Script

# Commands whose second run, after a lost reply, leaves Redis as the first one did.
IDEMPOTENT = frozenset(
    {
        "PING", "GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN", "SCAN",
        "LLEN", "LRANGE", "LINDEX", "LPOS", "HGET", "HMGET", "HGETALL", "HLEN", "HEXISTS",
        "SET", "MSET", "HSET", "HDEL", "DEL", "EXPIRE", "PEXPIRE", "PERSIST", "LTRIM",
        "SCRIPT",
    }
)  # fmt: skip
_RETRY_PAUSE_S = 0.1


class _NoScript(QueueError):
    """The server does not know the script's SHA yet (EVAL it instead)."""


class UpstashBackend:
    """The queue's Backend over Upstash REST (no blocking pops: the broker polls)."""

    blocking = False

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise QueueError("UPSTASH_REDIS_REST_URL must start with https:// (or http://)")
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s),
            headers={"Authorization": f"Bearer {token}", "Upstash-Encoding": "base64"},
            transport=transport,
        )
        self._timeout_s = timeout_s
        self._sync_token = ""
        self._lock = threading.Lock()

    def execute(self, *args: Arg) -> Any:
        name = str(args[0]).upper()
        return self._call(list(args), retry_safe=name in IDEMPOTENT)

    def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        head: list[Arg] = [len(keys), *keys, *args]
        try:
            return self._call(["EVALSHA", script.sha, *head], retry_safe=script.idempotent)
        except _NoScript:
            return self._call(["EVAL", script.source, *head], retry_safe=script.idempotent)

    def blocking_wait(self, key: str, timeout_s: float) -> bool:
        raise QueueError("Upstash REST has no blocking pops; the broker polls instead")

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ one request

    def _call(self, command: list[Arg], *, retry_safe: bool) -> Any:
        name = str(command[0]).upper()
        body = [str(part) for part in command]
        for attempt in (0, 1):
            try:
                reply = self._client.post("", json=body, headers=self._sync_headers())
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Never reached the server: sending it again cannot run it twice.
                if attempt == 0:
                    time.sleep(_RETRY_PAUSE_S)
                    continue
                raise QueueUnavailable(f"Upstash REST is unreachable: {_describe(exc)}") from exc
            except httpx.TransportError as exc:
                # Sent, and the reply was lost: it may have run.
                if retry_safe and attempt == 0:
                    continue
                raise QueueUnavailable(_lost(name, exc, retry_safe)) from exc
            if reply.status_code >= 500 and retry_safe and attempt == 0:
                continue
            return self._result(reply, name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sync_headers(self) -> dict[str, str]:
        with self._lock:
            return {"Upstash-Sync-Token": self._sync_token} if self._sync_token else {}

    def _result(self, reply: httpx.Response, name: str) -> Any:
        token = reply.headers.get("Upstash-Sync-Token")
        if token:
            with self._lock:
                self._sync_token = token
        if reply.status_code in (401, 403):
            raise QueueError(
                f"Upstash REST refused the credentials (HTTP {reply.status_code}): "
                "check UPSTASH_REDIS_REST_TOKEN"
            )
        try:
            payload = reply.json()
        except ValueError as exc:
            raise QueueUnavailable(
                f"Upstash REST answered {name} with HTTP {reply.status_code} and no JSON"
            ) from exc
        if isinstance(payload, dict) and payload.get("error"):
            error = str(payload["error"])
            if error.startswith("NOSCRIPT"):
                raise _NoScript(error)
            if reply.status_code >= 500:
                raise QueueUnavailable(f"Upstash REST failed {name}: {error}")
            raise QueueError(f"Upstash REST refused {name}: {error}")
        if not isinstance(payload, dict) or "result" not in payload:
            raise QueueError(f"Upstash REST answered {name} with an unexpected body")
        try:
            return decode(payload["result"])
        except ValueError as exc:  # not base64, or not UTF-8 underneath
            raise QueueError(f"Upstash REST answered {name} with an undecodable result") from exc


def decode(value: Any) -> Any:
    """A result as redis-py would give it with decode_responses: base64 strings decoded."""
    if isinstance(value, str):
        return value if value == "OK" else base64.b64decode(value).decode("utf-8")
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _lost(name: str, exc: httpx.HTTPError, retry_safe: bool) -> str:
    why = "" if retry_safe else " (not repeated: running it twice would not be safe)"
    return f"Upstash REST: the reply to {name} was lost, {_describe(exc)}{why}"
