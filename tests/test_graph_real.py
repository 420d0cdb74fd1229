"""The default graph (lexical scan, tree-sitter where the scan is unsure) against the strict
full parse on real code nobody here wrote: the same edges, file for file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from neo_ray.models import RepoGraph
from neo_ray.pipeline.discover import candidates
from neo_ray.pipeline.graph import build_graph

pytestmark = pytest.mark.slow

TOOLS = Path(__file__).resolve().parents[1] / ".tools"


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def both_ways(folder: Path) -> tuple[RepoGraph, RepoGraph]:
    graphs = [
        build_graph(
            folder, repo="r", commit=None, tracked=None, max_file_bytes=10_000_000, strict=strict
        )
        for strict in (False, True)
    ]
    return graphs[0], graphs[1]


def assert_same_graph(folder: Path, default: RepoGraph, strict: RepoGraph, min_files: int) -> None:
    """Files the strict parse refuses for syntax errors stay nodes in the default graph (and
    may change how an import resolves: `acorn-walk` to its broken `.d.ts`); on the files
    tree-sitter reads without error, the two graphs are the same."""
    broken = {s.path for s in strict.skipped} - {s.path for s in default.skipped}
    assert all(s.reason.startswith("syntax error") for s in strict.skipped if s.path in broken)
    assert {n.path for n in default.nodes} == {n.path for n in strict.nodes} | broken
    assert len(strict.nodes) >= min_files
    valid = [s.path for s in candidates(folder, None) if s.path not in broken]
    without = build_graph(folder, repo="r", commit=None, tracked=valid, max_file_bytes=10_000_000)
    assert (without.nodes, without.edges) == (strict.nodes, strict.edges)


@pytest.mark.parametrize("package", ["ray", "pydantic"])
def test_python_packages(package: str) -> None:
    default, strict = both_ways(package_folder(package))
    assert strict.skipped == ()  # valid code: the two graphs are the same, nodes included
    assert default == strict
    assert len(default.edges) > 100


def test_javascript_and_typescript_from_node_modules() -> None:
    """dependency-cruiser's installed dependencies (installed by `make peers-node`): some
    1,300 JavaScript and TypeScript files, bundles and minified code among them."""
    folder = TOOLS / "node" / "node_modules"
    if not folder.is_dir():
        pytest.skip("run `make peers-node` first")
    default, strict = both_ways(folder)
    assert_same_graph(folder, default, strict, min_files=1000)
    assert len(strict.edges) > 1000


def test_typescript_rxjs() -> None:
    folder = TOOLS / "npm-peers" / "node_modules" / "rxjs"
    if not folder.is_dir():
        pytest.skip("rxjs is installed by the dependency-cruiser peer test")
    default, strict = both_ways(folder)
    assert_same_graph(folder, default, strict, min_files=200)
