"""The package layout holds: imports point one way (docs/architecture.md, Layers).

Every module of `neo_ray` is read with `ast`, its imports (top-level and inside functions)
collected, and each checked against the layer rules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neo_ray"

# layer → imports it must never make (prefixes of module names)
FORBIDDEN = {
    "neo_ray.pipeline": ("ray", "neo_ray.control", "neo_ray.edge", "neo_ray.system", "neo_ray.cli"),
    "neo_ray.control": ("neo_ray.edge", "neo_ray.pipeline", "neo_ray.cli"),
    "neo_ray.edge": ("neo_ray.control", "neo_ray.cli"),
    "neo_ray.stores": (
        "neo_ray.control",
        "neo_ray.edge",
        "neo_ray.pipeline",
        "neo_ray.system",
        "neo_ray.cli",
        "ray",
    ),
}
SHARED = ("config", "errors", "models", "names", "repo_url", "timeutil")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, wherever in the file the import stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _hits(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for layer, forbidden in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                bad += [
                    f"{module} → {imp}" for imp in sorted(imports_of(path)) if _hits(imp, forbidden)
                ]
        if module.removeprefix("neo_ray.") in SHARED:
            layers = ("neo_ray.control", "neo_ray.edge", "neo_ray.pipeline", "neo_ray.stores")
            bad += [f"{module} → {imp}" for imp in sorted(imports_of(path)) if _hits(imp, layers)]
    return bad


def test_the_four_packages_exist() -> None:
    for layer in ("control", "edge", "pipeline", "stores"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_imports_point_one_way() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("neo_ray.pipeline.x", "import ray\n", "neo_ray.pipeline.x → ray"),
        ("neo_ray.pipeline.x", "def f():\n    from neo_ray.edge import worker\n", "neo_ray.edge"),
        ("neo_ray.control.x", "from neo_ray.edge.bridge import B\n", "neo_ray.edge.bridge"),
        ("neo_ray.stores.x", "from ..control import app\n", "neo_ray.control"),
    ],
)
def test_the_checker_sees_a_forbidden_edge(
    module: str, source: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk itself would catch a bad import, top-level, nested or relative."""
    root = tmp_path / "neo_ray"
    parts = module.split(".")[1:]
    target = root.joinpath(*parts).with_suffix(".py")
    target.parent.mkdir(parents=True)
    target.write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert any(expected in v for v in violations()), violations()
