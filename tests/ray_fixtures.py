"""Session-scoped Ray and the whole neo-ray system on it, for the tests of the Ray application."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from pydantic import SecretStr
from ray import serve

from neo_ray import system
from neo_ray.config import Settings
from neo_ray.pipeline.sample import write_sample_repo
from neo_ray.procs import free_port

TOKEN = "test-token-" + uuid.uuid4().hex


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; return its value, or fail the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def expected_device() -> str:
    """The device a worker trains on here: CUDA where torch sees one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray per test session; it declares one GPU so that placement is exercised
    (Ray accepts `num_gpus=1` on a machine without one; torch then finds only the CPU)."""
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        resources={"edge": 1},
        namespace="neo",
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    serve.shutdown()
    ray.shutdown()


@dataclass
class System:
    settings: Settings
    base: str
    repos: Path

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30.0)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def bridge(self) -> Any:
        return ray.get_actor("bridge", namespace="neo")

    def worker_name(self) -> str:
        """The name of the one GraphWorker the session's one-node cluster runs."""
        (name,) = ray.get(self.bridge().stats.remote())["workers"]
        return str(name)

    def sample_repo(self, name: str) -> Path:
        return write_sample_repo(self.repos / name)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.http() as http:
            return dict(http.get(f"/api/v1/ingestion/jobs/{job_id}").json())

    def wait_job(self, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job.get("status") in ("complete", "failed", "skipped") else None

        return dict(wait_for(finished, timeout_s, every_s=0.1))


@pytest.fixture(scope="session")
def neo_system(
    ray_session: None, redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """The local-mode system: StoreKeeper, HistoryActor, QueueBridge, a worker, the Serve app."""
    data = tmp_path_factory.mktemp("neo-data")
    settings = Settings(
        data_dir=data,
        redis_url=redis_url,
        redis_prefix=f"sys-{uuid.uuid4().hex[:8]}:",
        database_url=database_url,
        admin_token=SecretStr(TOKEN),
        allow_local_repos=True,
        local_repos_root=tmp_path_factory.getbasetemp(),
        http_port=free_port(),
        max_queue_size=3,
        heartbeat_interval_s=0.5,
        heartbeat_ttl_s=3,
        epochs=3,
    )
    system.deploy(settings)
    base = system.api_base(settings)
    system.wait_healthy(base, timeout_s=120)
    sys_ = System(settings, base, tmp_path_factory.mktemp("repos"))
    wait_for(lambda: ray.get(sys_.bridge().stats.remote())["workers"], 60)
    with sys_.http() as http:
        wait_for(lambda: http.get("/api/v1/ingestion/worker/status").json()["workers"], 120)
    yield sys_
    system.teardown()
