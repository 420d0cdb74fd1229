"""The vector store: Qdrant Edge (embedded default) vs qdrant-client's local mode, same run.

Run from the repository root: `python -m bench.bench_store`. Two parts:

1. **100,000 points** (40 repositories of 2,500 files, 64-d vectors, a lexical vector of 30
   tokens per file from a Zipf-like vocabulary) written through `VectorStore.replace_repo`,
   then `similar` queries in each mode. Edge keeps its shard on disk (write-ahead log, flush
   per repository). The peer is qdrant-client's local mode, the engine neo-ray used before,
   in memory (`:memory:`): its on-disk form writes about 1,000 points/s, so at 100,000 points
   it is measured on a 2,000-point sample (`local mode, disk`) for its write rate only.
2. **Upload share of a job**: `neo-ray run` on the installed `ray` package's sources as a
   whole process (its own summary gives the seconds per stage), then, in this process, the
   same graph's upload with lexical vectors (every identifier of each file as its tokens),
   into Edge and into local mode on disk.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_graph import machine, package_folder
from neo_ray.config import Settings
from neo_ray.models import Language, RepoGraph, SourceFile
from neo_ray.pipeline import run as pipeline
from neo_ray.stores.qdrant_server import ServerStore, local_mode_store
from neo_ray.stores.vectors import VectorStore

POINTS = 100_000
PER_REPO = 2_500
DISK_SAMPLE = 2_000
TOKENS_PER_FILE = 30
VOCABULARY = 20_000
QUERIES = 300
# Local mode scans every point in Python per query (about 1 s each at 100,000 points, 10× that
# for lexical and hybrid): fewer queries for it, so its p99 is nearly its maximum.
PEER_QUERIES = {"structural": 10, "lexical": 3, "hybrid": 3}
MODES: tuple[tuple[str, str], ...] = (
    ("structural", "repo"),
    ("structural", "all"),
    ("lexical", "repo"),
    ("hybrid", "repo"),
)
NEO_RAY = Path(sys.executable).with_name("neo-ray")


def progress(line: str) -> None:
    """Figures as they come (stderr), so a long run that is stopped still leaves them."""
    print(line, file=sys.stderr, flush=True)


def synthetic_repos(points: int, seed: int = 0) -> list[tuple[RepoGraph, np.ndarray, dict]]:
    """`points` files in repositories of PER_REPO: graph, vectors and tokens of each."""
    rng = np.random.default_rng(seed)
    # Zipf-like token frequencies, as identifiers in code have: a few everywhere, most rare.
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    weights /= weights.sum()
    repos = []
    for r in range(0, points, PER_REPO):
        count = min(PER_REPO, points - r)
        url = f"https://github.com/bench/repo{r // PER_REPO}"
        paths = [f"pkg/m{i}.py" for i in range(count)]
        nodes = tuple(SourceFile(p, Language.PYTHON) for p in paths)
        drawn = rng.choice(VOCABULARY, size=(count, TOKENS_PER_FILE), p=weights)
        tokens = {p: [f"t{t}" for t in row] for p, row in zip(paths, drawn, strict=True)}
        vectors = rng.normal(size=(count, 64)).astype(np.float32)
        repos.append((RepoGraph(repo=url, commit="c", nodes=nodes, edges=()), vectors, tokens))
    return repos


def write(store: VectorStore, repos: list[tuple[RepoGraph, np.ndarray, dict]]) -> float:
    """Seconds to replace every repository's points (as ingestion does)."""
    started = time.perf_counter()
    for graph, vectors, tokens in repos:
        store.replace_repo(graph, vectors, repo_url=graph.repo, tokens=tokens)
    return time.perf_counter() - started


def latencies(
    store: VectorStore, repos: list, mode: str, scope: str, queries: int
) -> dict[str, float]:
    """p50 and p99 (ms) of `queries` `similar` calls for random files, k = 10."""
    rng = np.random.default_rng(1)
    took = []
    for _ in range(queries):
        graph = repos[int(rng.integers(len(repos)))][0]
        path = graph.nodes[int(rng.integers(len(graph.nodes)))].path
        started = time.perf_counter()
        store.similar(graph.repo, path, 10, scope=scope, mode=mode)  # type: ignore[arg-type]
        took.append(time.perf_counter() - started)
    ordered = sorted(took)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


def memory_local_mode(settings: Settings) -> ServerStore:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    return ServerStore(
        client,
        collection=settings.qdrant_collection,
        dim=settings.dim,
        local=True,
        location=":memory:",
    )


def engines_at_scale(data: Path) -> list[dict[str, Any]]:
    """Part 1: write 100,000 points, then query, in Edge and in local mode (memory)."""
    settings = Settings(data_dir=data / "edge")
    repos = synthetic_repos(POINTS)
    rows: list[dict[str, Any]] = []
    openers: list[tuple[str, Callable[[], VectorStore], bool]] = [
        ("Qdrant Edge (disk)", lambda: VectorStore.open(settings), False),
        ("local mode (memory)", lambda: memory_local_mode(settings), True),
    ]
    for name, opener, peer in openers:
        with warnings.catch_warnings():  # local mode warns above 20,000 points
            warnings.simplefilter("ignore")
            store = opener()
            try:
                seconds = write(store, repos)
                row: dict[str, Any] = {"engine": name, "points": store.count(), "write_s": seconds}
                progress(f"{name}: wrote {row['points']:,} points in {seconds:.2f} s")
                for mode, scope in MODES:
                    count = PEER_QUERIES[mode] if peer else QUERIES
                    row[f"{mode}/{scope}"] = latencies(store, repos, mode, scope, count)
                    progress(f"{name}: {mode}/{scope} {row[f'{mode}/{scope}']}")
            finally:
                store.close()
        rows.append(row)
    sample = synthetic_repos(DISK_SAMPLE, seed=2)
    with local_mode_store(data / "local-disk", settings) as disk:
        seconds = write(disk, sample)
        rows.append({"engine": "local mode (disk)", "points": disk.count(), "write_s": seconds})
    progress(f"local mode (disk): wrote {DISK_SAMPLE:,} points in {seconds:.2f} s")
    return rows


def identifier_tokens(root: Path, graph: RepoGraph) -> dict[str, list[str]]:
    """Every identifier of each file (a generous stand-in for the pipeline's lexical tokens)."""
    word = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
    return {
        n.path: word.findall((root / n.path).read_text(encoding="utf-8", errors="replace"))
        for n in graph.nodes
    }


def upload_share(data: Path) -> dict[str, Any]:
    """Part 2: `neo-ray run` on ray's sources; then its graph's upload with lexical vectors."""
    folder = package_folder("ray")
    env = {**os.environ, "NEO_DATA_DIR": str(data / "run"), "NEO_MAX_FILE_BYTES": "10000000"}
    started = time.perf_counter()
    done = subprocess.run(
        [str(NEO_RAY), "run", str(folder)], capture_output=True, text=True, env=env, timeout=900
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"neo-ray run failed: {done.stderr[-2000:]}")
    progress(done.stdout)
    (line,) = [s for s in done.stdout.splitlines() if s.startswith("seconds")]
    stages = {k: float(v) for k, v in (p.split() for p in line.removeprefix("seconds").split(","))}
    settings = Settings(data_dir=data / "upload", max_file_bytes=10_000_000)
    graph = pipeline.graph_of(pipeline.local_path_ref(folder), settings)
    vectors = np.random.default_rng(0).normal(size=(len(graph.nodes), settings.dim))
    tokens = identifier_tokens(folder, graph)
    timed: dict[str, float] = {}
    for name, opener in (
        ("edge", lambda: VectorStore.open(settings)),
        ("local_disk", lambda: local_mode_store(data / "upload-local", settings)),
    ):
        with opener() as store:
            t0 = time.perf_counter()
            store.replace_repo(graph, vectors, repo_url=graph.repo, tokens=tokens)
            timed[name] = time.perf_counter() - t0
            progress(f"ray's graph with lexical vectors into {name}: {timed[name]:.2f} s")
    return {
        "files": len(graph.nodes),
        "tokens": sum(len(t) for t in tokens.values()),
        "stages": stages,
        "wall": wall,
        "lexical": timed,
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="neo-bench-store-") as data:
        return {
            "engines": engines_at_scale(Path(data)),
            "upload": upload_share(Path(data)),
        }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"vector store, {POINTS:,} points, k=10, {QUERIES} queries per mode "
        f"(local mode: {PEER_QUERIES}) ({machine()})"
    )
    head = ["engine", "points", "write s", "points/s", *(f"{m}/{s} p50|p99 ms" for m, s in MODES)]
    print(" | ".join(head))
    for row in result["engines"]:
        cells = [row["engine"], f"{row['points']:,}", f"{row['write_s']:.2f}"]
        cells.append(f"{row['points'] / row['write_s']:,.0f}")
        for mode, scope in MODES:
            q = row.get(f"{mode}/{scope}")
            cells.append(f"{q['p50']:.2f} | {q['p99']:.2f}" if q else "-")
        print(" | ".join(cells))
    edge, peer = result["engines"][0], result["engines"][1]
    print(f"write: Edge {peer['write_s'] / edge['write_s']:.1f}× as fast as local mode (memory)")
    for mode, scope in MODES:
        ratio = peer[f"{mode}/{scope}"]["p99"] / edge[f"{mode}/{scope}"]["p99"]
        print(f"p99 {mode}/{scope}: local mode / Edge = {ratio:.1f}×")
    up = result["upload"]
    stages, total = up["stages"], sum(up["stages"].values())
    shown = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
    print(
        f"\nneo-ray run on ray ({up['files']:,} files), whole process {up['wall']:.2f} s: {shown}"
    )
    print(
        f"upload share: {stages['upload'] / up['wall']:.1%} of the process, "
        f"{stages['upload'] / total:.1%} of the stages (goal < 5%)"
    )
    lex = up["lexical"]
    print(
        f"the same graph with lexical vectors ({up['tokens']:,} tokens): Edge "
        f"{lex['edge']:.2f} s, local mode (disk) {lex['local_disk']:.2f} s "
        f"({lex['local_disk'] / lex['edge']:.0f}×)"
    )


if __name__ == "__main__":
    print_table(run())
