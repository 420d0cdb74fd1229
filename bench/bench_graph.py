"""Graph benchmark: discover + parse + resolve on a large installed package, against grimp.

Run from the repository root: `python -m bench.bench_graph`. `run()` returns the table's
rows for `python -m bench` to gather. Strict neo-ray is measured three ways: in one process,
in the parse pool of a new process (its start included), and in a pool already running.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grimp

from neo_ray.pipeline import parallel
from neo_ray.pipeline.graph import PARALLEL_MIN_FILES, build_graph

PACKAGE = "ray"
REPEATS = 3

Measure = Callable[[], tuple[int, int, float]]  # one run: files, edges, seconds


def machine() -> str:
    """The machine the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def ours(folder: Path, package: str, strict: bool, workers: int | None) -> Measure:
    """A build_graph of the package's folder, as the pipeline calls it."""

    def measure() -> tuple[int, int, float]:
        start = time.perf_counter()
        graph = build_graph(
            folder,
            repo=package,
            commit=None,
            tracked=None,
            max_file_bytes=10_000_000,
            strict=strict,
            workers=workers,
        )
        return len(graph.nodes), len(graph.edges), time.perf_counter() - start

    return measure


def cold(package: str) -> Measure:
    """The first parallel build_graph of a new process: it starts the fork server and the
    pool's children, as a fresh GraphWorker does. Timed inside a fresh interpreter (its own
    start and imports left out), which prints files, edges and seconds."""

    def measure() -> tuple[int, int, float]:
        command = [sys.executable, "-m", "bench.bench_graph", "--cold", package]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        files, edges, seconds = out.split()
        return int(files), int(edges), float(seconds)

    return measure


def run(package: str = PACKAGE, repeats: int = REPEATS) -> list[dict[str, object]]:
    """Best-of-`repeats` wall time of grimp and of neo-ray's ways to build the graph, taken
    in turns so that a busy moment of the machine weighs on all of them alike."""
    folder = package_folder(package)
    tools: dict[str, Measure] = {
        "grimp.build_graph": _grimp(package),
        "neo-ray strict, sequential (workers=0)": ours(folder, package, True, 0),
        "neo-ray strict, parallel, cold (pool start)": cold(package),
        "neo-ray strict, parallel, warm (pool up)": ours(folder, package, True, None),
        "neo-ray fast scan (strict=False)": ours(folder, package, False, None),
    }
    ours(folder, package, True, None)()  # starts the pool: "warm" never pays its start
    best = {name: float("inf") for name in tools}
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for name, measure in tools.items():
            files, edges, seconds = measure()
            sizes[name] = files, edges
            best[name] = min(best[name], seconds)
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


def _grimp(package: str) -> Measure:
    def measure() -> tuple[int, int, float]:
        start = time.perf_counter()
        graph = grimp.build_graph(package, cache_dir=None)
        return len(graph.modules), graph.count_imports(), time.perf_counter() - start

    return measure


def _cold_once(package: str) -> None:
    """`--cold`: one parallel build in this fresh process; prints files, edges, seconds."""
    files, edges, seconds = ours(package_folder(package), package, True, None)()
    print(files, edges, round(seconds, 4))


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"Graph: {rows[0]['package']} ({rows[0]['machine']}), best of {REPEATS}")
    print(f"{'tool':<46} {'files':>6} {'edges':>7} {'seconds':>8} {'x grimp':>8}")
    for row in rows:
        print(
            f"{row['tool']!s:<46} {row['files']!s:>6} {row['edges']!s:>7} "
            f"{row['seconds']!s:>8} {row['ratio_vs_grimp']!s:>8}"
        )
    print(
        "files: grimp counts the package's modules, neo-ray every .py/.pyi file (stubs and\n"
        "folders outside packages too). grimp parses on every core (Rust). neo-ray's strict\n"
        f"parse runs in a pool of {parallel.cpu_count()} processes (one per core) above "
        f"{PARALLEL_MIN_FILES} files;\n"
        "cold = a new process's first build, fork server and pool start included; warm = the\n"
        "pool already up, as in a GraphWorker after its first repository. The fast scan and\n"
        "the resolve step run in one process."
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cold"]:
        _cold_once(sys.argv[2])
    else:
        print_table(run())
