"""Our import graphs against the peers' on real code nobody here wrote: grimp on a large
installed Python package, dependency-cruiser 16 on JS/TS projects from the npm registry."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import grimp
import pytest

from neo_ray.pipeline.graph import build_graph

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = REPO_ROOT / ".tools"
DEPCRUISE = TOOLS / "node" / "node_modules" / ".bin" / "depcruise"
# The Python package compared with grimp: thousands of modules, installed with the project.
PYTHON_PACKAGE = "ray"

Edges = set[tuple[str, str]]


def agreement(ours: Edges, theirs: Edges) -> tuple[float, float]:
    """(precision, recall) of our edges against the peer's."""
    both = len(ours & theirs)
    return both / max(1, len(ours)), both / max(1, len(theirs))


def report(name: str, ours: Edges, theirs: Edges) -> tuple[float, float]:
    precision, recall = agreement(ours, theirs)
    print(
        f"\n{name}: ours {len(ours)} edges, peer {len(theirs)}, "
        f"precision {precision:.4f}, recall {recall:.4f}"
    )
    for edge in sorted(ours - theirs)[:5]:
        print("  only ours:", edge)
    for edge in sorted(theirs - ours)[:5]:
        print("  only the peer's:", edge)
    return precision, recall


# --- grimp ---------------------------------------------------------------------------------


def grimp_edges(package: str, folder: Path) -> tuple[set[str], Edges]:
    """grimp's modules and imports, mapped to files relative to the package folder."""
    graph = grimp.build_graph(package, cache_dir=None)

    def file_of(module: str) -> str:
        base = folder.joinpath(*module.split(".")[1:])
        if (base / "__init__.py").is_file():
            return (base / "__init__.py").relative_to(folder).as_posix()
        return base.with_suffix(".py").relative_to(folder).as_posix()

    files = {m: file_of(m) for m in graph.modules}
    edges = {
        (files[m], files[d])
        for m in graph.modules
        for d in graph.find_modules_directly_imported_by(m)
    }
    return set(files.values()), edges


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
def test_python_edges_agree_with_grimp(strict: bool) -> None:
    spec = importlib.util.find_spec(PYTHON_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{PYTHON_PACKAGE} is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    graph = build_graph(
        folder,
        repo=PYTHON_PACKAGE,
        commit=None,
        tracked=None,
        max_file_bytes=10_000_000,
        strict=strict,
    )
    assert graph.skipped == ()  # real, valid code: nothing is refused
    peer_files, peer_edges = grimp_edges(PYTHON_PACKAGE, folder)
    # grimp sees the package's own modules (.py under packages) only: compare on those files.
    common = peer_files & {n.path for n in graph.nodes}
    assert len(common) >= 0.99 * len(peer_files) >= 2000
    ours = {(a, b) for a, b in graph.edges if a in common and b in common}
    theirs = {(a, b) for a, b in peer_edges if a in common and b in common and a != b}
    precision, recall = report(f"grimp on {PYTHON_PACKAGE} ({len(common)} files)", ours, theirs)
    assert precision >= 0.97
    assert recall >= 0.97


# --- dependency-cruiser ----------------------------------------------------------------------

# (npm package, version, the folders compared, where it is installed under .tools)
NPM_PROJECTS = {
    "rxjs": ("rxjs", "7.8.2", ["src"], TOOLS / "npm-peers"),  # TypeScript sources
    "dependency-cruiser": ("dependency-cruiser", None, ["src", "types", "bin", "configs"], None),
}


def npm_install(prefix: Path, *packages: str) -> None:
    """Install npm packages into a folder under .tools once; later runs reuse it."""
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--silent",
            *packages,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def ensure_depcruise() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for dependency-cruiser")
    if not DEPCRUISE.exists():
        npm_install(TOOLS / "node", "dependency-cruiser@16", "typescript@5")


def project_folder(name: str) -> Path:
    package, version, _, prefix = NPM_PROJECTS[name]
    if prefix is None:  # dependency-cruiser ships its own sources
        return TOOLS / "node" / "node_modules" / package
    folder = prefix / "node_modules" / package
    if not folder.exists():
        npm_install(prefix, f"{package}@{version}")
    return folder


def depcruise_edges(root: Path, folders: list[str]) -> tuple[set[str], Edges]:
    """dependency-cruiser's modules and resolved local dependencies, as the notes advise:
    a nodenext tsconfig including the folders, and type-only imports counted."""
    config = root / "tsconfig.depcruise.json"
    options = {"module": "nodenext", "moduleResolution": "nodenext", "allowJs": True}
    config.write_text(json.dumps({"compilerOptions": options, "include": folders}))
    flags = ["--no-config", "--ts-config", config.name, "--ts-pre-compilation-deps"]
    run = subprocess.run(
        [str(DEPCRUISE), *folders, *flags, "--output-type", "json"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = json.loads(run.stdout)["modules"]
    edges = {
        (m["source"], d["resolved"])
        for m in modules
        for d in m["dependencies"]
        if not d["couldNotResolve"] and not d["coreModule"]
    }
    return {m["source"] for m in modules}, edges


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
@pytest.mark.parametrize("name", sorted(NPM_PROJECTS))
def test_script_edges_agree_with_dependency_cruiser(
    name: str, strict: bool, tmp_path: Path
) -> None:
    ensure_depcruise()
    root = tmp_path / name
    shutil.copytree(project_folder(name), root, ignore=shutil.ignore_patterns("node_modules"))
    folders = NPM_PROJECTS[name][2]
    peer_files, peer_edges = depcruise_edges(root, folders)
    graph = build_graph(
        root, repo=name, commit=None, tracked=None, max_file_bytes=10_000_000, strict=strict
    )
    assert [s for s in graph.skipped if s.path.split("/", 1)[0] in folders] == []
    nodes = {n.path for n in graph.nodes if n.path.split("/", 1)[0] in folders}
    common = nodes & peer_files
    assert len(common) >= 0.9 * len(nodes) >= 150
    ours = {(a, b) for a, b in graph.edges if a in common and b in common}
    theirs = {(a, b) for a, b in peer_edges if a in common and b in common and a != b}
    precision, recall = report(f"dependency-cruiser on {name} ({len(common)} files)", ours, theirs)
    assert precision >= 0.95
    assert recall >= 0.95
