"""JavaScript and TypeScript imports → files: relative and `index` resolution, tsconfig `paths`."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path

from neo_ray.models import Import
from neo_ray.pipeline.resolve_common import ancestors, dirname, join, normalize, read_json

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
        self._dirs = {a for p in paths for a in ancestors(dirname(p))}
        self._configs: dict[str, TsConfig | None] = {}
        self._manifests: dict[str, dict[str, object] | None] = {}
        self._packages = self._workspace_packages()

    def resolve(self, importer: str, imp: Import) -> list[str]:
        spec = imp.module.split("?", 1)[0]
        if not spec or spec.startswith("/"):
            found = None
        elif spec in (".", "..") or spec.startswith(("./", "../")) or imp.kind == "reference":
            found = self._file(join(dirname(importer), spec), importer)
        elif spec.startswith("#"):
            found = self._subpath_import(importer, spec)
        else:
            found = self._bare(importer, spec)
        return [found] if found else []

    def _bare(self, importer: str, spec: str) -> str | None:
        config = self._config_for(dirname(importer))
        if config is not None:
            for target in config.candidates(spec):
                if (found := self._file(target, importer)) is not None:
                    return found
        name, sub = _package_name(spec)
        directory = self._packages.get(name)
        if directory is None:
            return None
        if sub:
            return self._file(join(directory, sub), importer) or self._file(
                join(directory, "src", sub), importer
            )
        return self._package_entry(directory, importer)

    def _subpath_import(self, importer: str, spec: str) -> str | None:
        """`#x` through the `imports` map of the nearest package.json (Node's package scope)."""
        for directory in ancestors(dirname(importer)):
            manifest = self._manifest(directory)
            if manifest is None:
                continue
            imports = manifest.get("imports")
            target = _subpath_target(imports, spec) if isinstance(imports, dict) else None
            return self._file(join(directory, target), importer) if target else None
        return None

    def _manifest(self, directory: str) -> dict[str, object] | None:
        if directory not in self._manifests:
            self._manifests[directory] = read_json(self._root / directory / "package.json")
        return self._manifests[directory]

    def _file(self, joined: str, importer: str) -> str | None:
        """A path written with or without an extension, or a folder with an index file."""
        base = normalize(joined)
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
                if join(base, "index" + extension) in self._paths:
                    return join(base, "index" + extension)
        return None

    def _config_for(self, directory: str) -> TsConfig | None:
        """The nearest tsconfig.json (or jsconfig.json) at or above a folder."""
        if directory in self._configs:
            return self._configs[directory]
        config = None
        for name in ("tsconfig.json", "jsconfig.json"):
            candidate = self._root / directory / name
            if candidate.is_file():
                config = TsConfig.load(self._root, join(directory, name))
                break
        if config is None and directory:
            config = self._config_for(dirname(directory))
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
            if (found := self._file(join(directory, entry), importer)) is not None:
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
        data = read_json(root / path)
        if data is None:
            return None
        directory = dirname(path)
        inherited = cls._parent(root, directory, data.get("extends"), depth)
        options = data.get("compilerOptions")
        options = options if isinstance(options, dict) else {}
        base_url, paths_base, paths = (
            (inherited.base_url, inherited.paths_base, inherited.paths)
            if inherited
            else (None, directory, {})
        )
        if isinstance(options.get("baseUrl"), str):
            base_url = normalize(join(directory, options["baseUrl"])) or ""
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
            target = normalize(join(directory, name))
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
                    found.append(join(self.paths_base, target.replace("*", star, 1)))
        if self.base_url is not None:
            found.append(join(self.base_url, spec))
        return found
