"""The edge pipeline in one process: clone → discover/parse/resolve → Node2Vec → store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from neo_ray.config import Settings
from neo_ray.models import Node2VecParams, PipelineResult, Progress, RepoGraph, Stage
from neo_ray.pipeline import clone, embed
from neo_ray.pipeline.graph import build_graph
from neo_ray.repo_url import RepoRef, normalize_repo_url

ProgressFn = Callable[[Progress], None]


class VectorSink(Protocol):
    """Where a run's vectors go: the Qdrant store itself, or the actor that owns it.

    `tokens` are the lexical tokens per file path, stored as BM25 sparse vectors beside the
    Node2Vec ones in the same upsert.
    """

    def replace_repo(
        self,
        graph: RepoGraph,
        vectors: np.ndarray,
        *,
        repo_url: str,
        tokens: Mapping[str, Sequence[str]] | None = None,
        progress: ProgressFn | None = None,
    ) -> int: ...


def node2vec_params(settings: Settings) -> Node2VecParams:
    """The Node2Vec hyperparameters that settings hold."""
    return Node2VecParams(
        dim=settings.dim,
        walk_length=settings.walk_length,
        context_size=settings.context_size,
        walks_per_node=settings.walks_per_node,
        p=settings.p,
        q=settings.q,
        epochs=settings.epochs,
        seed=settings.seed,
    )


def edge_array(graph: RepoGraph) -> np.ndarray:
    """The graph's edges as an (E, 2) array of node indices, in node order."""
    index = {node.path: i for i, node in enumerate(graph.nodes)}
    pairs = [(index[a], index[b]) for a, b in graph.edges]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


class _Timer:
    """Per-stage wall-clock seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


def resolve_source(source: str, settings: Settings, *, allow_local: bool | None = None) -> RepoRef:
    """Validate a repository URL or path under the settings' allowlist."""
    local = settings.allow_local_repos if allow_local is None else allow_local
    return normalize_repo_url(source, allowed_hosts=settings.allowed_hosts, allow_local=local)


def graph_of(
    ref: RepoRef,
    settings: Settings,
    *,
    git_ref: str | None = None,
    progress: ProgressFn | None = None,
    timer: _Timer | None = None,
    lexical_tokens: bool = False,
) -> RepoGraph:
    """Clone the repository and build its file-level import graph (with each file's lexical
    tokens when asked: they are read from the same bytes the parse reads).

    A local folder that is not a git repository is read in place (every file under it);
    anything else is cloned, so only what git tracks at the commit counts.
    """
    timer = timer or _Timer()

    def build(root: Path, commit: str | None, tracked: list[str] | None) -> RepoGraph:
        with timer.stage("parse"):
            return build_graph(
                root,
                repo=ref.url,
                commit=commit,
                tracked=tracked,
                max_file_bytes=settings.max_file_bytes,
                workers=settings.parse_workers,
                progress=progress,
                lexical_tokens=lexical_tokens,
            )

    folder = _plain_folder(ref)
    if folder is not None:
        return build(folder, None, None)
    if progress:
        progress(Progress(Stage.CLONING, 0, 1, ref.url))
    started = time.perf_counter()
    with clone.checkout(
        ref, git_ref=git_ref, timeout_s=settings.clone_timeout_s, max_mb=settings.max_repo_mb
    ) as co:
        timer.seconds["clone"] = round(time.perf_counter() - started, 4)
        return build(co.root, co.commit, co.tracked)


def _plain_folder(ref: RepoRef) -> Path | None:
    """The folder of a local reference that git does not manage, else None."""
    if not ref.is_local:
        return None
    folder = Path(ref.path)
    return None if (folder / ".git").exists() else folder


def run_pipeline(
    ref: RepoRef,
    settings: Settings,
    sink: VectorSink | None,
    *,
    git_ref: str | None = None,
    progress: ProgressFn | None = None,
) -> PipelineResult:
    """Run the whole pipeline; vectors go to `sink` when one is given."""
    timer = _Timer()
    # Lexical tokens only feed the store's BM25 vectors: collected when there is a store.
    graph = graph_of(
        ref, settings, git_ref=git_ref, progress=progress, timer=timer,
        lexical_tokens=sink is not None,
    )  # fmt: skip
    device = embed.resolve_device(settings.device)
    with timer.stage("train"):
        vectors = embed.train_node2vec(
            edge_array(graph),
            len(graph.nodes),
            node2vec_params(settings),
            device=device,
            progress=progress,
        )
    written = 0
    if sink is not None:
        with timer.stage("upload"):
            written = sink.replace_repo(
                graph, vectors, repo_url=ref.url, tokens=graph.tokens, progress=progress
            )
    return PipelineResult(
        graph=graph, device=device, stage_seconds=timer.seconds, embeddings=written
    )


def local_path_ref(path: Path) -> RepoRef:
    """A RepoRef for a local folder, whatever the allowlist says (CLI use on one's own disk)."""
    return normalize_repo_url(str(path.resolve()), allowed_hosts=(), allow_local=True)
