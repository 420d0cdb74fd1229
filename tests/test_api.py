"""The control plane's routes, typed end to end: a real Redis behind FastAPI's test client."""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from neo_ray.config import Settings
from neo_ray.control import api
from neo_ray.control.schemas import IngestAccepted, LiveJob
from neo_ray.models import (
    JobRecord,
    JobStatus,
    Progress,
    Stage,
    WorkerHeartbeat,
    WorkerState,
    utcnow_iso,
)
from neo_ray.stores.queue import Broker
from neo_ray.timeutil import parse_utc

# Starlette warns that its test client prefers httpx2 (not installed); httpx still drives it.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

TOKEN = "api-test-token-" + uuid.uuid4().hex
INGEST = "/api/v1/ingestion/ingest/"
ERROR_CODES = {"400", "401", "404", "429", "503"}


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    # status_cache_s=0: every request reads Redis (the snapshot cache has tests of its own).
    settings = Settings(
        admin_token=SecretStr(TOKEN), max_queue_size=5, task_ttl_s=600, status_cache_s=0
    )
    checks: dict[str, api.HealthCheck | None] = {
        "redis": broker.ping,
        "database": None,
        "qdrant": None,
    }
    api.configure(api.ControlState(settings, broker, checks))
    try:
        with TestClient(api.create_app()) as http:
            http.headers["Authorization"] = f"Bearer {TOKEN}"
            yield http
    finally:
        api._state = None


def test_openapi_describes_every_answer() -> None:
    schema = api.create_app().openapi()
    seen_errors: set[str] = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)  # invalid input answers 400
            ok = [code for code in responses if code.startswith("2")]
            assert ok, (method, path)
            if path == "/":  # the dashboard page: HTML, its one documented answer
                assert list(responses["200"]["content"]) == ["text/html"], responses
                continue
            for code, answer in responses.items():
                body = answer["content"]["application/json"]["schema"]
                refs = [body] if "$ref" in body else body.get("anyOf", [])
                assert refs and all("$ref" in r for r in refs), (method, path, code, body)
            seen_errors |= set(responses) & ERROR_CODES
    assert seen_errors == ERROR_CODES
    models = schema["components"]["schemas"]
    assert "HTTPValidationError" not in models
    # The live job view lists its fields (not a bare object), stage as the Stage enum.
    assert "stage" in models["LiveJob"]["properties"]
    assert set(models["Stage"]["enum"]) == {s.value for s in Stage}
    ingest = schema["paths"]["/api/v1/ingestion/ingest/{repo_url}"]["post"]["responses"]
    assert {"200", "202", "400", "401", "429", "503"} == set(ingest)


def test_a_job_travels_typed_from_redis_to_the_route(client: TestClient, broker: Broker) -> None:
    url = "github.com/o/r" + uuid.uuid4().hex[:6]
    first = client.post(INGEST + quote(url, safe=""))
    assert first.status_code == 202, first.text
    accepted = IngestAccepted.model_validate(first.json())
    assert accepted.status is JobStatus.QUEUED and accepted.queue_position == 1
    task = broker.queued()[0]
    expires = parse_utc(task.submitted_at) + timedelta(seconds=600)
    assert parse_utc(accepted.expires_at) == expires.replace(microsecond=0)
    again = client.post(INGEST + quote(url, safe=""))
    assert again.status_code == 200 and again.json()["job_id"] == accepted.job_id

    job_url = f"/api/v1/ingestion/jobs/{accepted.job_id}"
    queued = client.get(job_url).json()
    assert (queued["status"], queued["stage"], queued["progress"]) == ("queued", "queued", 0.0)
    assert "worker_id" not in queued and "started_at" not in queued  # absent, not null
    LiveJob.model_validate(queued)

    broker.set_job_state(accepted.job_id, state=JobStatus.RUNNING, worker_id="worker-0")
    broker.report_progress(accepted.job_id, Progress(Stage.PARSING, 3, 10))
    running = client.get(job_url).json()
    assert running["status"] == "running" and running["stage"] == "parsing"
    assert (running["progress"], running["done"], running["total"]) == (0.3, 3, 10)
    assert running["message"] == "parsing 3/10" and running["worker_id"] == "worker-0"
    assert client.post(INGEST + quote(url, safe="")).json()["status"] == "running"

    record = JobRecord(
        repo_url=task.repo_url,
        status=JobStatus.COMPLETE,
        duration_seconds=2.5,
        timestamp=utcnow_iso(),
        job_id=task.job_id,
        stage_seconds={Stage.CLONING.step: 0.5, Stage.TRAINING.step: 1.0},
    )
    broker.finish_job(task.job_id, record)
    final = client.get(job_url).json()
    assert JobRecord.model_validate(final) == record
    assert final["error"] is None and set(final["stage_seconds"]) == {"clone", "train"}


def test_worker_status_shows_enum_states_in_the_seed_words(
    client: TestClient, broker: Broker
) -> None:
    assert client.get("/api/v1/ingestion/worker/status").json()["status"] == "Offline"
    busy = WorkerHeartbeat(
        worker_id="w-busy",
        node="n",
        device="cpu",
        state=WorkerState.BUSY,
        stage=Stage.TRAINING,
        progress=0.5,
        job_id="j",
        repo_url="https://github.com/o/r",
        heartbeat_at=utcnow_iso(),
    )
    failed = busy.model_copy(
        update={"worker_id": "w-err", "state": WorkerState.ERROR, "error": "boom", "stage": None}
    )
    for hb in (busy, failed):
        broker.heartbeat(hb, ttl_s=30)
    body = client.get("/api/v1/ingestion/worker/status").json()
    assert body["status"] == "Training Graph on https://github.com/o/r"
    by_id = {w["worker_id"]: w for w in body["workers"]}
    assert by_id["w-busy"]["state"] == "Training Graph on https://github.com/o/r"
    assert by_id["w-busy"]["stage"] == "training"
    assert by_id["w-err"]["state"] == "Error: boom"
    assert set(by_id["w-err"]) == {
        "worker_id",
        "node",
        "device",
        "state",
        "stage",
        "progress",
        "job_id",
        "repo_url",
        "heartbeat_at",
        "gpu",
    }
    assert by_id["w-err"]["gpu"] is None  # a heartbeat without telemetry (the CPU) says null


def test_errors_and_health_keep_their_shape(client: TestClient) -> None:
    assert client.get("/api/v1/ingestion/jobs/not-a-uuid").status_code == 400
    missing = client.get(f"/api/v1/ingestion/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404 and "no job" in missing.json()["detail"]
    bad_limit = client.get("/api/v1/ingestion/jobs/history", params={"limit": 0})
    assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["detail"]
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "healthy",
        "services": {"redis": "up", "database": "unconfigured", "qdrant": "unconfigured"},
    }
    history = client.get("/api/v1/ingestion/jobs/history").json()
    assert set(history) == {"jobs", "metrics"} and history["metrics"]["success_rate"] == 0.0


def test_a_refused_token_is_logged_with_the_client_and_never_the_token(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    with caplog.at_level(logging.WARNING, logger="neo_ray.control.api"):
        reply = client.post(
            INGEST + "github.com/a/b",
            headers={"Authorization": f"Bearer {wrong}", "X-Forwarded-For": "203.0.113.7"},
        )
        assert reply.status_code == 401
        reply = client.get("/api/v1/repositories", headers={"Authorization": ""})
        assert reply.status_code == 401
    refusals = [r.getMessage() for r in caplog.records if r.name == "neo_ray.control.api"]
    assert len(refusals) == 2, refusals
    # Starlette's test client connects as "testclient"; a proxy's header is named as such.
    assert refusals[0].startswith(f"refused POST {INGEST}github.com/a/b from testclient:")
    assert "forwarded for '203.0.113.7'" in refusals[0] and "wrong bearer token" in refusals[0]
    assert refusals[1].startswith("refused GET /api/v1/repositories from testclient:")
    assert refusals[1].endswith("no bearer token")
    assert all(wrong not in m and TOKEN not in m for m in refusals)
    assert TOKEN not in caplog.text and wrong not in caplog.text


def test_heartbeats_in_the_seed_words_still_read() -> None:
    old = {
        "worker_id": "w",
        "node": "n",
        "device": "cpu",
        "heartbeat_at": utcnow_iso(),
    }
    busy = WorkerHeartbeat.model_validate({**old, "state": "Training Graph on github.com/o/r"})
    assert busy.state is WorkerState.BUSY
    err = WorkerHeartbeat.model_validate({**old, "state": "Error: RepoNotFound: gone"})
    assert (err.state, err.error, err.status) == (
        WorkerState.ERROR,
        "RepoNotFound: gone",
        "Error: RepoNotFound: gone",
    )
    with pytest.raises(ValueError):
        WorkerHeartbeat.model_validate({**old, "state": "Sleeping"})
