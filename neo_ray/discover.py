"""Find a repository's source files by extension, leaving out vendored and unreadable ones."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from neo_ray.models import Language, SkippedFile, SourceFile

EXTENSIONS: dict[str, Language] = {
    ".py": Language.PYTHON,
    ".pyi": Language.PYTHON,
    ".js": Language.JAVASCRIPT,
    ".mjs": Language.JAVASCRIPT,
    ".cjs": Language.JAVASCRIPT,
    ".jsx": Language.JAVASCRIPT,
    ".ts": Language.TYPESCRIPT,
    ".tsx": Language.TYPESCRIPT,
    ".mts": Language.TYPESCRIPT,
    ".cts": Language.TYPESCRIPT,
    ".java": Language.JAVA,
    ".go": Language.GO,
    ".rs": Language.RUST,
}

# Folders of third-party or generated code: their files are not the repository's own
# structure, so they are left out silently (not reported as skipped).
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "bower_components",
        "jspm_packages",
        "vendor",
        "third_party",
        "third-party",
        "dist",
        "build",
        "target",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".eggs",
        "site-packages",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".next",
        ".nuxt",
        ".svelte-kit",
        ".gradle",
        ".idea",
        "coverage",
    }
)

# Minified bundles are generated artefacts, not source.
_GENERATED_SUFFIXES = (".min.js", ".min.mjs", ".bundle.js")


def language_of(path: str) -> Language | None:
    """The language a repository path's extension names, or None."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    if dot <= 0:
        return None
    return EXTENSIONS.get(name[dot:])


def is_excluded(path: str) -> bool:
    """True when a path lies in a vendored or generated folder, or is a minified bundle."""
    parts = path.split("/")
    if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in parts[:-1]):
        return True
    return parts[-1].endswith(_GENERATED_SUFFIXES)


def candidates(root: Path, tracked: Iterable[str] | None) -> list[SourceFile]:
    """Source files by path alone (no reads): git's tracked list, or a walk of the folder."""
    paths = _walk(root) if tracked is None else (PurePosixPath(p).as_posix() for p in tracked)
    found: dict[str, SourceFile] = {}
    for path in paths:
        language = language_of(path)
        if language is not None and not is_excluded(path):
            found[path] = SourceFile(path, language)
    return [found[p] for p in sorted(found)]


def _walk(root: Path) -> Iterator[str]:
    """Repository-relative POSIX paths under root; vendored folders pruned, links not followed."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in files:
            yield prefix + name


def load(root: Path, path: str, *, real_root: str, max_file_bytes: int) -> bytes | str:
    """A source file's bytes, or the reason it is skipped.

    Symlinks whose target lies inside the repository are read like ordinary files (their
    own path is what an import names, as the language's tooling sees it); those that lead
    out of it, or nowhere, are skipped.
    """
    full = root / path
    if full.is_symlink():
        target = os.path.realpath(full)
        if os.path.commonpath([real_root, target]) != real_root:
            return "symlink leads out of the repository"
        if not os.path.isfile(target):
            return "broken symlink" if not os.path.exists(target) else "symlink to a folder"
    try:
        size = full.stat().st_size
        if size > max_file_bytes:
            return f"file too large ({size} bytes > {max_file_bytes})"
        data = full.read_bytes()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return _content_problem(data) or data


def _content_problem(data: bytes) -> str | None:
    """Why bytes cannot be source text (binary, not UTF-8), or None."""
    if b"\x00" in data:
        return "binary file (NUL bytes)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    return None


def discover(
    root: Path, tracked: Iterable[str] | None, *, max_file_bytes: int
) -> tuple[list[SourceFile], list[SkippedFile]]:
    """The readable source files of a repository, and those skipped with their reasons.

    `tracked` is git's list of tracked files (repository-relative POSIX paths), or None to
    walk the folder (an installed package). Files in vendored or generated folders are left
    out silently; files too large, binary, not UTF-8, unreadable, or symlinks leading out of
    the repository are reported in the skipped list.
    """
    real_root = os.path.realpath(root)
    files: list[SourceFile] = []
    skipped: list[SkippedFile] = []
    for source in candidates(root, tracked):
        result = load(root, source.path, real_root=real_root, max_file_bytes=max_file_bytes)
        if isinstance(result, str):
            skipped.append(SkippedFile(source.path, result))
        else:
            files.append(source)
    return files, skipped
