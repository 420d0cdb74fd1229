"""The vector store against real Qdrant local mode in tmp_path, and real failures."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import NAMESPACE_URL, uuid5

import numpy as np
import pytest
from httpx import Headers
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from neo_ray.config import Settings, load_settings
from neo_ray.errors import StoreError
from neo_ray.models import Language, Progress, RepoGraph, SourceFile, Stage
from neo_ray.procs import free_port
from neo_ray.stores.vectors import (
    FileNotStored,
    Neighbor,
    VectorStore,
    call_with_retries,
    point_id,
)

REPO = "https://github.com/o/r"
OTHER = "https://github.com/o/other"


def graph(paths: list[str], edges: tuple[tuple[str, str], ...] = (), commit: str = "c1"):
    nodes = tuple(SourceFile(p, Language.PYTHON) for p in paths)
    return RepoGraph(repo=REPO, commit=commit, nodes=nodes, edges=edges)


def unit_rows(angles_deg: list[float], dim: int = 64) -> np.ndarray:
    """Vectors in the first two dimensions at the given angles: cosine order is known."""
    rows = np.zeros((len(angles_deg), dim), dtype=np.float32)
    rad = np.radians(angles_deg)
    rows[:, 0], rows[:, 1] = np.cos(rad), np.sin(rad)
    return rows


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[VectorStore]:
    with VectorStore.open(settings, backoff_s=0.01) as opened:
        yield opened


def test_point_id_formula():
    assert point_id(REPO, "a/b.py") == str(uuid5(NAMESPACE_URL, f"{REPO}:a/b.py"))
    assert point_id(REPO, "a/b.py") != point_id(OTHER, "a/b.py")


def test_upsert_then_nearest_neighbours(store: VectorStore):
    paths = ["a.py", "b.py", "c.py", "d.py"]
    written = store.replace_repo(graph(paths), unit_rows([0, 10, 50, 180]), repo_url=REPO)
    assert written == 4
    near = store.similar(REPO, "a.py", k=2)
    assert [n.file_path for n in near] == ["b.py", "c.py"]  # itself excluded
    assert near[0].repo_url == REPO
    assert near[0].score == pytest.approx(np.cos(np.radians(10)), abs=1e-5)
    assert [n.file_path for n in store.similar(REPO, "a.py", k=10)] == ["b.py", "c.py", "d.py"]


def test_similar_stays_in_the_repository_unless_asked(store: VectorStore):
    store.replace_repo(graph(["a.py", "far.py"]), unit_rows([0, 90]), repo_url=REPO)
    store.replace_repo(graph(["twin.py"]), unit_rows([1]), repo_url=OTHER)
    assert store.similar(REPO, "a.py", k=1) == [
        Neighbor(file_path="far.py", score=pytest.approx(0.0, abs=1e-6), repo_url=REPO)
    ]
    across = store.similar(REPO, "a.py", k=1, same_repo=False)
    assert [(n.repo_url, n.file_path) for n in across] == [(OTHER, "twin.py")]
    with pytest.raises(FileNotStored, match=r"missing\.py"):
        store.similar(REPO, "missing.py")


def test_payload_fields_are_exact(store: VectorStore, settings: Settings):
    g = graph(["a.py", "b.py", "c.py"], edges=(("a.py", "b.py"), ("c.py", "b.py")), commit="f00d")
    before = datetime.now(UTC)
    store.replace_repo(g, unit_rows([0, 20, 40]), repo_url=REPO)
    store.close()  # local mode: one owner; read back with a bare client
    client = QdrantClient(path=str(settings.data_dir / "qdrant"))
    try:
        records = client.retrieve(
            settings.qdrant_collection, ids=[point_id(REPO, "b.py")], with_vectors=True
        )
        info = client.get_collection(settings.qdrant_collection)
    finally:
        client.close()
    payload = dict(records[0].payload or {})
    stamp = payload.pop("ingested_at")
    assert payload == {
        "repo_url": REPO,
        "file_path": "b.py",
        "language": "python",
        "commit_sha": "f00d",
        "in_degree": 2,
        "out_degree": 0,
        "model": "node2vec",
    }
    assert stamp.endswith("Z")
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert info.config.params.vectors == models.VectorParams(size=64, distance="Cosine")


def test_reingest_replaces_without_duplicates_and_drops_stale_points(store: VectorStore):
    store.replace_repo(graph(["a.py", "b.py", "c.py"]), unit_rows([0, 1, 2]), repo_url=REPO)
    store.replace_repo(graph(["x.py", "y.py"]), unit_rows([0, 1]), repo_url=OTHER)
    assert store.count(REPO) == 3
    store.replace_repo(graph(["a.py", "b.py", "c.py"]), unit_rows([5, 6, 7]), repo_url=REPO)
    assert (store.count(REPO), store.count()) == (3, 5)

    store.replace_repo(graph(["a.py", "new.py"]), unit_rows([0, 3]), repo_url=REPO)
    assert store.count(REPO) == 2
    assert store.count(OTHER) == 2  # another repository's points stay
    assert {n.file_path for n in store.similar(REPO, "a.py")} == {"new.py"}
    with pytest.raises(FileNotStored):
        store.similar(REPO, "b.py")

    store.replace_repo(graph([]), unit_rows([]), repo_url=REPO)  # no source files left
    assert (store.count(REPO), store.count()) == (0, 2)


def test_batches_report_progress(store: VectorStore):
    paths = [f"m{i}.py" for i in range(250)]
    seen: list[Progress] = []
    rows = np.random.default_rng(0).normal(size=(250, 64))
    assert store.replace_repo(graph(paths), rows, repo_url=REPO, progress=seen.append) == 250
    assert seen == [Progress(Stage.UPLOADING, n, 250) for n in (100, 200, 250)]
    assert store.count(REPO) == 250


def test_delete_repo_and_count(store: VectorStore):
    store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO)
    store.replace_repo(graph(["a.py"]), unit_rows([0]), repo_url=OTHER)
    assert store.delete_repo(REPO) == 2
    assert (store.count(REPO), store.count(OTHER)) == (0, 1)
    assert store.delete_repo(REPO) == 0


def test_bad_vectors_are_refused_before_writing(store: VectorStore):
    with pytest.raises(StoreError, match=r"shape \(2, 32\); expected \(2, 64\)"):
        store.replace_repo(graph(["a.py", "b.py"]), np.ones((2, 32)), repo_url=REPO)
    rows = unit_rows([0, 1])
    rows[1, 3] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.replace_repo(graph(["a.py", "b.py"]), rows, repo_url=REPO)
    assert store.count() == 0


def test_existing_collection_with_another_dimension_is_refused(settings: Settings):
    client = QdrantClient(path=str(settings.data_dir / "qdrant"))
    client.create_collection(
        settings.qdrant_collection,
        vectors_config=models.VectorParams(size=128, distance=models.Distance.COSINE),
    )
    client.close()
    with (
        VectorStore.open(settings) as store,
        pytest.raises(StoreError, match=r"holds 128-dimensional Cosine vectors.*writes 64"),
    ):
        store.count()


def test_local_mode_raises_no_warning(settings: Settings):
    """Payload indexes would make local mode warn; the store creates them only on a server."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with VectorStore.open(settings) as store:
            store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO)
            store.similar(REPO, "a.py")
    assert [str(w.message) for w in caught if w.category is not ResourceWarning] == []


def test_ping_and_closed_store(store: VectorStore):
    assert store.ping() is True
    store.close()
    assert store.ping() is False
    with pytest.raises(StoreError, match="closed"):
        store.count()
    store.close()  # idempotent


def test_unreachable_server_is_retried_three_times_then_reported(tmp_path: Path):
    """Connection refused on loopback: the ingest's first request (the collection check)."""
    settings = load_settings(data_dir=tmp_path, qdrant_url=f"http://127.0.0.1:{free_port()}")
    failures: list[tuple[str, int, BaseException]] = []
    store = VectorStore.open(settings, backoff_s=0.05, on_failure=lambda *f: failures.append(f))
    assert store.ping() is False
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"failed after 3 attempts.*[Cc]onnection refused"):
        store.replace_repo(graph(["a.py"]), unit_rows([0]), repo_url=REPO)
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff 0.05 s, then 0.1 s
    assert [attempt for _, attempt, _ in failures] == [1, 2, 3]
    assert {op for op, _, _ in failures} == {"check of collection code_structure_embeddings"}
    store.close()


def test_locked_write_heals_on_retry(settings: Settings):
    """A real SQLite writer holds local mode's storage; the upsert fails, then succeeds."""
    failures: list[tuple[str, int, BaseException]] = []
    blockers: list[sqlite3.Connection] = []

    def release(operation: str, attempt: int, exc: BaseException) -> None:
        failures.append((operation, attempt, exc))
        blockers.pop().rollback()

    with VectorStore.open(settings, backoff_s=0.01, on_failure=release) as store:
        store.count()  # creates the collection and its storage file
        (storage,) = (settings.data_dir / "qdrant").rglob("storage.sqlite")
        blocker = sqlite3.connect(storage, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        blockers.append(blocker)
        assert store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO) == 2
        blocker.close()
        assert store.count(REPO) == 2
    assert [(attempt, str(exc)) for _, attempt, exc in failures] == [(1, "database is locked")]
    assert "upsert" in failures[0][0]


def test_another_process_owning_the_store_is_reported(settings: Settings):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(settings.data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "owned"
        with pytest.raises(StoreError, match="owned by another process"):
            VectorStore.open(settings, backoff_s=0.01)
    finally:
        owner.communicate("\n", timeout=30)
    with VectorStore.open(settings) as store:  # free again once the owner exits
        assert store.count() == 0


OWNER_SCRIPT = """
import sys
from pathlib import Path
from neo_ray.config import load_settings
from neo_ray.stores.vectors import VectorStore
store = VectorStore.open(load_settings(data_dir=Path(sys.argv[1])))
print("owned", flush=True)
sys.stdin.readline()
store.close()
"""


def test_open_heals_when_the_owner_lets_go(settings: Settings):
    first = VectorStore.open(settings)
    attempts: list[int] = []

    def release(operation: str, attempt: int, exc: BaseException) -> None:
        attempts.append(attempt)
        first.close()

    with VectorStore.open(settings, backoff_s=0.01, on_failure=release) as second:
        assert second.count() == 0
    assert attempts == [1]


# --- the retry helper itself, with a fault-injecting callable (no store involved)


class FlakyCall:
    """Test double for a store request: fails with `errors` in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_helper_backs_off_exponentially_and_heals():
    sleeps: list[float] = []
    flaky = FlakyCall(OSError("reset"), OSError("reset"))
    result = call_with_retries("op", flaky, attempts=3, backoff_s=0.5, sleep=sleeps.append)
    assert (result, flaky.calls, sleeps) == ("ok", 3, [0.5, 1.0])


def test_retry_helper_gives_up_after_the_last_attempt():
    sleeps: list[float] = []
    flaky = FlakyCall(*(RuntimeError(f"down {i}") for i in range(5)))
    with pytest.raises(StoreError, match="qdrant upsert failed after 3 attempts: down 2") as exc:
        call_with_retries("upsert", flaky, attempts=3, backoff_s=0.1, sleep=sleeps.append)
    assert (flaky.calls, sleeps) == (3, [0.1, 0.2])
    assert isinstance(exc.value.__cause__, RuntimeError)


def test_retry_helper_does_not_retry_what_a_retry_cannot_fix():
    for error in (
        ValueError("wrong dimension"),
        UnexpectedResponse(400, "Bad Request", b"{}", Headers()),
    ):
        flaky = FlakyCall(error)
        with pytest.raises(StoreError, match="was refused"):
            call_with_retries("op", flaky, sleep=lambda s: None)
        assert flaky.calls == 1
    busy = FlakyCall(UnexpectedResponse(503, "Unavailable", b"{}", Headers()))
    assert call_with_retries("op", busy, sleep=lambda s: None) == "ok"
    assert busy.calls == 2
