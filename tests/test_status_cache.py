"""The /worker/status snapshot: one read serves every request within its age, one at a time."""

from __future__ import annotations

import asyncio
import threading
import time

from neo_ray.control.api import StatusCache


def test_requests_within_the_age_share_one_read_and_an_older_one_reads_again() -> None:
    reads: list[float] = []
    lock = threading.Lock()

    def read() -> dict[str, object]:
        with lock:
            reads.append(time.monotonic())
        time.sleep(0.05)  # a Redis round trip under load
        return {"n": len(reads)}

    async def burst(cache: StatusCache, count: int) -> list[dict[str, object]]:
        return list(await asyncio.gather(*(cache.get(read) for _ in range(count))))

    async def scenario() -> None:
        cache = StatusCache(max_age_s=0.3)
        first = await burst(cache, 50)
        assert first == [{"n": 1}] * 50 and len(reads) == 1  # single flight, not 50 reads
        assert await cache.get(read) == {"n": 1}
        await asyncio.sleep(0.35)
        assert await cache.get(read) == {"n": 2} and len(reads) == 2
        uncached = StatusCache(max_age_s=0.0)
        await uncached.get(read)
        await uncached.get(read)
        assert len(reads) == 4

    asyncio.run(scenario())


def test_a_failed_read_is_not_cached() -> None:
    calls = {"n": 0}

    def flaky() -> dict[str, object]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("redis down")
        return {"ok": True}

    async def scenario() -> None:
        cache = StatusCache(max_age_s=10.0)
        try:
            await cache.get(flaky)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failure must reach the caller")
        assert await cache.get(flaky) == {"ok": True}

    asyncio.run(scenario())
