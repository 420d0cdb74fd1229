"""Python imports → repository files: package roots, `src/` layouts, namespace packages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from neo_ray.models import Import
from neo_ray.pipeline.resolve_common import common_prefix, dirname


class PythonIndex:
    """Dotted module names → files, under every folder that can stand on `sys.path`.

    A file's own root is its first ancestor that is not a package (no `__init__.py`): the
    folder Python must have on its path to import it (a `src/` layout, one of several
    packages, a scripts folder). Absolute imports look there first, then in every folder
    that holds a top-level package, then at the repository's top, where namespace packages
    (PEP 420) make `tests.helpers` and `src.pkg` importable too.
    """

    _ABOVE = "/"  # the root above the repository, when its top folder is itself a package

    def __init__(self, paths: Sequence[str], root: Path) -> None:
        inits = [p for p in paths if p.rsplit("/", 1)[-1] in ("__init__.py", "__init__.pyi")]
        self._packages = {dirname(p) for p in inits}
        # An installed package (or a repository that is one package): its modules are named
        # from the folder above, under the folder's own name.
        self._top = root.resolve().name if "" in self._packages else ""
        self._global_roots = {dirname(p) for p in self._packages if p} - self._packages
        self._global_roots |= {self._ABOVE} if self._top else {""}
        self._own_root: dict[str, str] = {}
        self._modules: dict[str, dict[str, str]] = defaultdict(dict)
        self._names: dict[str, str] = {}
        self._search: dict[str, tuple[str, ...]] = {}
        self._memo: dict[tuple[object, Import], list[str]] = {}
        for path in sorted(paths, key=lambda p: p.endswith(".pyi")):  # .py wins over .pyi
            self._add(path)

    def _root_of(self, directory: str) -> str:
        """The first ancestor of a folder (itself included) that is not a package."""
        while directory in self._packages:
            if not directory:
                return self._ABOVE
            directory = dirname(directory)
        return directory

    def _add(self, path: str) -> None:
        directory = dirname(path)
        own = self._own_root[path] = self._root_of(directory)
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        parts = directory.split("/") if directory else []
        parts += [] if stem == "__init__" else [stem]
        for root in self._roots_above(directory) | {own}:
            if root == self._ABOVE:
                name = ".".join([self._top, *parts])
            else:
                name = ".".join(parts[root.count("/") + 1 if root else 0 :])
            if name:
                self._modules[root].setdefault(name, path)
                if root == own:
                    self._names.setdefault(path, name)

    def _roots_above(self, directory: str) -> set[str]:
        """The package roots a folder lies under (namespace packages make it importable)."""
        return {
            r
            for r in self._global_roots
            if r in ("", self._ABOVE) or r == directory or directory.startswith(r + "/")
        }

    def resolve(self, importer: str, imp: Import) -> list[str]:
        # What an import names depends on the importer's folder alone (its roots, its
        # package), and most imports recur across a folder's or a package's files.
        key = (dirname(importer) if imp.level else self._search_roots(importer), imp)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._resolve(importer, imp)
        return found

    def _resolve(self, importer: str, imp: Import) -> list[str]:
        if imp.level:
            base = self._relative_base(importer, imp)
            roots: Sequence[str] = (self._own_root[importer],)
        else:
            base, roots = imp.module, self._search_roots(importer)
        if base is None:
            return []
        if imp.kind == "import":
            targets = [base]
        elif imp.names:
            targets = [f"{base}.{name}" if base else name for name in imp.names]
        else:  # from x import *
            found = self._find(base, roots, parent=False)
            return [found] if found else []
        hits = {self._find(target, roots, parent=True) for target in targets}
        return sorted(h for h in hits if h)

    def _relative_base(self, importer: str, imp: Import) -> str | None:
        """The absolute name that a relative import's dots and module stand for."""
        name = self._names.get(importer, "")
        package = name.split(".") if name else []
        if not importer.endswith(("__init__.py", "__init__.pyi")):
            package = package[:-1]
        if imp.level - 1 > len(package):
            return None  # climbs above the top package
        package = package[: len(package) - (imp.level - 1)]
        return ".".join([*package, *([imp.module] if imp.module else [])])

    def _find(self, name: str, roots: Sequence[str], *, parent: bool) -> str | None:
        """grimp's rule: the module `name`; else, since the last part may name an object
        (`from a.b import func`, `import a.b.func`), the module that is its parent."""
        if not name:
            return None
        for root in roots:
            modules = self._modules.get(root)
            if modules is None:
                continue
            if name in modules:
                return modules[name]
            if parent and "." in name and (hit := modules.get(name.rsplit(".", 1)[0])):
                return hit
        return None

    def _search_roots(self, importer: str) -> tuple[str, ...]:
        """The importer's own root first, then the package roots nearest to it, the top last."""
        directory = dirname(importer)
        cached = self._search.get(directory)
        if cached is None:
            own = self._own_root[importer]
            others = sorted(
                (r for r in self._global_roots if r != own),
                key=lambda r: (r in ("", self._ABOVE), -common_prefix(directory, r), r),
            )
            cached = self._search[directory] = (own, *others)
        return cached
