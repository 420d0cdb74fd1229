"""Java, Go and Rust imports → files: Java packages, Go modules, Rust `mod` and `use`."""

from __future__ import annotations

import functools
import re
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from neo_ray.models import Import
from neo_ray.pipeline.resolve_common import (
    ancestors,
    dirname,
    join,
    nearest,
    normalize,
    read_manifest,
)

# --- Java ------------------------------------------------------------------------------------


class JavaIndex:
    """Classes by the trailing folders of their path: `a.b.C` → `…/a/b/C.java`, whatever the
    source root (`src/main/java`, a module folder); packages likewise for `a.b.*`."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._classes: dict[str, list[str]] = defaultdict(list)
        self._packages: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            parts = path[: -len(".java")].split("/")
            for start in range(len(parts) - 1):
                self._classes["/".join(parts[start:])].append(path)
            for start in range(len(parts) - 1):
                self._packages["/".join(parts[start:-1])].append(path)

    def resolve(self, importer: str, imp: Import) -> list[str]:
        segments = imp.module.split(".")
        if imp.names == ("*",):
            found = self._class(importer, segments, exact=True)
            if found is None and imp.kind != "static":
                return self._package(importer, segments)
            return [found] if found else []
        found = self._class(importer, segments, exact=False)
        return [found] if found else []

    def _class(self, importer: str, segments: list[str], *, exact: bool) -> str | None:
        """The file of a class, or of the outer class of a nested class or static member."""
        for count in range(len(segments), 1, -1):
            hits = self._classes.get("/".join(segments[:count]))
            if hits:
                return nearest(importer, hits)
            if exact:
                return None
        return None

    def _package(self, importer: str, segments: list[str]) -> list[str]:
        hits = self._packages.get("/".join(segments), [])
        if not hits:
            return []
        folder = dirname(nearest(importer, hits))
        return sorted(h for h in hits if dirname(h) == folder)


# --- Go ----------------------------------------------------------------------------------


class GoIndex:
    """Import paths → package folders through each go.mod's module path; a package is every
    non-test .go file of its folder (`_test.go` files are nodes, but nothing imports them)."""

    def __init__(self, paths: Sequence[str], root: Path) -> None:
        self._packages: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            if not path.endswith("_test.go"):
                self._packages[dirname(path)].append(path)
        self._modules: dict[str, str] = {}
        for directory in sorted({a for p in paths for a in ancestors(dirname(p))}):
            module = _go_module_path(root / directory / "go.mod")
            if module is not None:
                self._modules.setdefault(module, directory)

    def resolve(self, imp: Import) -> list[str]:
        path = imp.module
        while True:
            directory = self._modules.get(path)
            if directory is not None:
                rest = imp.module[len(path) :].lstrip("/")
                return sorted(self._packages.get(join(directory, rest), []))
            if "/" not in path:
                return []
            path = path.rsplit("/", 1)[0]


def _go_module_path(go_mod: Path) -> str | None:
    text = read_manifest(go_mod)
    if text is None:
        return None
    match = re.search(r'^\s*module\s+"?([^\s"/]+[^\s"]*)"?', text, re.M)
    return match.group(1) if match else None


# --- Rust --------------------------------------------------------------------------------

_CRATE_ROOT_FOLDERS = ("bin", "tests", "examples", "benches")


class RustIndex:
    """Module paths → files from the layout rustc expects: a crate root (lib.rs, main.rs, a
    bin/tests/examples file) holds `mod x;` as `x.rs` or `x/mod.rs` beside it; `use` paths
    map to the file of their longest module prefix. Workspace crates are named from Cargo.toml.
    """

    def __init__(self, paths: Sequence[str], root: Path) -> None:
        self._paths = set(paths)
        self._crates = self._workspace_crates(root, paths)

    def resolve(self, importer: str, imp: Import) -> list[str]:
        if imp.kind == "mod":
            return self._module_file(self._children_dir(importer), imp.module.split("::"))
        if imp.kind == "mod_path":
            target = normalize(join(dirname(importer), imp.module))
            return [target] if target in self._paths else []
        if imp.kind == "extern_crate":
            crate = self._crates.get(imp.module)
            return [crate] if crate else []
        return self._use(importer, imp.module.split("::"))

    def _use(self, importer: str, segments: list[str]) -> list[str]:
        crate_root = self._crate_root(importer)
        here = self._module_path(importer, crate_root)
        head, rest = segments[0], segments[1:]
        if head == "crate":
            return self._longest(crate_root, rest)
        if head in ("self", "super"):
            while rest and rest[0] == "super":
                rest = rest[1:]
                here = here[:-1]
            return self._longest(crate_root, (here[:-1] if head == "super" else here) + rest)
        if head in self._crates:
            return self._longest(self._crates[head], rest)
        # A path naming a child module of this one (2018 "uniform paths"), or, in 2015
        # code, a module of the crate root.
        for base in (here, []):
            if self._module_file_under(crate_root, [*base, head]):
                return self._longest(crate_root, [*base, *segments])
        return []

    def _longest(self, crate_root: str, segments: list[str]) -> list[str]:
        """The file of the longest prefix of `segments` that is a module (the root at least)."""
        for count in range(len(segments), 0, -1):
            if found := self._module_file_under(crate_root, segments[:count]):
                return found
        return [crate_root]

    def _module_file_under(self, crate_root: str, segments: list[str]) -> list[str]:
        return self._module_file(dirname(crate_root), segments)

    def _module_file(self, directory: str, segments: list[str]) -> list[str]:
        if not segments or any(s in ("", "*", "self", "super", "crate") for s in segments):
            return []
        base = join(directory, "/".join(segments))
        for candidate in (base + ".rs", base + "/mod.rs"):
            if candidate in self._paths:
                return [candidate]
        return []

    def _is_crate_root(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        folder = dirname(path).rsplit("/", 1)[-1]
        return name in ("lib.rs", "main.rs", "build.rs") or folder in _CRATE_ROOT_FOLDERS

    def _children_dir(self, path: str) -> str:
        """Where `mod x;` in this file looks for x.rs: beside a crate root or mod.rs, else
        in the folder named after the file."""
        if self._is_crate_root(path) or path.endswith("/mod.rs") or path == "mod.rs":
            return dirname(path)
        return path[: -len(".rs")]

    @functools.lru_cache(maxsize=4096)  # noqa: B019 -- one index per build, freed with it
    def _crate_root(self, path: str) -> str:
        """The crate root file governing a file: itself, or lib.rs/main.rs in the nearest
        folder above that holds one."""
        if self._is_crate_root(path):
            return path
        for folder in ancestors(dirname(path)):
            for name in ("lib.rs", "main.rs"):
                if join(folder, name) in self._paths:
                    return join(folder, name)
        return path

    def _module_path(self, path: str, crate_root: str) -> list[str]:
        if path == crate_root:
            return []
        rel = path[len(dirname(crate_root)) :].lstrip("/")[: -len(".rs")].split("/")
        return rel[:-1] if rel[-1] == "mod" else rel

    def _workspace_crates(self, root: Path, paths: Sequence[str]) -> dict[str, str]:
        """Crate names (as `use` writes them) → their lib.rs, from the Cargo.toml files."""
        crates: dict[str, str] = {}
        for directory in sorted({a for p in paths for a in ancestors(dirname(p))}):
            manifest = root / directory / "Cargo.toml"
            text = read_manifest(manifest)
            try:
                data = tomllib.loads(text) if text is not None else None
            except tomllib.TOMLDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            package, lib = data.get("package") or {}, data.get("lib") or {}
            name = lib.get("name") or package.get("name")
            lib_path = normalize(join(directory, lib.get("path") or "src/lib.rs"))
            if isinstance(name, str) and lib_path in self._paths:
                crates.setdefault(name.replace("-", "_"), lib_path)
        return crates
