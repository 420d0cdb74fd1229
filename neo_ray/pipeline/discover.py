"""Find a repository's source files by extension, leaving out vendored and unreadable ones."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from neo_ray.errors import CloneTimeout, RepoTooLarge
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

# Build-output folder names that are also ordinary package names (pypa's `build`,
# coverage.py's `coverage`): skipped at the repository's top level only.
TOP_LEVEL_ONLY = frozenset({"build", "dist", "target", "coverage"})

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
    if any(_skipped_dir(part, depth) for depth, part in enumerate(parts[:-1])):
        return True
    return parts[-1].endswith(_GENERATED_SUFFIXES)


def _skipped_dir(name: str, depth: int) -> bool:
    """Vendored folders anywhere; build-output names only at the top, where tools put them
    (a package may well be called `build` or `coverage` deeper down)."""
    if name in TOP_LEVEL_ONLY:
        return depth == 0
    return name in SKIP_DIRS or name.endswith(".egg-info")


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
        rel = os.path.relpath(folder, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = [d for d in dirs if not _skipped_dir(d, depth)]
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in files:
            yield prefix + name


def load(root: Path, path: str, *, real_root: str, max_file_bytes: int) -> bytes | str:
    """A source file's bytes, or the reason it is skipped.

    Symlinks whose target lies inside the repository are read like ordinary files (their
    own path is what an import names, as the language's tooling sees it); those that lead
    out of it, or nowhere, are skipped.
    """
    # os functions on str paths, one lstat for an ordinary file: this runs for every file
    # of a repository, and pathlib's objects cost more than the reading itself.
    full = os.path.join(root, path)
    try:
        info: os.stat_result | None = os.lstat(full)
    except OSError:
        info = None  # the stat below says why
    if info is not None and stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(full)
        if os.path.commonpath([real_root, target]) != real_root:
            return "symlink leads out of the repository"
        if not os.path.isfile(target):
            return "broken symlink" if not os.path.exists(target) else "symlink to a folder"
        info = None
    if not _utf8_name(path):
        return "path is not valid UTF-8"
    try:
        info = info or os.stat(full)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever
            return "not a regular file"
        if info.st_size > max_file_bytes:
            return f"file too large ({info.st_size} bytes > {max_file_bytes})"
        # Read no more than the limit, whatever the file grew to since the stat; ask for the
        # size it had (a buffer of the limit's size for every file costs more than the read).
        want = info.st_size + 1
        with open(full, "rb") as handle:
            data = handle.read(want)
            if len(data) == want and want <= max_file_bytes:
                data += handle.read(max_file_bytes + 1 - want)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if len(data) > max_file_bytes:
        return f"file too large (> {max_file_bytes} bytes)"
    return _content_problem(data) or data


def _utf8_name(path: str) -> bool:
    """Whether a path (decoded by the OS with surrogate escapes) is valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str) -> str:
    """A path safe for JSON and UTF-8 output: undecodable bytes become U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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


def check_folder(folder: Path, *, timeout_s: float, max_mb: int, max_files: int) -> None:
    """Hold a folder read in place to a clone's limits: size, file count and time.

    The files counted are those discovery walks (vendored folders pruned, links not
    followed). Raises RepoTooLarge or CloneTimeout before a single file is parsed.
    """
    deadline = time.monotonic() + timeout_s
    total = 0
    for files, rel in enumerate(_walk(folder), start=1):
        with contextlib.suppress(OSError):
            total += (folder / rel).lstat().st_size
        if files > max_files:
            raise RepoTooLarge(f"the folder holds over {max_files} files (NEO_MAX_FILES)")
        if total > max_mb * 1024 * 1024:
            raise RepoTooLarge(f"the folder holds over {max_mb} MB (NEO_MAX_REPO_MB)")
        if files % 1000 == 0 and time.monotonic() > deadline:
            raise CloneTimeout(
                f"reading the folder took longer than {timeout_s:g} s (NEO_CLONE_TIMEOUT_S)"
            )
