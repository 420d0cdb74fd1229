"""Build a repository's file-level import graph: discover, read, parse, resolve."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from neo_ray.errors import ParseError
from neo_ray.models import Import, Progress, RepoGraph, SkippedFile, SourceFile, Stage
from neo_ray.pipeline import lexical, parallel
from neo_ray.pipeline.discover import candidates, load, printable_path
from neo_ray.pipeline.parse import parse_imports
from neo_ray.pipeline.resolve import Resolver

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A file's imports, and its lexical tokens when the build asked for them."""

    imports: list[Import]
    tokens: tuple[str, ...] = ()


ParseResult = _Parsed | str  # or why the file is skipped

# Strict parsing of more files than this goes to the process pool. Measured on subsets of
# ray's files (about 0.9 ms each to parse; 2 cores, idle): a pool already running wins from
# 50 files on (400 files: 0.28 s against 0.42 s), one that must start first (about 0.15 s
# more) from about 450. The pool is kept, so only a process's first large repository pays.
PARALLEL_MIN_FILES = 500
# A few chunks per process: the last one to finish is short, so no core idles long at the end.
CHUNKS_PER_PROCESS = 4


@dataclass(frozen=True, slots=True)
class _Job:
    """What every parse of one build shares; sent to each pool process with its chunk."""

    root: str
    max_file_bytes: int
    strict: bool
    lexical: bool = False


def build_graph(
    root: Path,
    *,
    repo: str,
    commit: str | None,
    tracked: Iterable[str] | None,
    max_file_bytes: int,
    progress: ProgressCallback | None = None,
    strict: bool = True,
    workers: int | None = None,
    lexical_tokens: bool = False,
) -> RepoGraph:
    """The import graph of the repository checked out at `root`.

    Every readable source file is a node, isolated ones too; edges go importer → imported,
    deduplicated, without self-loops, sorted. A file that cannot be read or parsed is
    left out and listed in `skipped` with the reason, never fatal.

    `strict=False` trades the syntax check for speed: files with syntax errors are kept
    (the imports that can be read count) and Python is read by a lexical scan, about eight
    times faster than tree-sitter's full parse (see `parse.scan_python_imports`).

    `workers` caps the processes that parse: None uses every core, 0 or 1 parse here. Only
    strict parsing of more than PARALLEL_MIN_FILES files goes to the process pool (kept for
    the life of the process, see `neo_ray.pipeline.parallel`); the graph is the same either way.

    `lexical_tokens`: also collect each file's lexical tokens (`neo_ray.pipeline.lexical`) into
    `RepoGraph.tokens`, from the bytes the parse reads (no second read).
    """
    report = progress or (lambda _: None)
    sources = candidates(root, tracked)
    report(Progress(Stage.PARSING, 0, len(sources), "parsing imports"))
    results = _parse_all(
        root,
        sources,
        _Job(str(root), max_file_bytes, strict, lexical_tokens),
        _pool_size(len(sources), strict, workers),
        _parsing_reporter(report, len(sources)),
    )
    parsed: dict[str, list[Import]] = {}
    tokens: dict[str, tuple[str, ...]] = {}
    skipped: list[SkippedFile] = []
    for source in sources:  # in discovery order, however the parse was split
        result = results[source.path]
        if isinstance(result, str):
            skipped.append(SkippedFile(printable_path(source.path), result))
        else:
            parsed[source.path] = result.imports
            if lexical_tokens:
                tokens[source.path] = result.tokens
    nodes = tuple(s for s in sources if s.path in parsed)
    report(Progress(Stage.RESOLVING, 0, len(nodes), "resolving imports"))
    edges = _resolve_edges(root, nodes, parsed)
    report(Progress(Stage.RESOLVING, len(nodes), len(nodes), f"{len(edges)} edges"))
    return RepoGraph(
        repo=repo,
        commit=commit,
        nodes=nodes,
        edges=edges,
        skipped=tuple(sorted(skipped, key=lambda s: s.path)),
        tokens=tokens if lexical_tokens else None,
    )


def _resolve_edges(
    root: Path, nodes: Sequence[SourceFile], parsed: dict[str, list[Import]]
) -> tuple[tuple[str, str], ...]:
    resolver = Resolver(nodes, root)
    edges: set[tuple[str, str]] = set()
    for source in nodes:
        for imp in set(parsed[source.path]):
            for target in resolver.resolve(source, imp):
                if target != source.path and target in parsed:
                    edges.add((source.path, target))
    return tuple(sorted(edges))


def _pool_size(files: int, strict: bool, workers: int | None) -> int:
    """How many processes should parse `files` files: 1 means here, without the pool."""
    if not strict or files <= PARALLEL_MIN_FILES:
        return 1
    cores = parallel.cpu_count()
    return cores if workers is None else max(1, min(workers, cores))


def _parsing_reporter(report: ProgressCallback, total: int) -> Callable[[int], None]:
    """A counter of parsed files that reports PARSING done/total about every 2%."""
    step = max(1, total // 50)
    done = last = 0

    def advance(files: int) -> None:
        nonlocal done, last
        done += files
        if done - last >= step or done == total:
            last = done
            report(Progress(Stage.PARSING, done, total, "parsing imports"))

    return advance


def _parse_all(
    root: Path,
    sources: Sequence[SourceFile],
    job: _Job,
    processes: int,
    advance: Callable[[int], None],
) -> dict[str, ParseResult]:
    """Imports or the reason it is skipped, by path, for every source file."""
    if processes <= 1:
        real_root = os.path.realpath(root)
        results: dict[str, ParseResult] = {}
        for source in sources:
            results[source.path] = _parse_file(job, real_root, source)
            advance(1)
        return results
    # Files dealt out in turn, so that every chunk gets a share of each folder's (big or
    # small) files and the chunks take about as long as each other.
    count = min(len(sources), processes * CHUNKS_PER_PROCESS)
    chunks = [(job, tuple(sources[k::count])) for k in range(count)]
    results = {}
    for _, chunk_results in parallel.map_chunks(_parse_chunk, chunks, processes):
        results.update(chunk_results)
        advance(len(chunk_results))
    return results


def _parse_chunk(chunk: tuple[_Job, Sequence[SourceFile]]) -> list[tuple[str, ParseResult]]:
    """Runs in a pool process: read and parse a chunk of files from the repository folder."""
    job, sources = chunk
    real_root = os.path.realpath(job.root)
    return [(source.path, _parse_file(job, real_root, source)) for source in sources]


def _parse_file(job: _Job, real_root: str, source: SourceFile) -> ParseResult:
    """A file's imports, or the reason it is skipped."""
    data = load(Path(job.root), source.path, real_root=real_root, max_file_bytes=job.max_file_bytes)
    if isinstance(data, str):
        return data
    try:
        imports = parse_imports(data, source.language, source.path, strict=job.strict)
    except ParseError as exc:
        return str(exc)
    if not job.lexical:
        return _Parsed(imports)
    return _Parsed(imports, lexical.file_tokens(data, source.language, source.path, imports))
