"""Search quality against history: do `similar`'s neighbours change together with the file?

Files that change in the same commits are the external truth of "related". For each git
repository given (a clone or a bare mirror with history; nothing of it is copied into this
project), the benchmark builds the graph at HEAD as the pipeline does (tokens included),
trains Node2Vec with the default settings, writes both vectors to a fresh embedded store, and
asks `similar` for every file with enough co-change, in each mode and at random:

- precision@5: the share of the 5 nearest that changed together with the file;
- recall@10: the share of the file's co-change partners among the 10 nearest;
- within 2: the share of the 5 nearest at most 2 undirected import hops away.

Run: `python -m bench.bench_cochange REPO...` or `NEO_BENCH_COCHANGE_REPOS=a:b:c make bench`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from neo_ray.config import Settings
from neo_ray.models import Node2VecParams, RepoGraph
from neo_ray.pipeline import embed
from neo_ray.pipeline.graph import build_graph
from neo_ray.pipeline.run import edge_array

MODES = ("structural", "lexical", "hybrid", "random")
# A commit touching more source files than this is a sweep (reformat, rename, licence
# header), not a statement that the files belong together.
MAX_FILES_PER_COMMIT = 20
# Two files are co-change partners when at least this many commits touch both ...
MIN_SUPPORT = 2
# ... and a file is measured when it has at least this many partners.
MIN_PARTNERS = 2
RANDOM_DRAWS = 20
SEED = 0


@dataclass(frozen=True)
class Row:
    """One repository and mode: files measured and the three mean figures."""

    repo: str
    mode: str
    files: int
    precision_at_5: float
    recall_at_10: float
    within_2: float


def git(repo: Path, *args: str) -> str:
    """git in a clone or a bare mirror, with the host's configuration ignored."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    done = subprocess.run(
        ["git", f"--git-dir={_git_dir(repo)}", *args],
        capture_output=True,
        check=True,
        env=env,
    )
    return done.stdout.decode("utf-8", "replace")


def _git_dir(repo: Path) -> Path:
    return repo / ".git" if (repo / ".git").exists() else repo


def checkout_head(repo: Path, into: Path) -> tuple[str, list[str]]:
    """HEAD's tree written under `into` (git archive: no history copied); (sha, tracked paths)."""
    sha = git(repo, "rev-parse", "HEAD").strip()
    archive = subprocess.run(
        ["git", f"--git-dir={_git_dir(repo)}", "archive", "--format=tar", "HEAD"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    tracked = git(repo, "ls-tree", "-r", "--name-only", "-z", "HEAD").split("\0")
    return sha, [p for p in tracked if p]


def cochange(repo: Path, files: set[str]) -> dict[str, Counter[str]]:
    """For each of `files`, how many commits changed it together with each other one."""
    log = git(repo, "log", "--no-merges", "--no-renames", "--name-only", "--format=%x01", "HEAD")
    pairs: dict[str, Counter[str]] = defaultdict(Counter)
    for commit in log.split("\x01"):
        touched = sorted({p for p in commit.split("\n") if p in files})
        if 2 <= len(touched) <= MAX_FILES_PER_COMMIT:
            for a, b in combinations(touched, 2):
                pairs[a][b] += 1
                pairs[b][a] += 1
    return pairs


def partners(pairs: dict[str, Counter[str]]) -> dict[str, set[str]]:
    """The files measured, each with its co-change partners."""
    found = {f: {g for g, n in c.items() if n >= MIN_SUPPORT} for f, c in pairs.items()}
    return {f: p for f, p in found.items() if len(p) >= MIN_PARTNERS}


def hops(graph: RepoGraph, start: str, limit: int = 2) -> set[str]:
    """Files at most `limit` undirected import hops from `start`."""
    adjacent: dict[str, set[str]] = defaultdict(set)
    for a, b in graph.edges:
        adjacent[a].add(b)
        adjacent[b].add(a)
    seen, frontier = {start: 0}, deque([start])
    while frontier:
        node = frontier.popleft()
        if seen[node] < limit:
            for nxt in adjacent[node] - seen.keys():
                seen[nxt] = seen[node] + 1
                frontier.append(nxt)
    return set(seen) - {start}


def measure_repo(repo: Path, work: Path) -> list[Row]:
    """Every mode's figures on one repository."""
    from neo_ray.stores.vectors import VectorStore

    # A mirror folder is named owner+name (its git dir inside is "repo").
    name = (repo.resolve().parent.name if repo.name == "repo" else repo.name).replace("+", "/")
    tree = work / "tree"
    tree.mkdir()
    sha, tracked = checkout_head(repo, tree)
    url = f"https://example.invalid/{name}"
    graph = build_graph(
        tree, repo=url, commit=sha, tracked=tracked, max_file_bytes=1_000_000, lexical_tokens=True
    )
    params = Node2VecParams()  # the seed defaults, as `neo-ray up` trains
    vectors = embed.train_node2vec(edge_array(graph), len(graph.nodes), params, device="cpu")
    paths = [n.path for n in graph.nodes]
    truth = partners(cochange(repo, set(paths)))
    settings = Settings(data_dir=work / "data")
    rows = []
    with VectorStore.open(settings) as store:
        store.replace_repo(graph, vectors, repo_url=url, tokens=graph.tokens)
        for mode in MODES:
            ranked = {f: _ranking(store, url, f, mode, paths) for f in truth}
            rows.append(_score(name, mode, graph, truth, ranked))
    print(f"  {name}: {len(paths)} files, {len(graph.edges)} edges, {len(truth)} measured")
    return rows


def _ranking(store: object, url: str, file: str, mode: str, paths: list[str]) -> list[list[str]]:
    """The 10 nearest (one list), or RANDOM_DRAWS random draws of 10 for the random mode."""
    if mode == "random":
        rng = random.Random(f"{SEED}:{file}")
        others = [p for p in paths if p != file]
        return [rng.sample(others, min(10, len(others))) for _ in range(RANDOM_DRAWS)]
    found = store.similar(url, file, k=10, mode=mode)  # type: ignore[attr-defined]
    return [[n.file_path for n in found]]


def _score(
    name: str,
    mode: str,
    graph: RepoGraph,
    truth: dict[str, set[str]],
    ranked: dict[str, list[list[str]]],
) -> Row:
    p5, r10, near = [], [], []
    for file, lists in ranked.items():
        close = hops(graph, file)
        for top in lists:
            p5.append(len(set(top[:5]) & truth[file]) / 5)
            r10.append(len(set(top[:10]) & truth[file]) / len(truth[file]))
            near.append(len(set(top[:5]) & close) / 5)
    return Row(name, mode, len(ranked), _mean(p5), _mean(r10), _mean(near))


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def run(repos: list[Path] | None = None) -> list[Row]:
    """The figures of every repository given (argv or NEO_BENCH_COCHANGE_REPOS)."""
    if repos is None:
        listed = os.environ.get("NEO_BENCH_COCHANGE_REPOS", "")
        repos = [Path(p) for p in listed.split(":") if p]
    if not repos:
        print("  no repositories: set NEO_BENCH_COCHANGE_REPOS=path:path:... (git repos)")
        return []
    rows: list[Row] = []
    for repo in repos:
        with tempfile.TemporaryDirectory(prefix="neo-cochange-") as work:
            started = time.perf_counter()
            rows += measure_repo(repo, Path(work))
            print(f"    ({time.perf_counter() - started:.1f} s)")
    return rows


def print_table(rows: list[Row]) -> None:
    print("| repository | mode | files | precision@5 | recall@10 | top-5 within 2 hops |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.repo} | {r.mode} | {r.files} | {r.precision_at_5:.3f} | "
            f"{r.recall_at_10:.3f} | {r.within_2:.3f} |"
        )
    for mode in MODES:  # the mean over repositories, each weighing the same
        mine = [r for r in rows if r.mode == mode]
        if mine:
            print(
                f"| **mean of {len(mine)}** | {mode} | {sum(r.files for r in mine)} | "
                f"{_mean(r.precision_at_5 for r in mine):.3f} | "
                f"{_mean(r.recall_at_10 for r in mine):.3f} | "
                f"{_mean(r.within_2 for r in mine):.3f} |"
            )


if __name__ == "__main__":
    print_table(run([Path(p) for p in sys.argv[1:]] or None))
