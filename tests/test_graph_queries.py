"""Graph walks, shared neighbours and repository listings in PostgreSQL, on a known graph."""

from __future__ import annotations

import time

import pytest

from neo_ray.errors import NotFound
from neo_ray.models import Language, RepoGraph, SourceFile
from neo_ray.stores.metadata import Database, Direction, Overlap

pytest_plugins = ["services_fixtures"]

REPO = "https://github.com/o/layers"

# base ← models ⇄ registry; models ← service ← api ← app; service ← cli; models ← tests;
# worker imports both service and registry (two shortest paths from base: the tie-break).
EDGES = [
    ("models.py", "base.py"),
    ("models.py", "registry.py"),
    ("registry.py", "models.py"),
    ("service.py", "models.py"),
    ("api.py", "service.py"),
    ("app.py", "api.py"),
    ("cli.py", "service.py"),
    ("tests/test_models.py", "models.py"),
    ("worker.py", "service.py"),
    ("worker.py", "registry.py"),
]
FILES = sorted({p for e in EDGES for p in e} | {"util.py", "web/page.ts"})


def layered_graph() -> RepoGraph:
    nodes = tuple(
        SourceFile(p, Language.TYPESCRIPT if p.endswith(".ts") else Language.PYTHON) for p in FILES
    )
    return RepoGraph(repo=REPO, commit="abc", nodes=nodes, edges=tuple(sorted(EDGES)))


@pytest.fixture
def db(database: Database) -> Database:
    database.save_repository(REPO, layered_graph(), job_id="job-1")
    return database


def by_depth(db: Database, start: str, direction: Direction, depth: int) -> dict[str, object]:
    return {r.path: (r.depth, list(r.via)) for r in db.walk(REPO, [start], direction, depth)}


def test_dependents_to_depth_three_with_one_shortest_path_each(db: Database) -> None:
    assert by_depth(db, "base.py", Direction.DEPENDENTS, 3) == {
        "models.py": (1, ["base.py", "models.py"]),
        "registry.py": (2, ["base.py", "models.py", "registry.py"]),
        "service.py": (2, ["base.py", "models.py", "service.py"]),
        "tests/test_models.py": (2, ["base.py", "models.py", "tests/test_models.py"]),
        "api.py": (3, ["base.py", "models.py", "service.py", "api.py"]),
        "cli.py": (3, ["base.py", "models.py", "service.py", "cli.py"]),
        # Two shortest paths (through registry or service): the first in path order wins.
        "worker.py": (3, ["base.py", "models.py", "registry.py", "worker.py"]),
    }


def test_depth_limits_the_walk_and_results_come_nearest_first(db: Database) -> None:
    one = db.walk(REPO, ["base.py"], Direction.DEPENDENTS, 1)
    assert [(r.path, r.depth, r.language) for r in one] == [("models.py", 1, "python")]
    four = db.walk(REPO, ["base.py"], Direction.DEPENDENTS, 10)
    assert [r.depth for r in four] == sorted(r.depth for r in four)
    assert {r.path for r in four if r.depth == 4} == {"app.py"}
    assert len(four) == 8  # every file but base itself, util.py and web/page.ts


def test_dependencies_follow_imports_through_a_cycle_and_end(db: Database) -> None:
    assert by_depth(db, "app.py", Direction.DEPENDENCIES, 10) == {
        "api.py": (1, ["app.py", "api.py"]),
        "service.py": (2, ["app.py", "api.py", "service.py"]),
        "models.py": (3, ["app.py", "api.py", "service.py", "models.py"]),
        "base.py": (4, ["app.py", "api.py", "service.py", "models.py", "base.py"]),
        "registry.py": (4, ["app.py", "api.py", "service.py", "models.py", "registry.py"]),
    }
    assert by_depth(db, "util.py", Direction.DEPENDENCIES, 10) == {}


def test_a_walk_from_several_files_reaches_each_file_once_from_the_nearest(db: Database) -> None:
    reached = db.walk(REPO, ["base.py", "service.py"], Direction.DEPENDENTS, 10)
    paths = {r.path: list(r.via) for r in reached}
    assert paths["api.py"] == ["service.py", "api.py"]
    assert paths["models.py"] == ["base.py", "models.py"]
    assert "service.py" not in paths and "base.py" not in paths  # the change itself
    assert len(paths) == len(reached)


def test_unknown_repository_and_file_are_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="has not been ingested"):
        db.walk("https://github.com/o/never", ["a.py"], Direction.DEPENDENTS, 1)
    with pytest.raises(NotFound, match=r"nope\.py is not a file"):
        db.walk(REPO, ["nope.py"], Direction.DEPENDENTS, 1)
    # Not strict (a diff names READMEs and deleted files): unknown starts are ignored.
    reached = db.walk(REPO, ["README.md", "base.py"], Direction.DEPENDENTS, 1, strict=False)
    assert [r.path for r in reached] == ["models.py"]
    assert db.known_files(REPO, ["README.md", "cli.py", "cli.py"]) == ["cli.py"]


def test_undirected_distances(db: Database) -> None:
    found = db.distances(REPO, "cli.py", ["api.py", "base.py", "util.py", "worker.py"], 10)
    assert found == {"api.py": 2, "base.py": 3, "worker.py": 2}


def test_overlaps_name_shared_neighbours_and_common_imports(db: Database) -> None:
    found = db.overlaps(REPO, "cli.py", ["api.py", "worker.py", "util.py", "service.py"])
    assert found["api.py"] == Overlap(("service.py",), ("service.py",))
    assert found["worker.py"] == Overlap(("service.py",), ("service.py",))
    assert found["util.py"] == Overlap((), ())
    assert found["service.py"] == Overlap((), ())  # adjacent itself, but shares no neighbour
    registry = db.overlaps(REPO, "service.py", ["registry.py"])["registry.py"]
    # service imports models; registry imports and is imported by models, and is imported
    # by worker, which imports service too.
    assert registry == Overlap(("models.py", "worker.py"), ("models.py",))


def test_repositories_carry_languages_and_the_job(db: Database) -> None:
    other = "https://github.com/o/second"
    db.save_repository(other, RepoGraph(other, "def", (SourceFile("x.go", Language.GO),), ()))
    listed = db.repositories()
    assert [r.repo_url for r in listed] == [other, REPO]
    layers = listed[1]
    assert layers.languages == {"python": len(FILES) - 1, "typescript": 1}
    assert (layers.files, layers.edges, layers.last_commit_sha) == (len(FILES), len(EDGES), "abc")
    assert layers.last_job_id == "job-1"
    assert listed[0].last_job_id is None
    assert db.repository_by_id(layers.id) == layers
    assert db.repository_by_id(10**9) is None
    assert db.repositories(limit=1, offset=1) == [layers]


def test_a_deep_walk_over_a_large_cyclic_graph_is_quick(database: Database) -> None:
    files = [f"m{i}.py" for i in range(3000)]
    edges = {(files[i], files[(i * 7 + 1) % 3000]) for i in range(3000)}
    edges |= {(files[i], files[(i * 13 + 5) % 3000]) for i in range(3000)}
    edges = {e for e in edges if e[0] != e[1]}
    nodes = tuple(SourceFile(p, Language.PYTHON) for p in files)
    database.save_repository(REPO, RepoGraph(REPO, None, nodes, tuple(sorted(edges))))
    started = time.perf_counter()
    reached = database.walk(REPO, ["m0.py"], Direction.DEPENDENTS, 10_000)
    elapsed = time.perf_counter() - started
    assert len(reached) == len({r.path for r in reached}) > 2000
    for r in reached[:200]:  # every path is a real chain of edges, start to file
        assert r.via[0] == "m0.py" and r.via[-1] == r.path and len(r.via) == r.depth + 1
        assert all((b, a) in edges for a, b in zip(r.via, r.via[1:], strict=False))
    print(f"walk over 3,000 files / {len(edges)} edges: {elapsed:.2f} s")
    assert elapsed < 5.0
