"""The vector store, one suite against both engines, on real storage in tmp_path.

`edge` is Qdrant Edge (qdrant-edge-py, Qdrant's engine in process), the embedded default.
`server` is the qdrant-client implementation used with a Qdrant server or Qdrant Cloud; no
server installs here, so it runs against qdrant-client's local mode, which speaks the server's
API (the same client calls and models). What only one engine can show (a locked WAL, a locked
SQLite file, a refused connection, migration of an old data directory) is tested on that one.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import numpy as np
import pytest
import qdrant_edge
from httpx import Headers
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from neo_ray.config import Settings, load_settings
from neo_ray.errors import StoreError
from neo_ray.models import Language, Progress, RepoGraph, SourceFile, Stage
from neo_ray.stores import qdrant_server
from neo_ray.stores.qdrant_edge import EdgeStore, shard_path
from neo_ray.stores.qdrant_server import ServerStore, local_mode_store
from neo_ray.stores.vectors import (
    RRF_K,
    FileNotStored,
    InvalidQuery,
    Neighbor,
    VectorStore,
    lexical_vector,
    point_id,
    token_index,
)

REPO = "https://github.com/o/r"
OTHER = "https://github.com/o/other"
ENGINES = ("edge", "server")


def graph(
    paths: list[str],
    edges: tuple[tuple[str, str], ...] = (),
    commit: str = "c1",
    language: Language = Language.PYTHON,
) -> RepoGraph:
    nodes = tuple(SourceFile(p, language) for p in paths)
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


def local_mode_dir(settings: Settings) -> Path:
    return settings.data_dir / "qdrant-client-local"


def open_engine(engine: str, settings: Settings, **retry: Any) -> VectorStore:
    """The embedded default (what VectorStore.open picks without NEO_QDRANT_URL), or the
    qdrant-client implementation on local mode."""
    if engine == "edge":
        return VectorStore.open(settings, **retry)
    return local_mode_store(local_mode_dir(settings), settings, **retry)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(engine: str, settings: Settings) -> Iterator[VectorStore]:
    with open_engine(engine, settings, backoff_s=0.01) as opened:
        yield opened


def raw_point(engine: str, settings: Settings, pid: str) -> tuple[dict[str, Any], Any]:
    """A stored point's payload and vectors, read with the engine's own library."""
    if engine == "edge":
        shard = qdrant_edge.EdgeShard.load(str(shard_path(settings)))
        try:
            (record,) = shard.retrieve([pid], with_payload=True, with_vector=True)
            return dict(record.payload or {}), record.vector
        finally:
            shard.close()
    client = QdrantClient(path=str(local_mode_dir(settings)))
    try:
        (found,) = client.retrieve(settings.qdrant_collection, ids=[pid], with_vectors=True)
        return dict(found.payload or {}), found.vector
    finally:
        client.close()


# --- the shared suite


def test_point_id_formula():
    assert point_id(REPO, "a/b.py") == str(uuid5(NAMESPACE_URL, f"{REPO}:a/b.py"))
    assert point_id(REPO, "a/b.py") != point_id(OTHER, "a/b.py")


def test_open_picks_the_engine_from_the_settings(settings: Settings):
    with VectorStore.open(settings) as embedded:
        assert isinstance(embedded, EdgeStore)
        assert embedded.location == str(settings.data_dir / "qdrant-edge" / embedded.collection)
    remote = settings.model_copy(update={"qdrant_url": "http://127.0.0.1:1"})
    with VectorStore.open(remote) as server:
        assert isinstance(server, ServerStore) and server.location == "http://127.0.0.1:1"


def test_upsert_then_nearest_neighbours(store: VectorStore):
    paths = ["a.py", "b.py", "c.py", "d.py"]
    written = store.replace_repo(graph(paths), unit_rows([0, 10, 50, 180]), repo_url=REPO)
    assert written == 4
    near = store.similar(REPO, "a.py", k=2)
    assert [n.file_path for n in near] == ["b.py", "c.py"]  # itself excluded
    assert (near[0].repo_url, near[0].language) == (REPO, "python")
    assert near[0].score == pytest.approx(np.cos(np.radians(10)), abs=1e-5)
    assert [n.file_path for n in store.similar(REPO, "a.py", k=10)] == ["b.py", "c.py", "d.py"]


def test_similar_stays_in_the_repository_unless_asked(store: VectorStore):
    store.replace_repo(graph(["a.py", "far.py"]), unit_rows([0, 90]), repo_url=REPO)
    store.replace_repo(graph(["twin.go"], language=Language.GO), unit_rows([1]), repo_url=OTHER)
    assert store.similar(REPO, "a.py", k=1) == [
        Neighbor(repo_url=REPO, file_path="far.py", language="python", score=pytest.approx(0.0))
    ]
    across = store.similar(REPO, "a.py", k=1, scope="all")
    assert [(n.repo_url, n.file_path, n.language) for n in across] == [(OTHER, "twin.go", "go")]
    with pytest.raises(FileNotStored, match=r"missing\.py"):
        store.similar(REPO, "missing.py")


def test_payload_and_both_vectors_are_stored_exactly(
    engine: str, store: VectorStore, settings: Settings
):
    g = graph(["a.py", "b.py", "c.py"], edges=(("a.py", "b.py"), ("c.py", "b.py")), commit="f00d")
    before = datetime.now(UTC)
    tokens = {"b.py": ["order", "total", "order"], "a.py": ["x"]}
    store.replace_repo(g, unit_rows([0, 20, 40]), repo_url=REPO, tokens=tokens)
    store.close()  # one owner at a time: read back with the engine's own library
    payload, vector = raw_point(engine, settings, point_id(REPO, "b.py"))
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
    assert vector[""] == pytest.approx(unit_rows([20])[0].tolist(), abs=1e-6)
    expected = lexical_vector(["order", "total", "order"], mean_length=2.0)  # (3 + 1) / 2
    assert expected is not None
    assert list(vector["lexical"].indices) == expected.indices
    assert list(vector["lexical"].values) == pytest.approx(expected.values, rel=1e-6)


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


def test_reingest_without_tokens_drops_the_old_lexical_vectors(store: VectorStore):
    store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO, tokens=TWO_SHARED)
    assert [n.file_path for n in store.similar(REPO, "a.py", mode="lexical")] == ["b.py"]
    store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO)
    assert store.similar(REPO, "a.py", mode="lexical") == []


TWO_SHARED = {"a.py": ["cart", "price"], "b.py": ["cart", "price"]}


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


def test_bad_input_is_refused_before_writing(store: VectorStore):
    with pytest.raises(StoreError, match=r"shape \(2, 32\); expected \(2, 64\)"):
        store.replace_repo(graph(["a.py", "b.py"]), np.ones((2, 32)), repo_url=REPO)
    rows = unit_rows([0, 1])
    rows[1, 3] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.replace_repo(graph(["a.py", "b.py"]), rows, repo_url=REPO)
    with pytest.raises(StoreError, match=r"tokens given for 1 file\(s\) not in the graph: z\.py"):
        store.replace_repo(
            graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO, tokens={"z.py": ["q"]}
        )
    assert store.count() == 0


def test_bad_query_parameters_are_refused(store: VectorStore):
    store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO)
    with pytest.raises(InvalidQuery, match="k must be between 1 and 1000, got 0"):
        store.similar(REPO, "a.py", k=0)
    with pytest.raises(InvalidQuery, match="scope must be one of repo, all, got 'world'"):
        store.similar(REPO, "a.py", scope="world")  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="mode must be one of structural, lexical, hybrid"):
        store.similar(REPO, "a.py", mode="text")  # type: ignore[arg-type]


def test_ping_and_closed_store(store: VectorStore):
    assert store.ping() is True
    store.close()
    assert store.ping() is False
    with pytest.raises(StoreError, match="closed"):
        store.count()
    store.close()  # idempotent


# --- lexical and hybrid search


def test_lexical_vector_is_bm25_term_weight():
    tokens = ["a", "b", "a", "c"]
    found = lexical_vector(tokens, mean_length=2.0)
    assert found is not None
    norm = 1.2 * (1 - 0.75 + 0.75 * 4 / 2.0)
    weights = {token_index("a"): 2 * 2.2 / (2 + norm), token_index("b"): 2.2 / (1 + norm)}
    weights[token_index("c")] = weights[token_index("b")]
    assert found.indices == sorted(weights)
    assert found.values == pytest.approx([weights[i] for i in found.indices])
    assert lexical_vector([], mean_length=3.0) is None


def test_lexical_ranks_rare_shared_terms_first(store: VectorStore):
    """IDF: sharing a term few files have counts more than sharing one every file has."""
    paths = ["query.py", "rare.py", "common.py", *(f"filler{i}.py" for i in range(6))]
    tokens = {
        "query.py": ["invoice", "util"],
        "rare.py": ["invoice", "x1"],
        "common.py": ["util", "x2"],
        **{f"filler{i}.py": ["util", f"y{i}"] for i in range(6)},
    }
    rows = unit_rows([0, 90, 1, *(range(60, 66))])  # structurally, common.py is the nearest
    store.replace_repo(graph(paths), rows, repo_url=REPO, tokens=tokens)
    lexical = store.similar(REPO, "query.py", k=3, mode="lexical")
    assert lexical[0].file_path == "rare.py"
    assert lexical[0].score > lexical[1].score > 0
    assert store.similar(REPO, "query.py", k=1)[0].file_path == "common.py"


def test_hybrid_finds_what_neither_ranking_puts_first(store: VectorStore):
    """both.py is second in each ranking; each first is absent from (or last in) the other."""
    paths = ["q.py", "struct.py", "both.py", "x1.py", "x2.py", "lex.py"]
    tokens = {
        "q.py": ["parse", "token", "ledger"],
        "lex.py": ["parse", "token", "ledger"],
        "both.py": ["parse", "zz"],
        "struct.py": ["unrelated"],
        "x1.py": ["other"],
        "x2.py": ["more"],
    }
    rows = unit_rows([0, 5, 10, 20, 30, 170])
    store.replace_repo(graph(paths), rows, repo_url=REPO, tokens=tokens)
    first = {
        mode: store.similar(REPO, "q.py", k=5, mode=mode)[0].file_path
        for mode in ("structural", "lexical", "hybrid")
    }
    assert first == {"structural": "struct.py", "lexical": "lex.py", "hybrid": "both.py"}
    fused = store.similar(REPO, "q.py", k=5, mode="hybrid")
    # rank 1 (from 0) in both lists; lex.py: 0 lexical, 4 structural; struct.py: 0 structural
    assert fused[0].score == pytest.approx(2 / (RRF_K + 1), rel=1e-5)
    assert fused[1].file_path == "lex.py"
    assert fused[1].score == pytest.approx(1 / RRF_K + 1 / (RRF_K + 4), rel=1e-5)
    assert "q.py" not in {n.file_path for n in fused}


def test_a_file_without_tokens_has_no_lexical_neighbours(store: VectorStore):
    store.replace_repo(
        graph(["a.py", "b.py", "c.py"]),
        unit_rows([0, 10, 20]),
        repo_url=REPO,
        tokens={"b.py": ["k"], "c.py": ["k"]},
    )
    assert store.similar(REPO, "a.py", mode="lexical") == []
    hybrid = store.similar(REPO, "a.py", mode="hybrid")  # the structural ranking alone
    assert [n.file_path for n in hybrid] == ["b.py", "c.py"]
    assert hybrid[0].score == pytest.approx(1 / RRF_K, rel=1e-5)


def test_lexical_search_across_repositories(store: VectorStore):
    store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO, tokens=TWO_SHARED)
    store.replace_repo(
        graph(["twin.py"]), unit_rows([0]), repo_url=OTHER, tokens={"twin.py": ["cart", "price"]}
    )
    assert [n.file_path for n in store.similar(REPO, "a.py", mode="lexical")] == ["b.py"]
    across = store.similar(REPO, "a.py", mode="lexical", scope="all")
    assert {(n.repo_url, n.file_path) for n in across} == {(REPO, "b.py"), (OTHER, "twin.py")}


# --- collections: dimensions, indexes, races


def test_existing_collection_with_another_dimension_is_refused(engine: str, settings: Settings):
    if engine == "edge":
        config = qdrant_edge.EdgeConfig(
            vectors=qdrant_edge.EdgeVectorParams(size=128, distance=qdrant_edge.Distance.Cosine)
        )
        qdrant_edge.EdgeShard.create(str(shard_path(settings)), config).close()
        with pytest.raises(StoreError, match=r"does not fit.*expected vector size 64.*NEO_DIM"):
            open_engine(engine, settings)
        return
    client = QdrantClient(path=str(local_mode_dir(settings)))
    client.create_collection(
        settings.qdrant_collection,
        vectors_config=models.VectorParams(size=128, distance=models.Distance.COSINE),
    )
    client.close()
    with (
        open_engine(engine, settings) as store,
        pytest.raises(StoreError, match=r"holds 128-dimensional Cosine vectors.*writes 64"),
    ):
        store.count()


def test_edge_shard_has_keyword_indexes_and_an_idf_sparse_vector(settings: Settings):
    with VectorStore.open(settings) as store:
        store.replace_repo(graph(["a.py"]), unit_rows([0]), repo_url=REPO, tokens={"a.py": ["t"]})
    shard = qdrant_edge.EdgeShard.load(str(shard_path(settings)))
    try:
        schema = shard.info().payload_schema
    finally:
        shard.close()
    assert {"repo_url", "language", "file_path"} <= set(schema)
    assert {str(schema[f].data_type) for f in ("repo_url", "language")} == {
        str(qdrant_edge.PayloadSchemaType.Keyword)
    }
    config = (shard_path(settings) / "edge_config.json").read_text()
    assert '"lexical"' in config and '"idf"' in config.lower()


class ClientProxy:
    """The real local-mode client, recording calls; with a barrier, every thread's existence
    check answers only once all threads asked, so each of them goes on to create."""

    def __init__(self, client: QdrantClient, barrier: threading.Barrier | None = None) -> None:
        self._client = client
        self._barrier = barrier
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((name, args))
                result = real(*args, **kwargs)
            if name == "collection_exists" and self._barrier is not None and not result:
                self._barrier.wait(timeout=30)
            return result

        return call


def server_store(proxy: ClientProxy, settings: Settings, *, local: bool) -> ServerStore:
    return ServerStore(
        proxy,  # type: ignore[arg-type]
        collection=settings.qdrant_collection,
        dim=settings.dim,
        local=local,
        location="proxy",
        backoff_s=0.01,
    )


def test_two_workers_racing_to_create_the_collection_both_succeed(settings: Settings):
    client = QdrantClient(path=str(local_mode_dir(settings)))
    proxy = ClientProxy(client, threading.Barrier(2))
    stores = [server_store(proxy, settings, local=False) for _ in range(2)]
    errors: list[BaseException] = []

    def first_use(store: ServerStore) -> None:
        try:
            with warnings.catch_warnings():  # local mode says payload indexes do nothing there
                warnings.filterwarnings("ignore", "Payload indexes have no effect")
                store.replace_repo(graph(["a.py"]), unit_rows([0]), repo_url=REPO)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    names = [name for name, _ in proxy.calls]
    assert names.count("create_collection") == 2  # both tried: one won, one found it there
    assert names.count("get_collection") == 1  # the loser checked the winner's configuration
    indexed = sorted(args[1] for name, args in proxy.calls if name == "create_payload_index")
    assert indexed == sorted(["repo_url", "language", "file_path"] * 2)
    info = client.get_collection(settings.qdrant_collection)
    assert info.config.params.vectors == models.VectorParams(size=64, distance="Cosine")
    sparse = info.config.params.sparse_vectors or {}
    assert sparse["lexical"].modifier == models.Modifier.IDF
    assert client.count(settings.qdrant_collection).count == 1
    client.close()


def test_server_collection_from_before_lexical_search_gets_its_sparse_vector(
    settings: Settings,
):
    client = QdrantClient(path=str(local_mode_dir(settings)))
    client.create_collection(
        settings.qdrant_collection,
        vectors_config=models.VectorParams(size=64, distance=models.Distance.COSINE),
    )
    client.upsert(
        settings.qdrant_collection,
        [models.PointStruct(id=point_id(REPO, "old.py"), vector=[1.0] * 64, payload=OLD_PAYLOAD)],
    )
    with server_store(ClientProxy(client), settings, local=True) as store:
        assert [n.file_path for n in store.similar(REPO, "old.py", k=1)] == []
        store.replace_repo(
            graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO, tokens=TWO_SHARED
        )
        assert [n.file_path for n in store.similar(REPO, "a.py", mode="lexical")] == ["b.py"]
        info = client.get_collection(settings.qdrant_collection)
        assert "lexical" in (info.config.params.sparse_vectors or {})


OLD_PAYLOAD = {"repo_url": REPO, "file_path": "old.py", "language": "python"}


def test_local_mode_raises_no_warning(settings: Settings):
    """Payload indexes would make local mode warn; the store creates them only on a server."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_engine("server", settings) as store:
            store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO)
            store.similar(REPO, "a.py", mode="hybrid")
    assert [str(w.message) for w in caught if w.category is not ResourceWarning] == []


# --- one owner per embedded store


def test_another_process_owning_the_edge_shard_is_reported(settings: Settings):
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
        assert store.count() == 1


OWNER_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from neo_ray.config import load_settings
from neo_ray.models import Language, RepoGraph, SourceFile
from neo_ray.stores.vectors import VectorStore
store = VectorStore.open(load_settings(data_dir=Path(sys.argv[1])))
g = RepoGraph(repo="r", commit="c", nodes=(SourceFile("a.py", Language.PYTHON),), edges=())
store.replace_repo(g, np.ones((1, 64)), repo_url="r")
print("owned", flush=True)
sys.stdin.readline()
store.close()
"""


def test_edge_open_heals_when_the_owner_lets_go(settings: Settings):
    first = VectorStore.open(settings)
    attempts: list[int] = []

    def release(operation: str, attempt: int, exc: BaseException) -> None:
        attempts.append(attempt)
        first.close()

    with VectorStore.open(settings, backoff_s=0.01, on_failure=release) as second:
        assert second.count() == 0
    assert attempts == [1]


def test_edge_data_survives_a_reopen(settings: Settings):
    with VectorStore.open(settings) as store:
        store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 30]), repo_url=REPO)
    with VectorStore.open(settings) as again:
        assert again.count(REPO) == 2
        assert [n.file_path for n in again.similar(REPO, "a.py")] == ["b.py"]


def test_edge_writes_survive_a_process_that_dies_without_closing(settings: Settings):
    """Updates are in the write-ahead log when replace_repo returns; a reload replays it."""
    script = OWNER_SCRIPT.replace('print("owned", flush=True)', "import os; os._exit(0)")
    done = subprocess.run([sys.executable, "-c", script, str(settings.data_dir)], timeout=120)
    assert done.returncode == 0
    with VectorStore.open(settings) as store:
        assert store.count("r") == 1


# --- an old qdrant-client local-mode data directory


def write_old_local_mode(settings: Settings, count: int, dim: int = 64) -> None:
    """What neo-ray wrote before Qdrant Edge: local mode in NEO_DATA_DIR/qdrant."""
    client = QdrantClient(path=str(settings.data_dir / "qdrant"))
    client.create_collection(
        settings.qdrant_collection,
        vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
    )
    rows = unit_rows([i * 0.25 for i in range(count)], dim)  # m1, m2 nearest to m0
    client.upsert(
        settings.qdrant_collection,
        [
            models.PointStruct(
                id=point_id(REPO, f"m{i}.py"),
                vector=rows[i].tolist(),
                payload={"repo_url": REPO, "file_path": f"m{i}.py", "language": "python"},
            )
            for i in range(count)
        ],
    )
    client.close()


def test_old_local_mode_folder_is_migrated_and_kept_aside(
    settings: Settings, caplog: pytest.LogCaptureFixture
):
    write_old_local_mode(settings, 1205)  # more than one migration batch
    with caplog.at_level(logging.WARNING), VectorStore.open(settings) as store:
        assert store.count(REPO) == 1205
        near = store.similar(REPO, "m0.py", k=2)
        assert [(n.file_path, n.language) for n in near] == [
            ("m1.py", "python"),
            ("m2.py", "python"),
        ]
        assert store.similar(REPO, "m0.py", mode="lexical") == []  # tokens come on re-ingest
    assert not (settings.data_dir / "qdrant").exists()
    assert (settings.data_dir / "qdrant.migrated").is_dir()
    assert "migrated 1205 points" in caplog.text and "qdrant.migrated" in caplog.text
    with VectorStore.open(settings) as again:  # once only
        assert again.count() == 1205


def test_old_local_mode_folder_of_another_dimension_is_refused_untouched(settings: Settings):
    write_old_local_mode(settings, 3, dim=32)
    with pytest.raises(StoreError, match=r"holds 32-dimensional vectors.*NEO_DIM=32"):
        VectorStore.open(settings)
    assert (settings.data_dir / "qdrant").is_dir()
    assert not shard_path(settings).exists()
    client = QdrantClient(path=str(settings.data_dir / "qdrant"))
    try:
        assert client.count(settings.qdrant_collection).count == 3
    finally:
        client.close()


def test_old_folder_beside_an_edge_shard_is_refused(settings: Settings):
    with VectorStore.open(settings) as store:
        store.replace_repo(graph(["a.py"]), unit_rows([0]), repo_url=REPO)
    write_old_local_mode(settings, 2)
    with pytest.raises(StoreError, match=r"both the old Qdrant local-mode folder .* exist"):
        VectorStore.open(settings)
    shutil.move(settings.data_dir / "qdrant", settings.data_dir / "elsewhere")
    with VectorStore.open(settings) as store:
        assert store.count() == 1


def test_old_folder_held_by_a_running_old_process_is_refused(settings: Settings):
    write_old_local_mode(settings, 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(settings.data_dir / "qdrant")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=r"owned by another process.*stop that process"):
            VectorStore.open(settings)
        assert not shard_path(settings).exists()
    finally:
        holder.communicate("\n", timeout=30)
    with VectorStore.open(settings) as store:
        assert store.count() == 2


HOLDER_SCRIPT = """
import sys
from qdrant_client import QdrantClient
client = QdrantClient(path=sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
client.close()
"""


# --- qdrant-client specifics: a refused connection, a locked local-mode file


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])  # closed on exit: nothing listens there


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

    with open_engine("server", settings, backoff_s=0.01, on_failure=release) as store:
        store.count()  # creates the collection and its storage file
        (storage,) = local_mode_dir(settings).rglob("storage.sqlite")
        blocker = sqlite3.connect(storage, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        blockers.append(blocker)
        assert store.replace_repo(graph(["a.py", "b.py"]), unit_rows([0, 1]), repo_url=REPO) == 2
        blocker.close()
        assert store.count(REPO) == 2
    assert [(attempt, str(exc)) for _, attempt, exc in failures] == [(1, "database is locked")]
    assert "upsert" in failures[0][0]


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


def server_retry(op: str, fn: FlakyCall, **kwargs: Any) -> str:
    """The retry helper with the qdrant-client implementation's classification."""
    return qdrant_server.call_with_retries(
        op, fn, errors=qdrant_server.RETRIED, is_transient=qdrant_server.is_transient, **kwargs
    )


def test_retry_helper_backs_off_exponentially_and_heals():
    sleeps: list[float] = []
    flaky = FlakyCall(OSError("reset"), OSError("reset"))
    result = server_retry("op", flaky, attempts=3, backoff_s=0.5, sleep=sleeps.append)
    assert (result, flaky.calls, sleeps) == ("ok", 3, [0.5, 1.0])


def test_retry_helper_gives_up_after_the_last_attempt():
    sleeps: list[float] = []
    flaky = FlakyCall(*(RuntimeError(f"down {i}") for i in range(5)))
    with pytest.raises(StoreError, match="qdrant upsert failed after 3 attempts: down 2") as exc:
        server_retry("upsert", flaky, attempts=3, backoff_s=0.1, sleep=sleeps.append)
    assert (flaky.calls, sleeps) == (3, [0.1, 0.2])
    assert isinstance(exc.value.__cause__, RuntimeError)


def test_retry_helper_does_not_retry_what_a_retry_cannot_fix():
    for error in (
        ValueError("wrong dimension"),
        UnexpectedResponse(400, "Bad Request", b"{}", Headers()),
    ):
        flaky = FlakyCall(error)
        with pytest.raises(StoreError, match="was refused"):
            server_retry("op", flaky, sleep=lambda s: None)
        assert flaky.calls == 1
    busy = FlakyCall(UnexpectedResponse(503, "Unavailable", b"{}", Headers()))
    assert server_retry("op", busy, sleep=lambda s: None) == "ok"
    assert busy.calls == 2
