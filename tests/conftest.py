"""Shared fixtures: real git repositories built in tmp_path, and settings pointed at tmp dirs."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from neo_ray import raycluster

# Every Ray process of the session (the shared ray.init, the CLI commands the tests run) uses
# a token of the session's own, as neo-ray does in production: nothing is read from ~/.ray.
_RAY_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="neo-ray-test-token-"))
atexit.register(shutil.rmtree, _RAY_TOKEN_DIR, True)
raycluster.use_auth_token(_RAY_TOKEN_DIR)

# Real Redis and PostgreSQL servers, one each per test session.
pytest_plugins = ["services_fixtures", "ray_fixtures"]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "neo-ray tests",
    "GIT_AUTHOR_EMAIL": "tests@neo-ray.invalid",
    "GIT_COMMITTER_NAME": "neo-ray tests",
    "GIT_COMMITTER_EMAIL": "tests@neo-ray.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a fixed identity; return stdout."""
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write `files` (repo-relative POSIX path → text or bytes) under `root`."""
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")


def init_repo(root: Path, files: Mapping[str, str | bytes], message: str = "initial") -> str:
    """Create a git repository at `root` holding `files`, committed; return the commit sha."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    write_tree(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


MakeRepo = Callable[..., Path]


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """Factory: make_repo({"a.py": "import b"}, name="r") → path of a committed git repo."""
    counter = iter(range(1_000_000))

    def factory(files: Mapping[str, str | bytes], name: str | None = None) -> Path:
        root = tmp_path / (name or f"repo{next(counter)}")
        init_repo(root, files)
        return root

    return factory
