"""The /worker/status snapshot: one read serves the requests within its age; a slightly stale
one is answered at once and refreshed behind; an old one is never served."""

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
        # Slightly stale: answered at once from the last snapshot, refreshed behind it.
        assert await burst(cache, 20) == [{"n": 1}] * 20
        await asyncio.sleep(0.1)
        assert len(reads) == 2 and await cache.get(read) == {"n": 2}
        await asyncio.sleep(0.3 * StatusCache.STALE_FACTOR + 0.05)
        assert await cache.get(read) == {"n": 3}  # too old to serve: waits for a fresh read
        uncached = StatusCache(max_age_s=0.0)
        await uncached.get(read)
        await uncached.get(read)
        assert len(reads) == 5

    asyncio.run(scenario())


def test_a_failed_read_is_not_cached() -> None:
    calls = {"n": 0}

    def flaky() -> dict[str, object]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("redis down")
        return {"ok": True}

    async def scenario() -> None:
        cache = StatusCache(max_age_s=0.2)
        try:
            await cache.get(flaky)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failure must reach the caller")
        assert await cache.get(flaky) == {"ok": True}
        # Redis goes down: a stale snapshot is served a little while, then the error shows.
        calls["n"] = 0
        await asyncio.sleep(0.25)
        assert await cache.get(flaky) == {"ok": True}
        await asyncio.sleep(0.2 * StatusCache.STALE_FACTOR)
        try:
            await cache.get(lambda: (_ for _ in ()).throw(RuntimeError("still down")))
        except RuntimeError as exc:
            assert "still down" in str(exc)
        else:
            raise AssertionError("an old snapshot must not hide a failing Redis")

    asyncio.run(scenario())
