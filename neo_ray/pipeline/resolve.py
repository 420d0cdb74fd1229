"""Map each import to the files of the same repository it names; external imports map to none."""

from __future__ import annotations

import functools
import json
import posixpath
import re
import stat
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from neo_ray.models import Import, Language, SourceFile


class Resolver:
    """Resolves the imports of one repository's files to repository paths.

    Each language's index is built on first use, from the file list (and, for JS/TS, Go and
    Rust, the tsconfig.json, package.json, go.mod and Cargo.toml files beside the sources).
    """

    def __init__(self, files: Sequence[SourceFile], root: Path) -> None:
        self._root = root
        self._by_language: dict[Language, list[str]] = defaultdict(list)
        for source in files:
            self._by_language[source.language].append(source.path)

    def resolve(self, file: SourceFile, imp: Import) -> list[str]:
        """Repository paths the import names (sorted); empty for an external import."""
        language = file.language
        if language is Language.PYTHON:
            return self._python.resolve(file.path, imp)
        if language in (Language.JAVASCRIPT, Language.TYPESCRIPT):
            return self._scripts.resolve(file.path, imp)
        if language is Language.JAVA:
            return self._java.resolve(file.path, imp)
        if language is Language.GO:
            return self._go.resolve(imp)
        return self._rust.resolve(file.path, imp)

    @functools.cached_property
    def _python(self) -> PythonIndex:
        return PythonIndex(self._by_language[Language.PYTHON], self._root)

    @functools.cached_property
    def _scripts(self) -> ScriptIndex:
        paths = self._by_language[Language.JAVASCRIPT] + self._by_language[Language.TYPESCRIPT]
        return ScriptIndex(paths, self._root)

    @functools.cached_property
    def _java(self) -> JavaIndex:
        return JavaIndex(self._by_language[Language.JAVA])

    @functools.cached_property
    def _go(self) -> GoIndex:
        return GoIndex(self._by_language[Language.GO], self._root)

    @functools.cached_property
    def _rust(self) -> RustIndex:
        return RustIndex(self._by_language[Language.RUST], self._root)


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _ancestors(directory: str) -> list[str]:
    """A folder and the folders above it, nearest first, ending with "" (the root)."""
    found = []
    while directory:
        found.append(directory)
        directory = _dirname(directory)
    return [*found, ""]


def _normalize(path: str) -> str | None:
    """A joined path made canonical; None when it climbs out of the repository."""
    norm = posixpath.normpath(path)
    if norm == ".":
        return ""
    return None if norm.startswith("../") or norm == ".." or norm.startswith("/") else norm


def _common_prefix(a: str, b: str) -> int:
    """How many leading folders two paths share."""
    count = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        count += 1
    return count


def _nearest(importer: str, candidates: Iterable[str]) -> str:
    """The candidate sharing the longest folder prefix with the importer (then by name)."""
    return min(candidates, key=lambda c: (-_common_prefix(importer, c), c))


# --- Python --------------------------------------------------------------------------------


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
        self._packages = {_dirname(p) for p in inits}
        # An installed package (or a repository that is one package): its modules are named
        # from the folder above, under the folder's own name.
        self._top = root.resolve().name if "" in self._packages else ""
        self._global_roots = {_dirname(p) for p in self._packages if p} - self._packages
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
            directory = _dirname(directory)
        return directory

    def _add(self, path: str) -> None:
        directory = _dirname(path)
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
        key = (_dirname(importer) if imp.level else self._search_roots(importer), imp)
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
        directory = _dirname(importer)
        cached = self._search.get(directory)
        if cached is None:
            own = self._own_root[importer]
            others = sorted(
                (r for r in self._global_roots if r != own),
                key=lambda r: (r in ("", self._ABOVE), -_common_prefix(directory, r), r),
            )
            cached = self._search[directory] = (own, *others)
        return cached


# --- JavaScript and TypeScript -------------------------------------------------------------

_SCRIPT_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs")
_JS_FIRST = (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".d.ts", ".mts", ".cts")
# TypeScript's ESM convention: an import names the emitted .js file of a .ts source.
_EMITTED = {
    ".js": (".ts", ".tsx", ".d.ts"),
    ".jsx": (".tsx",),
    ".mjs": (".mts", ".d.mts"),
    ".cjs": (".cts", ".d.cts"),
}


class ScriptIndex:
    """Relative paths (with extension and `index` lookup, `.js` naming `.ts`), tsconfig
    `paths`/`baseUrl`, package.json subpath imports (`#x`), and the repository's own
    workspace packages (package.json `name`)."""

    def __init__(self, paths: Sequence[str], root: Path) -> None:
        self._root = root
        self._paths = set(paths)
        self._dirs = {a for p in paths for a in _ancestors(_dirname(p))}
        self._configs: dict[str, TsConfig | None] = {}
        self._manifests: dict[str, dict[str, object] | None] = {}
        self._packages = self._workspace_packages()

    def resolve(self, importer: str, imp: Import) -> list[str]:
        spec = imp.module.split("?", 1)[0]
        if not spec or spec.startswith("/"):
            found = None
        elif spec in (".", "..") or spec.startswith(("./", "../")) or imp.kind == "reference":
            found = self._file(_join(_dirname(importer), spec), importer)
        elif spec.startswith("#"):
            found = self._subpath_import(importer, spec)
        else:
            found = self._bare(importer, spec)
        return [found] if found else []

    def _bare(self, importer: str, spec: str) -> str | None:
        config = self._config_for(_dirname(importer))
        if config is not None:
            for target in config.candidates(spec):
                if (found := self._file(target, importer)) is not None:
                    return found
        name, sub = _package_name(spec)
        directory = self._packages.get(name)
        if directory is None:
            return None
        if sub:
            return self._file(_join(directory, sub), importer) or self._file(
                _join(directory, "src", sub), importer
            )
        return self._package_entry(directory, importer)

    def _subpath_import(self, importer: str, spec: str) -> str | None:
        """`#x` through the `imports` map of the nearest package.json (Node's package scope)."""
        for directory in _ancestors(_dirname(importer)):
            manifest = self._manifest(directory)
            if manifest is None:
                continue
            imports = manifest.get("imports")
            target = _subpath_target(imports, spec) if isinstance(imports, dict) else None
            return self._file(_join(directory, target), importer) if target else None
        return None

    def _manifest(self, directory: str) -> dict[str, object] | None:
        if directory not in self._manifests:
            self._manifests[directory] = _read_json(self._root / directory / "package.json")
        return self._manifests[directory]

    def _file(self, joined: str, importer: str) -> str | None:
        """A path written with or without an extension, or a folder with an index file."""
        base = _normalize(joined)
        if base is None:
            return None
        from_js = importer.endswith((".js", ".jsx", ".mjs", ".cjs"))
        if from_js and base in self._paths:
            return base
        # TypeScript reads `./x.js` as its source `./x.ts` first, then as written.
        stem, ext = posixpath.splitext(base)
        for emitted in _EMITTED.get(ext, ()):
            if stem + emitted in self._paths:
                return stem + emitted
        if base in self._paths:
            return base
        extensions = _JS_FIRST if from_js else _SCRIPT_EXTENSIONS
        for extension in extensions:
            if base + extension in self._paths:
                return base + extension
        if base in self._dirs:
            for extension in extensions:
                if _join(base, "index" + extension) in self._paths:
                    return _join(base, "index" + extension)
        return None

    def _config_for(self, directory: str) -> TsConfig | None:
        """The nearest tsconfig.json (or jsconfig.json) at or above a folder."""
        if directory in self._configs:
            return self._configs[directory]
        config = None
        for name in ("tsconfig.json", "jsconfig.json"):
            candidate = self._root / directory / name
            if candidate.is_file():
                config = TsConfig.load(self._root, _join(directory, name))
                break
        if config is None and directory:
            config = self._config_for(_dirname(directory))
        self._configs[directory] = config
        return config

    def _workspace_packages(self) -> dict[str, str]:
        """Package names → folders, from the package.json files above the sources."""
        packages: dict[str, str] = {}
        for directory in sorted(self._dirs):
            manifest = self._manifest(directory)
            name = manifest.get("name") if manifest else None
            if isinstance(name, str) and name not in packages:
                packages[name] = directory
        return packages

    def _package_entry(self, directory: str, importer: str) -> str | None:
        manifest = self._manifest(directory) or {}
        entries = [manifest.get(k) for k in ("source", "types", "typings", "module", "main")]
        for entry in [e for e in entries if isinstance(e, str)] + ["index", "src/index"]:
            if (found := self._file(_join(directory, entry), importer)) is not None:
                return found
        return None


# Which target of a conditional export a source graph follows, most wanted first.
_CONDITIONS = ("source", "import", "node", "require", "default")


def _subpath_target(imports: dict[str, object], spec: str) -> str | None:
    """The target of `#spec` in a package.json `imports` map; conditional targets pick by
    `_CONDITIONS`."""
    match = _match_pattern(imports, spec)
    return _condition(imports[match[0]], match[1]) if match else None


def _match_pattern(patterns: Iterable[str], spec: str) -> tuple[str, str] | None:
    """The key matching a specifier (exactly, else the `*` pattern with the longest
    prefix, as TypeScript and Node choose), and what its `*` stands for."""
    best: tuple[str, str] | None = None
    best_prefix = -1
    for pattern in patterns:
        if pattern == spec:
            return pattern, ""
        prefix, star, suffix = pattern.partition("*")
        fits = len(spec) >= len(prefix) + len(suffix)
        fits = fits and spec.startswith(prefix) and spec.endswith(suffix)
        if star and fits and len(prefix) > best_prefix:
            best = (pattern, spec[len(prefix) : len(spec) - len(suffix)])
            best_prefix = len(prefix)
    return best


def _condition(value: object, star: str) -> str | None:
    if isinstance(value, str):
        return value.replace("*", star)
    if isinstance(value, dict):
        for name in _CONDITIONS:
            if name in value and (found := _condition(value[name], star)):
                return found
    if isinstance(value, list):
        for item in value:
            if found := _condition(item, star):
                return found
    return None


def _package_name(spec: str) -> tuple[str, str]:
    """`@scope/name/sub/path` → ("@scope/name", "sub/path"); `name/sub` likewise."""
    parts = spec.split("/")
    count = 2 if spec.startswith("@") else 1
    return "/".join(parts[:count]), "/".join(parts[count:])


class TsConfig:
    """The module-resolution options of one tsconfig.json, `extends` chains merged."""

    def __init__(self, base_url: str | None, paths: dict[str, list[str]], paths_base: str):
        self.base_url = base_url
        self.paths = paths
        self.paths_base = paths_base

    @classmethod
    def load(cls, root: Path, path: str, depth: int = 0) -> TsConfig | None:
        data = _read_json(root / path)
        if data is None:
            return None
        directory = _dirname(path)
        inherited = cls._parent(root, directory, data.get("extends"), depth)
        options = data.get("compilerOptions")
        options = options if isinstance(options, dict) else {}
        base_url, paths_base, paths = (
            (inherited.base_url, inherited.paths_base, inherited.paths)
            if inherited
            else (None, directory, {})
        )
        if isinstance(options.get("baseUrl"), str):
            base_url = _normalize(_join(directory, options["baseUrl"])) or ""
            paths_base = base_url
        if isinstance(options.get("paths"), dict):
            paths = {k: v for k, v in options["paths"].items() if isinstance(v, list)}
            paths_base = base_url if base_url is not None else directory
        return cls(base_url, paths, paths_base)

    @classmethod
    def _parent(cls, root: Path, directory: str, extends: object, depth: int) -> TsConfig | None:
        """The config named by `extends` when it is a file of the repository (not a package)."""
        names = extends if isinstance(extends, list) else [extends]
        parent = None
        for name in names:
            if not isinstance(name, str) or not name.startswith(".") or depth > 8:
                continue
            target = _normalize(_join(directory, name))
            if target is None:
                continue
            if not target.endswith(".json"):
                target += ".json"
            parent = cls.load(root, target, depth + 1) or parent
        return parent

    def candidates(self, spec: str) -> list[str]:
        """Repository paths a bare specifier may stand for, in TypeScript's order: the
        `paths` pattern that matches exactly or with the longest prefix, then `baseUrl`."""
        found: list[str] = []
        match = _match_pattern(self.paths, spec)
        if match is not None:
            pattern, star = match
            for target in self.paths[pattern]:
                if isinstance(target, str):
                    found.append(_join(self.paths_base, target.replace("*", star, 1)))
        if self.base_url is not None:
            found.append(_join(self.base_url, spec))
        return found


MAX_MANIFEST_BYTES = 1_000_000


def read_manifest(path: Path) -> str | None:
    """A manifest's text (go.mod, package.json, tsconfig, Cargo.toml), or None.

    A hostile repository controls these files: one that is a symlink (it could lead out of the
    repository, or to /dev/zero), not a regular file, too large or not UTF-8 is ignored.
    """
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
            return None
        with path.open("rb") as handle:
            return handle.read(MAX_MANIFEST_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


_JSON_COMMENTS = re.compile(r'("(?:[^"\\]|\\.)*")|//[^\n]*|/\*.*?\*/', re.S)
_TRAILING_COMMAS = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[}\]])', re.S)


def _read_json(path: Path) -> dict[str, object] | None:
    """A JSON object from a file that may hold comments and trailing commas (tsconfig)."""
    text = read_manifest(path)
    if text is None:
        return None
    text = _JSON_COMMENTS.sub(lambda m: m.group(1) or "", text)
    text = _TRAILING_COMMAS.sub(lambda m: m.group(1) or m.group(2), text)
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


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
                return _nearest(importer, hits)
            if exact:
                return None
        return None

    def _package(self, importer: str, segments: list[str]) -> list[str]:
        hits = self._packages.get("/".join(segments), [])
        if not hits:
            return []
        folder = _dirname(_nearest(importer, hits))
        return sorted(h for h in hits if _dirname(h) == folder)


# --- Go ----------------------------------------------------------------------------------


class GoIndex:
    """Import paths → package folders through each go.mod's module path; a package is every
    non-test .go file of its folder (`_test.go` files are nodes, but nothing imports them)."""

    def __init__(self, paths: Sequence[str], root: Path) -> None:
        self._packages: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            if not path.endswith("_test.go"):
                self._packages[_dirname(path)].append(path)
        self._modules: dict[str, str] = {}
        for directory in sorted({a for p in paths for a in _ancestors(_dirname(p))}):
            module = _go_module_path(root / directory / "go.mod")
            if module is not None:
                self._modules.setdefault(module, directory)

    def resolve(self, imp: Import) -> list[str]:
        path = imp.module
        while True:
            directory = self._modules.get(path)
            if directory is not None:
                rest = imp.module[len(path) :].lstrip("/")
                return sorted(self._packages.get(_join(directory, rest), []))
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
            target = _normalize(_join(_dirname(importer), imp.module))
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
        return self._module_file(_dirname(crate_root), segments)

    def _module_file(self, directory: str, segments: list[str]) -> list[str]:
        if not segments or any(s in ("", "*", "self", "super", "crate") for s in segments):
            return []
        base = _join(directory, "/".join(segments))
        for candidate in (base + ".rs", base + "/mod.rs"):
            if candidate in self._paths:
                return [candidate]
        return []

    def _is_crate_root(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        folder = _dirname(path).rsplit("/", 1)[-1]
        return name in ("lib.rs", "main.rs", "build.rs") or folder in _CRATE_ROOT_FOLDERS

    def _children_dir(self, path: str) -> str:
        """Where `mod x;` in this file looks for x.rs: beside a crate root or mod.rs, else
        in the folder named after the file."""
        if self._is_crate_root(path) or path.endswith("/mod.rs") or path == "mod.rs":
            return _dirname(path)
        return path[: -len(".rs")]

    @functools.lru_cache(maxsize=4096)  # noqa: B019 -- one index per build, freed with it
    def _crate_root(self, path: str) -> str:
        """The crate root file governing a file: itself, or lib.rs/main.rs in the nearest
        folder above that holds one."""
        if self._is_crate_root(path):
            return path
        for folder in _ancestors(_dirname(path)):
            for name in ("lib.rs", "main.rs"):
                if _join(folder, name) in self._paths:
                    return _join(folder, name)
        return path

    def _module_path(self, path: str, crate_root: str) -> list[str]:
        if path == crate_root:
            return []
        rel = path[len(_dirname(crate_root)) :].lstrip("/")[: -len(".rs")].split("/")
        return rel[:-1] if rel[-1] == "mod" else rel

    def _workspace_crates(self, root: Path, paths: Sequence[str]) -> dict[str, str]:
        """Crate names (as `use` writes them) → their lib.rs, from the Cargo.toml files."""
        crates: dict[str, str] = {}
        for directory in sorted({a for p in paths for a in _ancestors(_dirname(p))}):
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
            lib_path = _normalize(_join(directory, lib.get("path") or "src/lib.rs"))
            if isinstance(name, str) and lib_path in self._paths:
                crates.setdefault(name.replace("-", "_"), lib_path)
        return crates
