"""The actor facades: every call has a timeout, and Ray's errors come out as neo-ray's."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import ray

from neo_ray.config import Settings
from neo_ray.edge.facades import ActorFacade, History
from neo_ray.edge.history import HistoryActor
from neo_ray.errors import ActorError, ActorTimeout, QueueUnavailable
from neo_ray.models import JobRecord, JobStatus, utcnow_iso
from neo_ray.stores.queue import Broker

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=0, max_concurrency=4)
class Echo:
    """A real actor that can be slow, raise ours, raise another error, or die."""

    def ping(self) -> bool:
        return True

    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "late"

    def queue_down(self) -> None:
        raise QueueUnavailable("Redis is unreachable: refused")

    def broken(self) -> None:
        raise RuntimeError("boom")


@pytest.fixture
def echo(ray_session: None) -> Iterator[ActorFacade]:
    name = f"echo-{uuid.uuid4().hex[:6]}"
    handle = Echo.options(name=name, namespace="neo").remote()  # type: ignore[attr-defined]
    ray.get(handle.ping.remote(), timeout=120)  # started: its worker process takes seconds
    yield ActorFacade(name, timeout_s=0.5)  # the handle above keeps the actor alive till here
    ray.kill(handle)


def test_a_slow_actor_is_a_timeout_not_a_wait_without_end(echo: ActorFacade) -> None:
    assert echo.call("ping") is True
    started = time.monotonic()
    with pytest.raises(ActorTimeout, match=r"did not answer slow\(\) within 0.5 s"):
        echo.call("slow", 30)
    assert time.monotonic() - started < 10
    assert echo.call("slow", 0.0, timeout_s=5) == "late"  # a per-call timeout wins
    assert echo.ping() is True


def test_errors_are_translated(echo: ActorFacade) -> None:
    with pytest.raises(QueueUnavailable, match="refused"):  # ours come out as themselves
        echo.call("queue_down")
    with pytest.raises(ActorError, match="boom") as caught:
        echo.call("broken")
    assert not isinstance(caught.value, ActorTimeout)
    assert isinstance(caught.value.__cause__, ray.exceptions.RayTaskError)


def test_a_missing_or_dying_actor_is_an_actor_error(echo: ActorFacade) -> None:
    with pytest.raises(ActorError, match="no actor 'nobody-here'"):
        ActorFacade("nobody-here", timeout_s=1).call("ping")
    assert ActorFacade("nobody-here", timeout_s=1).ping() is False
    # A caller waiting on an actor that dies learns it at once, not at its timeout.
    failures: list[BaseException] = []

    def wait_on_it() -> None:
        try:
            echo.call("slow", 60, timeout_s=120)
        except ActorError as exc:
            failures.append(exc)

    waiter = threading.Thread(target=wait_on_it)
    waiter.start()
    time.sleep(1.0)  # the call is in flight
    started = time.monotonic()
    ray.kill(ray.get_actor(echo.name, namespace="neo"), no_restart=True)
    waiter.join(90)
    assert time.monotonic() - started < 60 and len(failures) == 1
    assert "unavailable" in str(failures[0]) and not isinstance(failures[0], ActorTimeout)
    with pytest.raises(ActorError, match="no actor"):  # looked up by name again: it is gone
        echo.call("ping")
    assert echo.ping() is False


def test_history_facade_writes_through_the_real_actor(
    ray_session: None, redis_url: str, redis_prefix: str
) -> None:
    name = f"history-{uuid.uuid4().hex[:6]}"
    settings = Settings(redis_url=redis_url, redis_prefix=redis_prefix)
    actor = HistoryActor.options(name=name, namespace="neo").remote(settings)  # type: ignore[attr-defined]
    history = History(name=name)
    record = JobRecord(
        repo_url="https://github.com/o/r",
        status=JobStatus.COMPLETE,
        duration_seconds=1.0,
        timestamp=utcnow_iso(),
        job_id=str(uuid.uuid4()),
    )
    history.record(record)
    assert Broker.connect(redis_url, prefix=redis_prefix).history(1) == [record]
    assert history.pending() == 0 and history.ping() is True
    ray.kill(actor)
