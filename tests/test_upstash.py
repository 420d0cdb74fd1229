"""The Upstash REST backend against the REST test server in front of a real redis-server.

What only this transport has: lost replies (a claim stays exactly-once, a non-idempotent call
is never repeated), a deadline on every call, credentials refused without echoing them, the
adaptive idle poll, and the wire protocol itself (checked with Upstash's own SDK too).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from services_fixtures import UPSTASH_TOKEN
from upstash_redis import Redis as UpstashSDK
from upstash_server import UpstashServer

from neo_ray.config import Settings
from neo_ray.errors import ConfigError, QueueError, QueueUnavailable
from neo_ray.models import JobRecord, JobStatus, Task, utcnow_iso
from neo_ray.stores.keys import Keys
from neo_ray.stores.queue import Broker
from neo_ray.stores.upstash import UpstashBackend

pytest_plugins = ["services_fixtures"]


def make_task(repo: str = "github.com/o/r") -> Task:
    return Task(
        job_id=str(uuid.uuid4()),
        repo_url=repo,
        ref=None,
        submitted_at=utcnow_iso(),
        ttl_seconds=3600,
    )


def enqueue(broker: Broker, task: Task) -> bool:
    return broker.enqueue(task, cap=10, dedupe_key=task.repo_url).created


def test_a_claim_whose_reply_is_lost_returns_the_same_task_once(
    upstash: UpstashServer, upstash_broker: Broker
) -> None:
    first, second = make_task("github.com/o/a"), make_task("github.com/o/b")
    enqueue(upstash_broker, first)
    enqueue(upstash_broker, second)
    # Warm: the server knows claim.lua, so the next EVALSHA runs the claim itself.
    assert upstash_broker.claim_nowait() == first
    upstash_broker.requeue(first)
    before = upstash.snapshot()
    upstash.lose_replies(1, "EVALSHA")
    claimed = upstash_broker.claim_nowait()
    assert (upstash.snapshot() - before)["EVALSHA"] == 2  # the claim ran, then its retry
    assert claimed is not None and claimed.job_id == first.job_id
    assert [t.job_id for t in upstash_broker.processing()] == [first.job_id]
    assert [t.job_id for t in upstash_broker.queued()] == [second.job_id]


def test_a_lost_reply_to_a_non_idempotent_call_is_not_repeated(
    upstash: UpstashServer, upstash_broker: Broker, redis_url: str
) -> None:
    record = JobRecord(
        repo_url="github.com/o/r",
        status=JobStatus.COMPLETE,
        duration_seconds=1.0,
        timestamp=utcnow_iso(),
        job_id=str(uuid.uuid4()),
    )
    upstash.lose_replies(1, "LPUSH")
    with pytest.raises(QueueUnavailable, match=r"LPUSH.*not repeated"):
        upstash_broker.park_record(record)
    with redis.Redis.from_url(redis_url) as raw:
        assert raw.llen(upstash_broker.keys.history_pending) == 1  # ran once, not twice


def test_a_lost_dead_letter_reply_is_reported_not_repeated(
    upstash: UpstashServer, upstash_broker: Broker
) -> None:
    task = make_task()
    enqueue(upstash_broker, task)
    claimed = upstash_broker.claim_nowait()
    assert claimed is not None
    assert not upstash_broker.dead_letter(make_task(), "warm")  # the server knows the script
    upstash.lose_replies(1, "EVALSHA")
    with pytest.raises(QueueUnavailable, match="not repeated"):
        upstash_broker.dead_letter(claimed, "boom")
    assert len(upstash_broker.dead()) == 1 and upstash_broker.processing() == []


def test_an_enqueue_repeated_after_a_lost_reply_queues_one_job(
    upstash: UpstashServer, upstash_broker: Broker
) -> None:
    upstash_broker.enqueue(make_task("github.com/o/warm"), cap=10, dedupe_key="warm")
    task = make_task()
    upstash.lose_replies(1, "EVALSHA")
    result = upstash_broker.enqueue(task, cap=10, dedupe_key=task.repo_url)
    assert result.task.job_id == task.job_id and not result.created
    assert [t.job_id for t in upstash_broker.queued()].count(task.job_id) == 1


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts and reads, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_every_call_has_a_deadline(silent_server: str) -> None:
    with Broker(UpstashBackend(silent_server, "t", timeout_s=0.3), Keys("x:")) as b:
        started = time.perf_counter()
        assert not b.ping()  # idempotent: tried twice, 0.3 s each
        with pytest.raises(QueueUnavailable):
            b.claim_nowait()
        with pytest.raises(QueueUnavailable, match="not repeated"):
            b.dead_letter(make_task(), "x")
        assert time.perf_counter() - started < 3.0


def test_refused_credentials_name_the_setting_not_the_value(upstash: UpstashServer) -> None:
    wrong = "wrong-token-" + uuid.uuid4().hex
    with Broker(UpstashBackend(upstash.url, wrong), Keys("x:")) as b:
        with pytest.raises(QueueError, match="UPSTASH_REDIS_REST_TOKEN") as caught:
            b.queue_size()
        assert wrong not in str(caught.value)
        assert not b.ping()


def test_an_unreachable_server_is_queue_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = UpstashBackend(f"http://127.0.0.1:{port}", "t")
    with Broker(backend, Keys("x:")) as b, pytest.raises(QueueUnavailable, match="unreachable"):
        b.queue_size()


def test_idle_polling_backs_off_and_a_task_resets_it(
    upstash: UpstashServer, upstash_broker: Broker
) -> None:
    before = upstash.snapshot()
    started = time.perf_counter()
    assert upstash_broker.claim(3.0) is None
    assert time.perf_counter() - started >= 2.9
    polls = sum((upstash.snapshot() - before).values())
    # 0, 0.25, 0.75, 1.75, 2.75 s (ceiling 1 s): five polls, not the sixty of a 50 ms loop.
    assert 4 <= polls <= 6, polls
    assert upstash_broker.idle_pause_s == 1.0
    task = make_task()
    enqueue(upstash_broker, task)
    assert upstash_broker.claim(2.0) == task
    assert upstash_broker.idle_pause_s == 0.25


def test_settings_choose_upstash_over_redis_in_every_mode(upstash: UpstashServer) -> None:
    for mode in ("local", "cloud", "edge"):
        settings = Settings(
            mode=mode,
            redis_url="redis://127.0.0.1:1",  # unreachable: must not be the one used
            upstash_redis_rest_url=upstash.url,
            upstash_redis_rest_token=UPSTASH_TOKEN,
        )
        with Broker.from_settings(settings) as b:
            assert b.budgeted and b.ping()
    with pytest.raises(ConfigError, match="UPSTASH_REDIS_REST_URL"):
        Broker.from_settings(Settings())


def test_the_test_server_speaks_upstash_protocol_to_the_official_sdk(
    upstash: UpstashServer, redis_prefix: str
) -> None:
    sdk = UpstashSDK(upstash.url, UPSTASH_TOKEN, allow_telemetry=False, rest_retries=0)
    key = f"{redis_prefix}sdk"
    assert sdk.set(key, "ünï") is True
    assert sdk.get(key) == "ünï"
    pipe = sdk.pipeline()
    pipe.rpush(f"{key}:l", "a", "b")
    pipe.lrange(f"{key}:l", 0, -1)
    assert pipe.exec() == [2, ["a", "b"]]
    tx = sdk.multi()
    tx.incr(f"{key}:n")
    tx.incr(f"{key}:n")
    assert tx.exec() == [1, 2]
    sdk.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_whole_job_runs_with_the_planes_talking_only_through_upstash_rest(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    # Its own local Ray in a subprocess: the session's system uses redis:// with the same
    # actor names. The script's settings carry no NEO_REDIS_URL at all.
    script = Path(__file__).with_name("upstash_system.py")
    out = subprocess.run(
        [sys.executable, str(script), redis_url, database_url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    job = report["job"]
    assert (report["state"], job["status"]) == ("complete", "complete")
    assert job["files_processed"] == job["embeddings_generated"] > 10
    assert job["job_id"] in report["history_ids"]
    # Control plane (enqueue) and edge (claim, state, ack, history) all went over REST.
    assert report["job_commands"] > 5 and report["job_by_command"].get("EVALSHA", 0) >= 3
    print(f"REST commands: deploy {report['deploy_commands']}, job {report['job_commands']}")
