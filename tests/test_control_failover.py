"""The Serve control plane when its processes die for real, and /health beside a long upload.

Each fault is a SIGKILL (or SIGSTOP) of the real process: a replica of the session's control
app, the HTTP proxy. Pollers hammer a route throughout and every answer is checked: a 200, or
a 503 with Retry-After, never a hang past the client's bound. How fast HTTP comes back is
measured in bench/bench_failover.py (BENCHMARKS.md), not asserted here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from ray import serve
from ray_fixtures import System, wait_for

from neo_ray import names, system
from neo_ray.control import shed
from neo_ray.models import Language, RepoGraph, SourceFile
from neo_ray.procs import free_port

pytestmark = pytest.mark.ray

ROUTE = "/api/v1/ingestion/worker/status"
# A client waits this long at most: past it, a request hung (the proxy's deadline + margin).
BOUND_S = shed.DEFAULT_DEADLINE_S + 15


def serve_actors(prefix: str) -> list[str]:
    """Names of Serve's live actors whose name starts with `prefix` (no dashboard needed)."""
    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in found if a["name"].startswith(prefix))


def actor_pid(name: str) -> int:
    actor = ray.get_actor(name, namespace="serve")
    return int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=60))


def replicas() -> list[str]:
    return serve_actors(f"SERVE_REPLICA::{names.SERVE_APP}#control#")


def running_replicas() -> int:
    app = serve.status().applications.get(names.SERVE_APP)
    if app is None:
        return 0
    return int(app.deployments["control"].replica_states.get("RUNNING", 0))


@dataclass
class Pollers:
    """Threads that GET `ROUTE` until stopped; every outcome is kept."""

    base: str
    answers: list[tuple[float, int | str, str | None]] = field(default_factory=list)
    ok_at: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered) of 200s
    stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        with httpx.Client(base_url=self.base, timeout=BOUND_S) as http:
            while not self.stop.is_set():
                at = time.monotonic()
                try:
                    reply = http.get(ROUTE)
                    self.answers.append((at, reply.status_code, reply.headers.get("retry-after")))
                    if reply.status_code == 200:
                        self.ok_at.append((at, time.monotonic()))
                except httpx.HTTPError as exc:
                    self.answers.append((at, type(exc).__name__, None))
                time.sleep(0.05)

    def back_after_gap(self, moment: float) -> bool:
        """Whether, after `moment`, a request failed and a later-sent one got a 200."""
        after = sorted((at, code) for at, code, _ in self.answers if at >= moment)
        failed = next((at for at, code in after if code != 200), None)
        return failed is not None and any(at > failed and code == 200 for at, code in after)

    def after(self, moment: float) -> list[tuple[int | str, str | None]]:
        return [(code, retry) for at, code, retry in self.answers if at >= moment]


@contextmanager
def polling(base: str, threads: int = 4) -> Iterator[Pollers]:
    pollers = Pollers(base)
    workers = [threading.Thread(target=pollers.poll, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: pollers.answers, 60)
        yield pollers
    finally:
        pollers.stop.set()
        for worker in workers:
            worker.join(BOUND_S + 5)


def answered(outcomes: list[tuple[int | str, str | None]]) -> list[tuple[int | str, str | None]]:
    """The outcomes that break the promise: neither a 200 nor a 503 with Retry-After."""
    return [(c, r) for c, r in outcomes if not (c == 200 or (c == 503 and r is not None))]


def test_neo_ray_starts_serve_with_two_replicas_and_a_fast_proxy_check(neo_system: System) -> None:
    assert len(replicas()) == neo_system.settings.control_replicas == 2
    controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    env = ray.get(controller.__ray_call__.remote(lambda _: dict(os.environ)), timeout=60)
    for name, value in system.serve_controller_env(neo_system.settings).items():
        assert env.get(name) == value


def test_a_killed_replica_leaves_the_other_answering(neo_system: System) -> None:
    before = replicas()
    assert len(before) == 2
    with polling(neo_system.base) as pollers:
        killed_at = time.monotonic()
        os.kill(actor_pid(before[0]), signal.SIGKILL)
        # Serve starts a new replica in its place; poll until it runs beside the survivor.
        wait_for(lambda: set(replicas()) - set(before), 120, 0.05)
        replacing_at = time.monotonic()
        wait_for(lambda: running_replicas() == 2, 120, 0.2)
    during = pollers.after(killed_at)
    assert during, "no request was sent while the replica was down"
    assert answered(during) == [], during
    # The survivor answered before Serve had even begun the replacement: with one replica,
    # every request would have waited for the new one to start.
    assert any(sent > killed_at and done < replacing_at for sent, done in pollers.ok_at)


def test_a_killed_proxy_is_answered_503_until_it_is_replaced(neo_system: System) -> None:
    """While Serve replaces its proxy, neo-ray's front keeps the port: a 503 with
    Retry-After, never a refused connection or a request cut without an answer."""
    (proxy,) = serve_actors("SERVE_PROXY_ACTOR")
    old = actor_pid(proxy)
    with polling(neo_system.base) as pollers:
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: pollers.back_after_gap(killed_at), 120, 0.2)
    during = pollers.after(killed_at)
    assert answered(during) == [], during
    assert any(code == 503 for code, _ in during), "the proxy's absence was never seen"


def test_the_front_is_restarted_when_it_dies(neo_system: System) -> None:
    pid = int(ray.get(front().__ray_call__.remote(lambda _: os.getpid()), timeout=60))
    os.kill(pid, signal.SIGKILL)
    with httpx.Client(base_url=neo_system.base, timeout=BOUND_S) as http:

        def answers() -> bool:
            try:
                return http.get(ROUTE).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 120, 0.2)
    assert int(ray.get(front().__ray_call__.remote(lambda _: os.getpid()), timeout=60)) != pid


def test_a_front_relaying_elsewhere_is_replaced_on_deploy(neo_system: System) -> None:
    """A deploy that finds a front relaying to another port (Serve moved) replaces it."""
    proxy = ray.get(front().ping.remote(), timeout=60)["upstream"]
    elsewhere = ("127.0.0.1", free_port())
    try:
        system._start_front(neo_system.settings, elsewhere)
        assert ray.get(front().ping.remote(), timeout=60)["upstream"] == list(elsewhere)
        reply = httpx.get(f"{neo_system.base}{ROUTE}", timeout=BOUND_S)
        assert reply.status_code == 503 and reply.headers["retry-after"]  # nothing there
    finally:
        system._start_front(neo_system.settings, tuple(proxy))
    assert ray.get(front().ping.remote(), timeout=60)["upstream"] == proxy
    assert httpx.get(f"{neo_system.base}{ROUTE}", timeout=BOUND_S).status_code == 200


def front() -> ray.actor.ActorHandle:
    return ray.get_actor(names.FRONT, namespace=names.NAMESPACE)


def test_no_replica_answering_is_a_503_with_retry_after(neo_system: System) -> None:
    """Both replicas stopped (SIGSTOP): the proxy's deadline answers 503, then all resumes."""
    wait_for(lambda: running_replicas() == 2 and len(replicas()) == 2, 120, 0.2)
    pids = [actor_pid(name) for name in replicas()]
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        reply = httpx.get(f"{neo_system.base}{ROUTE}", timeout=BOUND_S)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == str(shed.RETRY_AFTER_S)
    assert "retry" in reply.json()["detail"]
    with httpx.Client(base_url=neo_system.base, timeout=BOUND_S) as http:
        wait_for(lambda: http.get(ROUTE).status_code == 200, 120, 0.2)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Slow:
    """A route that takes seconds, so that its replica can be killed while it answers."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def __call__(self, _: object) -> str:
        with open(self.marker, "w") as f:  # the request has reached the replica
            f.write("in")
        await asyncio.sleep(30)
        return "late"


def test_a_replica_killed_mid_request_is_a_503_with_retry_after(
    neo_system: System, tmp_path: Path
) -> None:
    marker = tmp_path / "in-flight"
    serve.run(Slow.bind(str(marker)), name="slow", route_prefix="/slow")
    try:
        (name,) = serve_actors("SERVE_REPLICA::slow#")
        pid = actor_pid(name)
        replies: list[httpx.Response] = []
        call = threading.Thread(
            target=lambda: replies.append(httpx.get(f"{neo_system.base}/slow", timeout=BOUND_S))
        )
        call.start()
        wait_for(marker.exists, 60)
        os.kill(pid, signal.SIGKILL)
        call.join(BOUND_S + 5)
    finally:
        serve.delete("slow")
    (reply,) = replies
    assert reply.status_code == 503, reply.text  # Serve's proxy alone would end it as a 500
    assert reply.headers["retry-after"] == str(shed.RETRY_AFTER_S)
    assert "stopped" in reply.json()["detail"]


def test_health_stays_up_while_a_large_upload_holds_the_store(neo_system: System) -> None:
    """/health pings the StoreKeeper beside its writes: a long upload is not a store down."""
    keeper = ray.get_actor(names.STORE, namespace=names.NAMESPACE)
    count = 40_000
    repo = "https://github.com/health-probe/large-upload"
    paths = [f"pkg/m{i}.py" for i in range(count)]
    graph = RepoGraph(
        repo=repo, commit="c", nodes=tuple(SourceFile(p, Language.PYTHON) for p in paths), edges=()
    )
    dim = neo_system.settings.dim
    vectors = np.random.default_rng(0).normal(size=(count, dim)).astype(np.float32)
    tokens = {p: (f"t{i % 50}", f"u{i % 977}") for i, p in enumerate(paths)}
    seen: list[tuple[int, dict[str, str]]] = []
    with httpx.Client(base_url=neo_system.base, timeout=60) as http:
        wait_for(lambda: http.get("/health").status_code == 200, 120, 0.2)
    upload = keeper.replace_repo.remote(graph, vectors, repo, None, tokens)
    try:
        with httpx.Client(base_url=neo_system.base, timeout=60) as http:
            while not ray.wait([upload], timeout=0)[0]:
                reply = http.get("/health")
                seen.append((reply.status_code, reply.json()["services"]))
                time.sleep(0.1)
        assert ray.get(upload) == count
    finally:
        ray.get(keeper.delete_repo.remote(repo), timeout=300)
    assert seen, "the upload ended before /health was asked"
    assert [s for s in seen if s != (200, s[1]) or s[1]["qdrant"] != "up"] == []
