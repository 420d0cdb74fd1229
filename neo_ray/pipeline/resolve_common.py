"""Path and manifest helpers shared by the language indexes of `resolve`."""

from __future__ import annotations

import json
import posixpath
import re
import stat
from collections.abc import Iterable
from pathlib import Path


def dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def ancestors(directory: str) -> list[str]:
    """A folder and the folders above it, nearest first, ending with "" (the root)."""
    found = []
    while directory:
        found.append(directory)
        directory = dirname(directory)
    return [*found, ""]


def normalize(path: str) -> str | None:
    """A joined path made canonical; None when it climbs out of the repository."""
    norm = posixpath.normpath(path)
    if norm == ".":
        return ""
    return None if norm.startswith("../") or norm == ".." or norm.startswith("/") else norm


def common_prefix(a: str, b: str) -> int:
    """How many leading folders two paths share."""
    count = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        count += 1
    return count


def nearest(importer: str, candidates: Iterable[str]) -> str:
    """The candidate sharing the longest folder prefix with the importer (then by name)."""
    return min(candidates, key=lambda c: (-common_prefix(importer, c), c))


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


def read_json(path: Path) -> dict[str, object] | None:
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
