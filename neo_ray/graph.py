"""Build a repository's file-level import graph: discover, read, parse, resolve."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from neo_ray.discover import candidates, load
from neo_ray.errors import ParseError
from neo_ray.models import Import, Progress, RepoGraph, SkippedFile, SourceFile, Stage
from neo_ray.parse import parse_imports
from neo_ray.resolve import Resolver

ProgressCallback = Callable[[Progress], None]


def build_graph(
    root: Path,
    *,
    repo: str,
    commit: str | None,
    tracked: Iterable[str] | None,
    max_file_bytes: int,
    progress: ProgressCallback | None = None,
    strict: bool = True,
) -> RepoGraph:
    """The import graph of the repository checked out at `root`.

    Every readable source file is a node, isolated ones too; edges go importer → imported,
    deduplicated, without self-loops, sorted. A file that cannot be read or parsed is
    left out and listed in `skipped` with the reason, never fatal.

    `strict=False` trades the syntax check for speed: files with syntax errors are kept
    (the imports that can be read count) and Python is read by a lexical scan, about eight
    times faster than tree-sitter's full parse (see `parse.scan_python_imports`).
    """
    report = progress or (lambda _: None)
    sources = candidates(root, tracked)
    report(Progress(Stage.PARSING, 0, len(sources), "parsing imports"))
    parsed: dict[str, list[Import]] = {}
    skipped: list[SkippedFile] = []
    step = max(1, len(sources) // 50)  # about every 2%
    results = _parse_all(root, sources, max_file_bytes, strict)
    for done, (path, result) in enumerate(results, start=1):
        if isinstance(result, str):
            skipped.append(SkippedFile(path, result))
        else:
            parsed[path] = result
        if done % step == 0 or done == len(sources):
            report(Progress(Stage.PARSING, done, len(sources), "parsing imports"))
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


def _parse_all(
    root: Path, sources: Sequence[SourceFile], max_file_bytes: int, strict: bool
) -> Iterator[tuple[str, list[Import] | str]]:
    """(path, imports or the reason it is skipped) for every source file, one at a time."""
    real_root = os.path.realpath(root)
    for source in sources:
        data = load(root, source.path, real_root=real_root, max_file_bytes=max_file_bytes)
        if isinstance(data, str):
            yield source.path, data
            continue
        try:
            yield source.path, parse_imports(data, source.language, source.path, strict=strict)
        except ParseError as exc:
            yield source.path, str(exc)
