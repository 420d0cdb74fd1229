"""Graph benchmark: discover + parse + resolve on a large installed package, against grimp.

Run from the repository root: `python -m bench.bench_graph`. `run()` returns the table's
rows for `python -m bench` to gather.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import grimp

from neo_ray.graph import build_graph

PACKAGE = "ray"
REPEATS = 3


def machine() -> str:
    """The machine the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def run(package: str = PACKAGE, repeats: int = REPEATS) -> list[dict[str, object]]:
    """Best-of-`repeats` wall time of grimp and of neo-ray (strict and fast scan), taken in
    turns so that a busy moment of the machine weighs on all three alike."""
    folder = package_folder(package)

    def ours(strict: bool) -> Callable[[], tuple[int, int]]:
        def measure() -> tuple[int, int]:
            graph = build_graph(
                folder,
                repo=package,
                commit=None,
                tracked=None,
                max_file_bytes=10_000_000,
                strict=strict,
            )
            return len(graph.nodes), len(graph.edges)

        return measure

    def peer() -> tuple[int, int]:
        graph = grimp.build_graph(package, cache_dir=None)
        return len(graph.modules), graph.count_imports()

    tools = {
        "grimp.build_graph": peer,
        "neo-ray build_graph (tree-sitter, strict)": ours(True),
        "neo-ray build_graph (fast scan, strict=False)": ours(False),
    }
    best = {name: float("inf") for name in tools}
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for name, measure in tools.items():
            start = time.perf_counter()
            sizes[name] = measure()
            best[name] = min(best[name], time.perf_counter() - start)
    baseline = best["grimp.build_graph"]
    return [
        {
            "benchmark": "graph",
            "package": package,
            "tool": name,
            "files": sizes[name][0],
            "edges": sizes[name][1],
            "seconds": round(best[name], 3),
            "ratio_vs_grimp": round(best[name] / baseline, 2),
            "machine": machine(),
        }
        for name in tools
    ]


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"Graph: {rows[0]['package']} ({rows[0]['machine']}), best of {REPEATS}")
    print(f"{'tool':<48} {'files':>6} {'edges':>7} {'seconds':>8} {'x grimp':>8}")
    for row in rows:
        print(
            f"{row['tool']!s:<48} {row['files']!s:>6} {row['edges']!s:>7} "
            f"{row['seconds']!s:>8} {row['ratio_vs_grimp']!s:>8}"
        )
    print(
        "files: grimp counts the package's modules, neo-ray every .py/.pyi file (stubs and\n"
        "folders outside packages too). grimp parses on every core (Rust, about 1.4 cores\n"
        "busy here); neo-ray on one."
    )


if __name__ == "__main__":
    print_table(run())
