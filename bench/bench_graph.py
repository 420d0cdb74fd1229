"""Graph benchmark: discover + parse + resolve on a large installed package, against grimp.

Run from the repository root: `python -m bench.bench_graph`. `run()` returns the table's
rows for `python -m bench` to gather. First whole processes, as a user runs them: `neo-ray
graph <package folder> --json` (default and --strict) against `python -c "import grimp;
grimp.build_graph(...)"`, taken in turns, min and median of several runs. Then in process:
strict neo-ray in one process, in the parse pool of a new process (its start included), in
a pool already running, and the default (lexical scan, tree-sitter where it is unsure).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grimp

from neo_ray.pipeline import parallel
from neo_ray.pipeline.graph import LENIENT_PARALLEL_MIN_FILES, PARALLEL_MIN_FILES, build_graph

PACKAGE = "ray"
REPEATS = 3
PROCESS_REPEATS = 7
NEO_RAY = str(Path(sys.executable).with_name("neo-ray"))
UNPOOLED = ["env", "NEO_PARSE_WORKERS=0"]  # the default parse without the process pool

Measure = Callable[[], tuple[int, int, float]]  # one run: files, edges, seconds
Row = dict[str, object]


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
    """Whole processes first, then the in-process table."""
    return whole_processes(package) + in_process(package, repeats)


def in_process(package: str = PACKAGE, repeats: int = REPEATS) -> list[dict[str, object]]:
    """Best-of-`repeats` wall time of grimp and of neo-ray's ways to build the graph, taken
    in turns so that a busy moment of the machine weighs on all of them alike."""
    folder = package_folder(package)
    tools: dict[str, Measure] = {
        "grimp.build_graph": _grimp(package),
        "neo-ray strict, sequential (workers=0)": ours(folder, package, True, 0),
        "neo-ray strict, parallel, cold (pool start)": cold(package),
        "neo-ray strict, parallel, warm (pool up)": ours(folder, package, True, None),
        "neo-ray default (scan, tree-sitter where unsure)": ours(folder, package, False, None),
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


def whole_processes(package: str = PACKAGE, repeats: int = PROCESS_REPEATS) -> list[Row]:
    """Wall seconds of each command as a whole process (interpreter start, imports, output
    included), in turns; min and median, and their ratio to grimp's."""
    folder = str(package_folder(package))
    grimp_code = f"import grimp; grimp.build_graph({package!r}, cache_dir=None)"
    commands = {
        "grimp (python -c build_graph)": [sys.executable, "-c", grimp_code],
        "neo-ray graph --json": [NEO_RAY, "graph", folder, "--json"],
        "  the same, NEO_PARSE_WORKERS=0": [*UNPOOLED, NEO_RAY, "graph", folder, "--json"],
        "neo-ray graph --json --strict": [NEO_RAY, "graph", folder, "--json", "--strict"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            wall, used = _timed(command)
            times[name].append(wall)
            cpu[name].append(used)
    base = times["grimp (python -c build_graph)"]
    return [
        {
            "benchmark": "graph-process",
            "package": package,
            "tool": name,
            "runs": repeats,
            "min_s": round(min(values), 3),
            "median_s": round(statistics.median(values), 3),
            "ratio_min": round(min(values) / min(base), 2),
            "ratio_median": round(statistics.median(values) / statistics.median(base), 2),
            "cpu_median_s": round(statistics.median(cpu[name]), 3),
            "machine": machine(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        }
        for name, values in times.items()
    ]


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds of a command, and the CPU seconds (user + system) of it and of the
    children it waited for: a figure a busy machine disturbs less than the wall."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:2]} exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


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
    processes = [r for r in rows if r["benchmark"] == "graph-process"]
    rows = [r for r in rows if r["benchmark"] == "graph"]
    if processes:
        first = processes[0]
        print(
            f"Graph, whole processes: {first['package']} ({first['machine']}), "
            f"{first['runs']} runs in turns, load average at the end {first['load']}"
        )
        print(
            f"{'command':<34} {'min s':>7} {'median s':>9} {'x grimp min':>12} {'median':>7}"
            f" {'CPU s median':>13}"
        )
        for r in processes:
            print(
                f"{r['tool']!s:<34} {r['min_s']!s:>7} {r['median_s']!s:>9} "
                f"{r['ratio_min']!s:>12} {r['ratio_median']!s:>7} {r['cpu_median_s']!s:>13}"
            )
        print()
    print(f"Graph in process: {rows[0]['package']} ({rows[0]['machine']}), best of {REPEATS}")
    print(f"{'tool':<50} {'files':>6} {'edges':>7} {'seconds':>8} {'x grimp':>8}")
    for row in rows:
        print(
            f"{row['tool']!s:<50} {row['files']!s:>6} {row['edges']!s:>7} "
            f"{row['seconds']!s:>8} {row['ratio_vs_grimp']!s:>8}"
        )
    print(
        "files: grimp counts the package's modules, neo-ray every .py/.pyi file (stubs and\n"
        "folders outside packages too). grimp parses on every core (Rust). neo-ray's strict\n"
        f"parse runs in a pool of {parallel.cpu_count()} processes (one per core) above "
        f"{PARALLEL_MIN_FILES} files;\n"
        "cold = a new process's first build, fork server and pool start included; warm = the\n"
        "pool already up, as in a GraphWorker after its first repository. The default runs\n"
        f"in one process below {LENIENT_PARALLEL_MIN_FILES} files; the resolve step always does."
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cold"]:
        _cold_once(sys.argv[2])
    else:
        print_table(run())
