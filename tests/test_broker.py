"""The Redis broker against a real redis-server: queue order, the atomic cap, dedupe, hand-off.

Every test taking `broker` runs twice: over redis-py, and over Upstash REST (the test server
in front of the same redis-server).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from neo_ray.errors import QueueFull, QueueUnavailable
from neo_ray.models import JobRecord, JobStatus, Task, WorkerHeartbeat, failed_record, utcnow_iso
from neo_ray.stores import embedded as services
from neo_ray.stores.keys import Keys
from neo_ray.stores.queue import Broker, RedisBackend

pytest_plugins = ["services_fixtures"]


@pytest.fixture(params=["redis", "upstash"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """The broker over each backend (the fixtures of services_fixtures.py)."""
    name = "broker" if request.param == "redis" else "upstash_broker"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def make_task(repo: str = "github.com/o/r", ref: str | None = None, **kw: object) -> Task:
    fields: dict[str, object] = {
        "job_id": str(uuid.uuid4()),
        "repo_url": repo,
        "ref": ref,
        "submitted_at": utcnow_iso(),
        "ttl_seconds": 3600,
        **kw,
    }
    return Task.model_validate(fields)


def record_for(task: Task, status: JobStatus = JobStatus.COMPLETE) -> JobRecord:
    return JobRecord(
        repo_url=task.repo_url,
        status=status,
        duration_seconds=1.0,
        timestamp=utcnow_iso(),
        job_id=task.job_id,
    )


def enqueue(broker: Broker, task: Task, cap: int = 10) -> object:
    return broker.enqueue(task, cap=cap, dedupe_key=f"{task.repo_url}#{task.ref or ''}")


def test_keys_default_to_the_seed_names_and_carry_the_prefix() -> None:
    seed = Keys()
    assert (seed.queue, seed.history) == ("ingest_queue", "job_history")
    assert (seed.processing, seed.dead, seed.job("j"), seed.worker("w")) == (
        "ingest_processing",
        "ingest_dead",
        "job:j",
        "worker:w",
    )
    keys = Keys("neo:")
    named = [keys.queue, keys.processing, keys.dead, keys.history, keys.history_pending]
    named += [keys.metadata_pending]
    named += [keys.dedupe, keys.job("j"), keys.worker("w")]
    assert all(name.startswith("neo:") for name in named)
    assert len(set(named)) == len(named)
    assert Keys("a*:").workers_pattern == "a\\*:worker:*"


def test_fifo_positions_and_claim_order(broker: Broker) -> None:
    tasks = [make_task(f"github.com/o/r{i}") for i in range(3)]
    results = [broker.enqueue(t, cap=10, dedupe_key=t.repo_url) for t in tasks]
    assert [(r.created, r.queue_position, r.queue_size) for r in results] == [
        (True, 1, 1),
        (True, 2, 2),
        (True, 3, 3),
    ]
    assert [t.job_id for t in broker.queued()] == [t.job_id for t in tasks]
    claimed = [broker.claim_nowait() for _ in range(4)]
    assert [c.job_id if c else None for c in claimed] == [t.job_id for t in tasks] + [None]
    assert {t.job_id for t in broker.processing()} == {t.job_id for t in tasks}
    assert broker.queue_size() == 0


def test_enqueue_writes_the_job_hash(broker: Broker) -> None:
    task = make_task(ref="v1")
    enqueue(broker, task)
    job = broker.get_job(task.job_id)
    assert job is not None
    assert job["state"] == "queued" and job["stage"] == "queued"
    assert job["progress"] == 0.0 and job["attempts"] == 0
    assert (job["repo_url"], job["ref"], job["submitted_at"]) == (
        task.repo_url,
        "v1",
        task.submitted_at,
    )
    assert Task.model_validate(job["task"]) == task
    assert broker.get_job("no-such-job") is None


def test_cap_is_enforced_atomically_under_concurrency(broker: Broker) -> None:
    start = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        task = make_task(f"github.com/o/r{i}")
        start.wait()
        try:
            broker.enqueue(task, cap=10, dedupe_key=task.repo_url, retry_after_s=7)
            outcome = "queued"
        except QueueFull as exc:
            outcome = f"full {exc.size}/{exc.cap} {exc.retry_after_s}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["full 10/10 7"] * 10 + ["queued"] * 10
    assert broker.queue_size() == 10


def test_dedupe_returns_the_live_job_and_a_new_one_after_finish(broker: Broker) -> None:
    other, first = make_task("github.com/o/other"), make_task()
    enqueue(broker, other)
    enqueue(broker, first)

    queued = broker.enqueue(make_task(), cap=10, dedupe_key="github.com/o/r#")
    assert (queued.created, queued.task, queued.queue_position, queued.queue_size) == (
        False,
        first,
        2,  # "other" is nearer the consumer end
        2,
    )
    assert broker.enqueue(make_task(ref="v2"), cap=10, dedupe_key="github.com/o/r#v2").created

    assert broker.claim_nowait() == other
    assert broker.claim_nowait() == first
    broker.set_job_state(first.job_id, state=JobStatus.RUNNING, stage="parsing")
    running = broker.enqueue(make_task(), cap=10, dedupe_key="github.com/o/r#")
    assert (running.created, running.task, running.queue_position) == (False, first, 0)

    record = record_for(first)
    broker.finish_job(first.job_id, record)
    fresh = broker.enqueue(make_task(), cap=10, dedupe_key="github.com/o/r#")
    assert fresh.created and fresh.task.job_id != first.job_id
    done = broker.get_job(first.job_id)
    assert done is not None
    assert (done["state"], done["stage"], done["progress"]) == ("complete", "done", 1.0)
    assert JobRecord.model_validate(done["record"]) == record


def test_a_full_queue_still_answers_a_duplicate(broker: Broker) -> None:
    task = make_task()
    broker.enqueue(task, cap=1, dedupe_key="k")
    with pytest.raises(QueueFull):
        broker.enqueue(make_task("github.com/o/x"), cap=1, dedupe_key="x")
    dup = broker.enqueue(make_task(), cap=1, dedupe_key="k")
    assert (dup.created, dup.task.job_id) == (False, task.job_id)


def test_finished_job_hash_expires_later(broker: Broker, redis_url: str) -> None:
    task = make_task()
    enqueue(broker, task)
    broker.finish_job(task.job_id, record_for(task, JobStatus.FAILED))
    with redis.Redis.from_url(redis_url) as raw:
        ttl = raw.ttl(broker.keys.job(task.job_id))
        assert raw.hlen(broker.keys.dedupe) == 0
    assert 6 * 24 * 3600 < ttl <= 7 * 24 * 3600
    job = broker.get_job(task.job_id)
    assert job is not None and job["state"] == "failed"


def test_claim_blocks_and_takes_a_task_pushed_by_another_thread(
    redis_url: str, redis_prefix: str
) -> None:
    # redis-py only: BLMOVE (Upstash REST has no blocking pops; it polls, tested below).
    # The hand-off's latency is measured in bench/bench_latency.py, not asserted here.
    with Broker.connect(redis_url, prefix=redis_prefix) as broker:
        _claim_blocks(broker)


def _claim_blocks(broker: Broker) -> None:
    got: list[Task | None] = []
    consumer = threading.Thread(target=lambda: got.append(broker.claim(30.0)))
    consumer.start()
    time.sleep(0.3)  # the consumer is now blocked in BLMOVE
    task = make_task()
    enqueue(broker, task)
    consumer.join(30.0)
    assert got == [task]
    assert [t.job_id for t in broker.processing()] == [task.job_id]


def test_claim_times_out_with_none_even_past_the_socket_timeout(redis_url: str) -> None:
    # A blocking pop longer than socket_timeout must not read as a dead server.
    with Broker.connect(redis_url, prefix=f"t{uuid.uuid4().hex}:", socket_timeout=0.2) as b:
        started = time.perf_counter()
        assert b.claim(0.5) is None
        elapsed = time.perf_counter() - started
        assert elapsed > 0.45  # it waited; how closely it keeps time is not asserted here
        assert b.ping()  # the connection pool is still sound


class _NonBlocking(RedisBackend):
    """Real Redis, seen through a backend without blocking pops (as Upstash REST is)."""

    blocking = False


def test_claim_polls_on_a_backend_without_blocking_pops(redis_url: str) -> None:
    backend = _NonBlocking.from_url(redis_url)
    with Broker(backend, Keys(f"t{uuid.uuid4().hex}:")) as b:
        started = time.perf_counter()
        assert b.claim(0.3) is None
        assert time.perf_counter() - started > 0.25
        task = make_task()
        threading.Timer(0.2, lambda: enqueue(b, task)).start()
        assert b.claim(3.0) == task


def test_requeue_increments_attempts_and_runs_next(broker: Broker) -> None:
    first, second = make_task("github.com/o/a"), make_task("github.com/o/b")
    enqueue(broker, first)
    enqueue(broker, second)
    claimed = broker.claim_nowait()
    assert claimed == first
    broker.set_job_state(first.job_id, state="running", worker_id="w1")
    again = broker.requeue(claimed)
    assert again.attempts == 1 and again.job_id == first.job_id
    assert broker.processing() == []
    assert broker.queued() == [again, second]
    job = broker.get_job(first.job_id)
    assert job is not None
    assert (job["state"], job["attempts"], "worker_id" in job) == ("queued", 1, False)
    assert broker.claim_nowait() == again
    # Not in processing any more (someone handled it): nothing is pushed twice.
    broker.ack(again)
    assert broker.requeue(again) == again
    assert broker.queued() == [second]


def test_ack_removes_the_task_from_processing(broker: Broker) -> None:
    task = make_task()
    enqueue(broker, task)
    claimed = broker.claim_nowait()
    assert claimed is not None and broker.processing() == [task]
    broker.ack(claimed)
    assert broker.processing() == []


def test_dead_letter_moves_the_task_with_its_error(broker: Broker) -> None:
    task = make_task()
    enqueue(broker, task)
    claimed = broker.claim_nowait()
    assert claimed is not None
    broker.dead_letter(claimed, "CloneError: gone")
    assert broker.processing() == []
    dead = broker.dead()
    assert len(dead) == 1
    assert (Task.model_validate(dead[0]["task"]), dead[0]["error"]) == (task, "CloneError: gone")
    assert dead[0]["failed_at"].endswith("Z")


def test_dead_letter_with_its_record_is_one_step_and_frees_the_repository(
    broker: Broker,
) -> None:
    """Dead letter, final state, freed dedupe key and history entry land together: a later
    submission of the same repository runs instead of returning the dead job."""
    task = make_task()
    enqueue(broker, task)
    claimed = broker.claim_nowait()
    assert claimed is not None
    record = failed_record(claimed, "boom", 1.5, worker_id=None)
    assert broker.dead_letter(claimed, "boom", record)
    assert [d["error"] for d in broker.dead()] == ["boom"] and broker.processing() == []
    job = broker.get_job(task.job_id)
    assert job is not None and job["state"] == "failed"
    assert broker.history(10)[0] == record
    again = make_task()  # the same repository and ref, submitted anew
    result = enqueue(broker, again)
    assert result.created and result.task.job_id == again.job_id  # type: ignore[attr-defined]
    # A second dead letter of the finished job changes nothing.
    assert not broker.dead_letter(claimed, "boom", record)
    assert len(broker.dead()) == 1 and len(broker.history(10)) == 1


def test_a_malformed_task_is_dead_lettered_not_handed_out(broker: Broker, redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as raw:
        raw.lpush(broker.keys.queue, "{not json")
    assert broker.claim(0.5) is None
    assert broker.processing() == []
    assert broker.dead()[0]["task"] == "{not json"


def test_job_state_fields_round_trip(broker: Broker) -> None:
    broker.set_job_state("j1", state=JobStatus.RUNNING, stage="training", progress=0.25)
    broker.set_job_state("j1", worker_id="w1", started_at="2026-01-01T00:00:00Z", message="k/E")
    broker.set_job_state("j1", progress=0.5, message=None)
    job = broker.get_job("j1")
    assert job is not None
    assert {k: job[k] for k in ("job_id", "state", "stage", "progress", "worker_id")} == {
        "job_id": "j1",
        "state": "running",
        "stage": "training",
        "progress": 0.5,
        "worker_id": "w1",
    }
    assert "message" not in job and job["updated_at"].endswith("Z")


def test_heartbeats_expire_after_their_ttl(broker: Broker) -> None:
    def beat(worker_id: str) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            worker_id=worker_id, node="n", device="cpu", state="Idle", heartbeat_at=utcnow_iso()
        )

    broker.heartbeat(beat("w-short"), ttl_s=1)
    broker.heartbeat(beat("w-long"), ttl_s=60)
    assert [w.worker_id for w in broker.workers()] == ["w-long", "w-short"]
    deadline = time.monotonic() + 3.0
    while len(broker.workers()) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [w.worker_id for w in broker.workers()] == ["w-long"]


def test_history_is_newest_first_and_trimmed(broker: Broker) -> None:
    tasks = [make_task(f"github.com/o/r{i}") for i in range(5)]
    for task in tasks:
        broker.push_history(record_for(task), keep=3)
    assert [r.job_id for r in broker.history(10)] == [t.job_id for t in reversed(tasks[2:])]
    assert [r.job_id for r in broker.history(2)] == [tasks[4].job_id, tasks[3].job_id]
    assert broker.history(0) == []


def test_queue_unavailable_when_redis_is_down(throwaway_redis: tuple[Path, str]) -> None:
    root, url = throwaway_redis
    with Broker.connect(url, socket_timeout=1.0) as b:
        assert b.ping()
        assert services.stop_all(root) == ["redis"]
        assert not b.ping()
        with pytest.raises(QueueUnavailable):
            enqueue(b, make_task())
        with pytest.raises(QueueUnavailable):
            b.claim(0.2)
        with pytest.raises(QueueUnavailable):
            b.queue_size()


def test_a_finished_job_is_never_queued_again(broker: Broker) -> None:
    # A worker that dies between writing history and acknowledging leaves a finished job in
    # ingest_processing: the bridge's requeue or dead-letter must only clear it.
    for finish in (broker.requeue, lambda t: broker.dead_letter(t, "worker died")):
        task = make_task(repo=f"github.com/o/{uuid.uuid4().hex[:6]}")
        enqueue(broker, task)
        claimed = broker.claim_nowait()
        assert claimed is not None
        broker.finish_job(claimed.job_id, record_for(claimed))
        result = finish(claimed)
        assert result in (claimed, False)
        assert broker.processing() == [] and broker.queue_size() == 0
        assert broker.dead() == []
        assert broker.get_job(claimed.job_id)["state"] == "complete"


def test_history_keeps_a_retried_record_once(broker: Broker) -> None:
    record = record_for(make_task())
    broker.push_history(record)
    broker.push_history(record)
    assert broker.history(10) == [record]


def test_status_reads_workers_queue_and_processing_in_one_call(broker: Broker) -> None:
    for i in range(3):
        enqueue(broker, make_task(f"github.com/o/s{i}"))
    assert broker.claim_nowait() is not None
    for worker_id in ("w-b", "w-a"):
        broker.heartbeat(
            WorkerHeartbeat(
                worker_id=worker_id,
                node="n",
                device="cpu",
                state="Idle",
                heartbeat_at=utcnow_iso(),
            ),
            ttl_s=60,
        )
    status = broker.status()
    assert [w.worker_id for w in status.workers] == ["w-a", "w-b"]
    assert (status.queue_size, status.processing) == (2, 1)


def test_a_job_ends_once_a_second_record_is_refused_the_same_one_accepted(broker: Broker) -> None:
    task = make_task()
    enqueue(broker, task)
    first = record_for(task)
    assert broker.finish_job(task.job_id, first)
    assert broker.finish_job(task.job_id, first)  # a retried call: same record, accepted
    second = first.model_copy(update={"worker_id": "worker-other", "duration_seconds": 2.0})
    assert not broker.finish_job(task.job_id, second)  # the job ran twice: it ends once
    job = broker.get_job(task.job_id)
    assert job is not None and job.record == first


def test_an_edge_cluster_announces_itself_and_lapses(broker: Broker) -> None:
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    assert not broker.cluster_alive(cluster)
    broker.announce_cluster(cluster, ttl_s=1)
    assert broker.cluster_alive(cluster)
    time.sleep(1.2)
    assert not broker.cluster_alive(cluster)
    # A cluster going down withdraws its liveness at once (its claims are free then).
    broker.announce_cluster(cluster, ttl_s=60)
    broker.forget_cluster(cluster)
    assert not broker.cluster_alive(cluster)


def test_parked_metadata_one_per_repository_dropped_only_by_its_job(broker: Broker) -> None:
    a, b = "https://github.com/o/a", "https://github.com/o/b"
    assert broker.parked_metadata_repos() == [] and broker.parked_metadata(a) is None
    broker.park_metadata(a, "j1", "z1:first")
    broker.park_metadata(b, "j2", "z1:other")
    assert broker.parked_metadata_repos() == [a, b]
    assert broker.parked_metadata(a) == ("j1", "z1:first")
    # A later job of the same repository replaces the earlier job's metadata ...
    broker.park_metadata(a, "j3", "z1:newer")
    assert broker.parked_metadata_count() == 2
    # ... which a writer that read the earlier one then cannot drop.
    assert not broker.unpark_metadata(a, "j1")
    assert broker.parked_metadata(a) == ("j3", "z1:newer")
    assert broker.unpark_metadata(a, "j3")
    assert broker.parked_metadata_repos() == [b]
    assert not broker.unpark_metadata(a, "j3")  # again: nothing to drop, nothing dropped


def test_two_refs_of_one_repository_run_one_at_a_time(broker: Broker) -> None:
    """Two refs of one repository are one corpus: the second waits, in its place, until the
    first ends; another repository's task behind it is not held up."""
    main, dev = make_task(ref="main"), make_task(ref="dev")
    other = make_task("github.com/o/other")
    for task in (main, dev, other):
        enqueue(broker, task)
    assert broker.claim_nowait() == main
    assert broker.claim_nowait() == other  # dev waits; the other repository goes past it
    assert broker.claim_nowait() is None
    assert broker.queued() == [dev]
    broker.set_job_state(main.job_id, state=JobStatus.RUNNING)
    assert broker.claim_nowait() is None  # still running
    # Ended (its record written) while its worker has not acknowledged it yet: the
    # repository is free already.
    assert broker.finish_job(main.job_id, record_for(main))
    assert broker.claim_nowait() == dev
    assert broker.queued() == []
    assert {t.job_id for t in broker.processing()} == {main.job_id, dev.job_id, other.job_id}


def test_a_blocking_claim_waits_while_the_repository_is_busy(
    redis_url: str, redis_prefix: str
) -> None:
    # redis-py only: the claim blocks on the server; the queue is not empty, yet nothing in
    # it may run.
    with Broker.connect(redis_url, prefix=redis_prefix) as b:
        main, dev = make_task(ref="main"), make_task(ref="dev")
        enqueue(b, main)
        enqueue(b, dev)
        assert b.claim(1.0) == main
        assert b.claim(0.3) is None
        assert b.queued() == [dev]
        b.finish_job(main.job_id, record_for(main))
        b.ack(main)
        assert b.claim(1.0) == dev


def test_a_copy_of_an_ended_job_is_dropped_not_handed_out(broker: Broker) -> None:
    """A requeue that raced the job's finish leaves a copy in the queue: the claim drops it
    and hands out the next task; a running (adoptable) task in processing stays."""
    running, raced, after = (make_task(f"github.com/o/{n}") for n in ("run", "raced", "after"))
    enqueue(broker, running)
    enqueue(broker, raced)
    assert broker.claim_nowait() == running
    broker.set_job_state(running.job_id, state=JobStatus.RUNNING, worker_id="w1")
    claimed = broker.claim_nowait()
    assert claimed == raced
    broker.set_job_state(raced.job_id, state=JobStatus.RUNNING, worker_id="w2")
    requeued = broker.requeue(claimed)  # the bridge gave w2 up ...
    assert broker.finish_job(raced.job_id, record_for(raced))  # ... and w2 finished after all
    assert broker.queued() == [requeued]
    enqueue(broker, after)
    assert broker.claim_nowait() == after
    assert broker.queued() == [] and broker.claim_nowait() is None
    assert [t.job_id for t in broker.processing()] == [after.job_id, running.job_id]
    job = broker.get_job(raced.job_id)
    assert job is not None and job.state == JobStatus.COMPLETE


class _Recording:
    """A real backend that notes each call it carries (the command, or the script's name)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.blocking = inner.blocking

    def execute(self, *args: Any) -> Any:
        self.calls.append(str(args[0]).upper())
        return self.inner.execute(*args)

    def run_script(self, script: Any, keys: Any, args: Any) -> Any:
        self.calls.append(f"script:{script.name}")
        return self.inner.run_script(script, keys, args)

    def blocking_wait(self, key: str, timeout_s: float) -> bool:
        self.calls.append("BLMOVE")
        return bool(self.inner.blocking_wait(key, timeout_s))

    def close(self) -> None:
        self.inner.close()


def test_a_job_ends_with_its_history_entry_in_one_call(broker: Broker) -> None:
    """The final state and the history entry are one script call: no crash can fall between
    them (over redis-py and Upstash REST alike)."""
    task = make_task()
    enqueue(broker, task)
    recording = _Recording(broker._backend)
    b = Broker(recording, broker.keys)  # type: ignore[arg-type]
    record = record_for(task)
    assert b.finish_job(task.job_id, record, keep_history=2)
    assert recording.calls == ["script:finish"]
    job = b.get_job(task.job_id)
    assert job is not None and (job.state, job.record) == (JobStatus.COMPLETE, record)
    assert b.history(10) == [record]
    assert b.finish_job(task.job_id, record)  # a retried call: accepted, kept once
    assert b.history(10) == [record]
    second = record.model_copy(update={"worker_id": "worker-other"})
    assert not b.finish_job(task.job_id, second)  # the job ran twice: it ends once
    assert b.history(10) == [record]
    for _ in range(3):  # trimmed to keep_history
        other = make_task(f"github.com/o/{uuid.uuid4().hex[:6]}")
        b.finish_job(other.job_id, record_for(other), keep_history=2)
    assert len(b.history(10)) == 2


def test_a_claim_is_aged_from_when_it_was_made_not_from_enqueue(
    broker: Broker, redis_url: str
) -> None:
    """Two edge clusters share one Redis: a task queued long ago and just claimed by one is
    not the other's to reclaim, stamped with its owner or not."""
    from neo_ray.edge.bridge import answers_for

    long_ago = "2020-01-01T00:00:00Z"
    other_cluster = Broker.connect(redis_url, prefix=broker.keys.prefix)
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    broker.announce_cluster(a, ttl_s=60)
    with other_cluster, redis.Redis.from_url(redis_url) as raw:
        owned, unowned = make_task("github.com/o/owned"), make_task("github.com/o/unowned")
        for task in (owned, unowned):
            enqueue(broker, task)
            raw.hset(broker.keys.job(task.job_id), "updated_at", long_ago)  # queued long ago
        assert broker.claim_nowait(owner=a) == owned
        assert broker.claim_nowait() == unowned
        seen = other_cluster.get_job(owned.job_id)
        assert seen is not None and (seen.cluster_id, seen.claimed_at is not None) == (a, True)
        assert answers_for(seen, a, other_cluster, ttl_s=30)
        assert not answers_for(seen, b, other_cluster, ttl_s=30)
        fresh = other_cluster.get_job(unowned.job_id)
        assert fresh is not None and fresh.cluster_id is None
        assert not answers_for(fresh, b, other_cluster, ttl_s=30)
        # Orphans are still reclaimed: an unowned claim made long ago, and the claim of a
        # cluster that stopped announcing itself.
        raw.hset(broker.keys.job(unowned.job_id), "claimed_at", long_ago)
        orphan = other_cluster.get_job(unowned.job_id)
        assert orphan is not None and answers_for(orphan, b, other_cluster, ttl_s=30)
        raw.delete(broker.keys.cluster(a))
        assert answers_for(seen, b, other_cluster, ttl_s=30)


def test_racing_consumers_never_run_one_repository_twice_at_once(broker: Broker) -> None:
    """Four consumers (edge workers, as far as Redis can tell) race for tasks of two
    repositories at three refs each: every task runs, and no two of one repository overlap."""
    tasks = [make_task(f"github.com/o/{repo}", ref=ref) for ref in "abc" for repo in "xy"]
    for task in tasks:
        enqueue(broker, task)
    running: dict[str, str] = {}
    overlaps: list[tuple[str, str]] = []
    ran: list[str] = []
    lock = threading.Lock()

    give_up = time.monotonic() + 60  # a guard against a wrong claim, not a speed goal

    def consume() -> None:
        while time.monotonic() < give_up:
            with lock:
                if len(ran) == len(tasks):
                    return
            task = broker.claim_nowait()
            if task is None:
                time.sleep(0.01)
                continue
            with lock:
                if task.repo_url in running:
                    overlaps.append((running[task.repo_url], task.job_id))
                running[task.repo_url] = task.job_id
            time.sleep(0.05)  # the job runs
            with lock:
                del running[task.repo_url]
                ran.append(task.job_id)
            broker.finish_job(task.job_id, record_for(task))
            broker.ack(task)

    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for c in consumers:
        c.start()
    for c in consumers:
        c.join(60)
    assert sorted(ran) == sorted(t.job_id for t in tasks)
    assert overlaps == []
    assert broker.queue_size() == 0 and broker.processing() == []
