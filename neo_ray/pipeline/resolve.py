"""Map each import to the files of the same repository it names; external imports map to none.

One index per language family, each in its own module: resolve_python (package roots),
resolve_scripts (JavaScript and TypeScript), resolve_jvm_go_rust (Java, Go, Rust); the path
and manifest helpers they share live in resolve_common.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from neo_ray.models import Import, Language, SourceFile
from neo_ray.pipeline.resolve_jvm_go_rust import GoIndex, JavaIndex, RustIndex
from neo_ray.pipeline.resolve_python import PythonIndex
from neo_ray.pipeline.resolve_scripts import ScriptIndex


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
