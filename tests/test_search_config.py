"""The search routes where a store is missing or down: 503 naming what to configure, never 500.

The app is served by uvicorn in a thread of this process (a plain ASGI process, as a small
cloud host runs it) over real Redis and PostgreSQL; no Ray.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from ray_fixtures import free_port, wait_for

from neo_ray.config import Mode, Settings
from neo_ray.control import api, search
from neo_ray.models import Language, RepoGraph, SourceFile
from neo_ray.stores.metadata import Database
from neo_ray.stores.queue import Broker

TOKEN = "search-config-token-0123456789"
REPO = "https://github.com/o/r"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


Serve = Callable[[Settings], AbstractContextManager[httpx.Client]]


@pytest.fixture
def serve(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """A factory: `with serve(settings) as http:` the control app on those settings."""

    @contextlib.contextmanager
    def running(settings: Settings) -> Iterator[httpx.Client]:
        monkeypatch.setattr(api, "_state", api.ControlState(settings, broker, {}))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(api.create_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, 30)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                yield http
        finally:
            server.should_exit = True
            thread.join(30)

    yield running
    search._backends.close()


def settings(**kw: object) -> Settings:
    return Settings(admin_token=SecretStr(TOKEN), **kw)  # type: ignore[arg-type]


def test_cloud_plane_without_stores_says_what_to_set(serve: Serve) -> None:
    with serve(settings(mode=Mode.CLOUD)) as http:
        reply = http.get(
            "/api/v1/graph/dependents", params={"repo_url": REPO, "file_path": "a.py"}, headers=AUTH
        )
        assert reply.status_code == 503 and "NEO_DATABASE_URL" in reply.json()["detail"]
        assert http.get("/api/v1/repositories", headers=AUTH).status_code == 503
        reply = http.get(
            "/api/v1/search/similar", params={"repo_url": REPO, "file_path": "a.py"}, headers=AUTH
        )
        assert reply.status_code == 503 and "NEO_QDRANT_URL" in reply.json()["detail"]
        # The token is still checked first.
        reply = http.get("/api/v1/repositories")
        assert reply.status_code == 401


def test_a_qdrant_server_that_is_down_is_503(
    serve: Serve, database: Database, database_url: str
) -> None:
    graph = RepoGraph(REPO, "c", (SourceFile("a.py", Language.PYTHON),), ())
    database.save_repository(REPO, graph)
    dead = f"http://127.0.0.1:{free_port()}"
    conf = settings(mode=Mode.CLOUD, database_url=database_url, qdrant_url=dead)
    with serve(conf) as http:
        params = {"repo_url": REPO, "file_path": "a.py", "mode": "structural"}
        reply = http.get("/api/v1/search/similar", params=params, headers=AUTH)
        assert reply.status_code == 503, reply.text
        assert reply.json()["detail"].startswith("vector store unavailable")
        # What PostgreSQL alone answers still works.
        reply = http.get("/api/v1/graph/dependents", params=params | {"depth": 2}, headers=AUTH)
        assert reply.status_code == 200 and reply.json()["total"] == 0
        listed = http.get("/api/v1/repositories", headers=AUTH).json()["repositories"]
        assert [r["repo_url"] for r in listed] == [REPO]


def test_a_plain_asgi_process_in_local_mode_never_starts_ray() -> None:
    """Without Ray up, local mode's vector reader answers 503 instead of starting a cluster
    (run in a fresh process: this one may have joined the test session's Ray)."""
    code = (
        "import ray\n"
        "from fastapi import HTTPException\n"
        "from neo_ray.control.search import _ActorReader\n"
        "try:\n"
        "    _ActorReader().similar('r', 'f', 5, scope='repo', mode='lexical')\n"
        "except HTTPException as exc:\n"
        "    assert exc.status_code == 503 and 'Ray' in exc.detail, exc.detail\n"
        "else:\n"
        "    raise SystemExit('no 503')\n"
        "assert not ray.is_initialized()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
