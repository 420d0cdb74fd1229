"""Fetch one commit of a repository into a temporary folder, safely and within limits.

The only module that drives git (through GitPython). A checkout is shallow (depth 1), of one
branch, tag or commit, without submodules, hooks or LFS, and never prompts. A time limit and
a size limit are enforced while git runs: past either, git's whole process group is killed.
The temporary folder is removed when the `checkout` context ends, whatever happened.

Steps: fetch the objects only (`clone --no-checkout`, or `init` + `fetch <sha>` for a commit),
check that git's data plus the files the checkout would write fit the size limit (sizes read
from the tree, before writing a file), then write the files (`reset --hard`, which runs no
checkout hook), and list what git tracks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from git.cmd import Git
from git.exc import GitCommandNotFound

from neo_ray.errors import CloneError, CloneTimeout, RepoNotFound, RepoTooLarge
from neo_ray.repo_url import RepoRef, validate_git_ref

_MB = 1024 * 1024
# How often a running git is checked against the limits; communicate() returns as soon
# as git exits, so this only bounds how late a limit is noticed.
_POLL_S = 0.1
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_GITLINK_MODE = "160000"

# Never prompt: fail instead of waiting for a password nobody will type. GIT_ASKPASS set
# but empty stops git from falling back to SSH_ASKPASS or core.askPass.
_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "",
    "GCM_INTERACTIVE": "never",
    "GIT_LFS_SKIP_SMUDGE": "1",
    # The host's own git configuration (filters, sshCommand, hooks paths) must not act on a
    # repository someone else chose: only the settings this module passes apply.
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


@dataclass(frozen=True, slots=True)
class Checkout:
    """A checked-out commit: its folder, sha (None for an empty repository) and tracked files.

    `tracked` holds the paths `git ls-files` lists, repository-relative POSIX, without
    submodule entries (gitlinks).
    """

    root: Path
    commit: str | None
    tracked: list[str]


@dataclass(frozen=True, slots=True)
class _Limits:
    """The limits one checkout runs under, and what its git may talk to."""

    url: str
    git_ref: str | None
    deadline: float
    timeout_s: float
    max_bytes: int
    scheme: str


@contextmanager
def checkout(
    ref: RepoRef,
    *,
    git_ref: str | None = None,
    timeout_s: float,
    max_mb: int,
    max_files: int | None = None,
    tmp_root: Path | None = None,
) -> Iterator[Checkout]:
    """Check out `git_ref` (default branch when None) of `ref` into a temporary folder.

    Raises CloneTimeout past `timeout_s` (for the whole checkout), RepoTooLarge when git's
    data plus the checked-out files exceed `max_mb`, CloneError for anything else git
    refuses. The folder, created under `tmp_root` (default: the system's), is removed on exit.
    """
    validate_git_ref(git_ref)
    limits = _Limits(
        url=ref.url,
        git_ref=git_ref,
        deadline=time.monotonic() + timeout_s,
        timeout_s=timeout_s,
        max_bytes=max_mb * _MB,
        scheme=_scheme(ref),
    )
    # The owner's pid in the name: a worker killed outright (no `finally`) leaves a folder
    # that `sweep_orphans` knows to remove.
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=tmp_root))
    try:
        root = tmp / "repo"
        commit = _fetch(ref, git_ref, root, limits)
        tracked: list[str] = []
        if commit is not None:
            _check_size(root, commit, limits)
            _git(["reset", "-q", "--hard", commit], cwd=root, limits=limits)
            tracked = _tracked(root, limits)
            if max_files is not None and len(tracked) > max_files:
                raise RepoTooLarge(
                    f"{ref.url} tracks {len(tracked)} files; the limit is {max_files} "
                    "(NEO_MAX_FILES)"
                )
        yield Checkout(root=root, commit=commit, tracked=tracked)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_TMP_PREFIX = "neo-ray-clone-"


def sweep_orphans(tmp_root: Path | None = None) -> list[Path]:
    """Remove the clone folders of processes that died without removing them; return them.

    A folder whose owner still runs is left alone (a pid reused since is also left alone:
    the safe side).
    """
    from neo_ray.procs import pid_alive

    root = Path(tmp_root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{_TMP_PREFIX}*-*"):
        pid_text = folder.name.removeprefix(_TMP_PREFIX).split("-", 1)[0]
        if folder.is_dir() and pid_text.isdigit() and not pid_alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def resolve_commit(ref: RepoRef, git_ref: str | None = None, *, timeout_s: float) -> str | None:
    """The commit `git_ref` (default: HEAD) names on the remote now, without cloning.

    A full sha is returned as given; None when the repository is empty. CloneError when the
    ref does not exist.
    """
    validate_git_ref(git_ref)
    if git_ref is not None and _SHA.match(git_ref):
        return git_ref
    limits = _Limits(ref.url, git_ref, time.monotonic() + timeout_s, timeout_s, 0, _scheme(ref))
    pattern = git_ref or "HEAD"
    # With a pattern, ls-remote lists a tag's peeled commit only when asked for by name.
    args = ["ls-remote", "--", ref.clone_url, pattern, f"{pattern}^{{}}"]
    out = _git(args, cwd=Path.cwd(), limits=limits)
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    for name in (
        f"refs/tags/{pattern}^{{}}",  # an annotated tag, peeled to its commit
        f"refs/heads/{pattern}",
        f"refs/tags/{pattern}",
        pattern,
    ):
        if name in refs:
            return refs[name]
    if git_ref is None:
        return None
    raise RepoNotFound(f"ref {git_ref!r} not found in {ref.url}")


def _scheme(ref: RepoRef) -> str:
    return ref.clone_url.split("://", 1)[0].lower()


def _fetch(ref: RepoRef, git_ref: str | None, root: Path, limits: _Limits) -> str | None:
    """Bring the objects of one commit into `root` without writing files; return its sha."""
    parent = root.parent
    if git_ref is not None and _SHA.match(git_ref):
        # `clone --branch` takes only branch and tag names; a commit is fetched by its id.
        _git(["init", "-q", "--template=", str(root)], cwd=parent, limits=limits)
        fetch = ["fetch", "-q", "--depth", "1", "--no-tags", "--no-recurse-submodules"]
        _git([*fetch, "--", ref.clone_url, git_ref], cwd=root, limits=limits, watch=root)
        return git_ref
    clone = ["clone", "-q", "--no-checkout", "--template=", "--depth", "1", "--single-branch"]
    clone += ["--no-tags", "--no-recurse-submodules"]
    if git_ref is not None:
        clone += ["--branch", git_ref]
    _git([*clone, "--", ref.clone_url, str(root)], cwd=parent, limits=limits, watch=root)
    rc, out, _ = _run(["rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=root, limits=limits)
    # rev-parse fails only when HEAD has no commit: the repository is empty.
    return out.strip() if rc == 0 else None


def _check_size(root: Path, commit: str, limits: _Limits) -> None:
    """Refuse a checkout whose git data plus files to write exceed the limit, before writing."""
    listing = _git(["ls-tree", "-r", "-l", "-z", commit], cwd=root, limits=limits)
    files = 0
    for entry in filter(None, listing.split("\0")):
        size = entry.split("\t", 1)[0].split()[-1]
        files += int(size) if size.isdigit() else 0  # "-" for gitlinks
    fetched = _dir_bytes(root)
    if fetched + files > limits.max_bytes:
        raise RepoTooLarge(
            f"{limits.url} needs {(fetched + files) / _MB:.1f} MB (git data "
            f"{fetched / _MB:.1f} MB + files {files / _MB:.1f} MB); the limit is "
            f"{limits.max_bytes // _MB} MB"
        )


def _tracked(root: Path, limits: _Limits) -> list[str]:
    """Paths git tracks at the checkout, without submodule gitlinks."""
    listing = _git(["ls-files", "-z", "--stage"], cwd=root, limits=limits)
    paths = []
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        if meta.split()[0] != _GITLINK_MODE:
            paths.append(path)
    return paths


def _config_flags(scheme: str) -> list[str]:
    """`-c` settings that override any user or system configuration for one git command."""
    settings = {
        "core.hooksPath": "/dev/null",  # no hook runs, whatever the templates hold
        "core.fsmonitor": "false",  # a configured fsmonitor is a command git would run
        "core.autocrlf": "false",  # files exactly as committed
        "filter.lfs.smudge": "",  # an empty filter command means no filter
        "filter.lfs.clean": "",
        "filter.lfs.process": "",
        "filter.lfs.required": "false",
        "submodule.recurse": "false",
        "fetch.recurseSubmodules": "false",
        "advice.detachedHead": "false",
        # An allowlisted host must not send the clone elsewhere (a redirect to another host).
        "http.followRedirects": "false",
        # Only the transport the validated URL names; never ext::, ssh or others.
        "protocol.allow": "never",
        f"protocol.{scheme}.allow": "always",
    }
    flags: list[str] = []
    for key, value in settings.items():
        flags += ["-c", f"{key}={value}"]
    return flags


def _git(args: list[str], *, cwd: Path, limits: _Limits, watch: Path | None = None) -> str:
    """Run git within the limits; return stdout, or raise CloneError summarizing stderr."""
    rc, out, err = _run(args, cwd=cwd, limits=limits, watch=watch)
    if rc != 0:
        raise _translate(args[0], err, limits)
    return out


def _run(
    args: list[str], *, cwd: Path, limits: _Limits, watch: Path | None = None
) -> tuple[int, str, str]:
    """Run git in its own process group; kill the group past the deadline or size limit."""
    argv = ["git", *_config_flags(limits.scheme), *args]
    try:
        handle = Git(str(cwd)).execute(argv, as_process=True, env=_ENV, start_new_session=True)
    except GitCommandNotFound as exc:
        raise CloneError("git is not installed on this machine") from exc
    popen = handle.proc
    if popen is None:
        raise CloneError(f"git {args[0]} did not start")
    while True:
        try:
            out, err = popen.communicate(timeout=_POLL_S)
            return popen.returncode, _text(out), _text(err)
        except subprocess.TimeoutExpired:
            _enforce(popen, limits, watch)


def _enforce(popen: subprocess.Popen[bytes], limits: _Limits, watch: Path | None) -> None:
    """Kill git (and its children) when the checkout is past its time or size limit."""
    if time.monotonic() > limits.deadline:
        _kill(popen)
        raise CloneTimeout(f"cloning {limits.url} took longer than {limits.timeout_s:g} s")
    if watch is not None and limits.max_bytes and _dir_bytes(watch) > limits.max_bytes:
        _kill(popen)
        raise RepoTooLarge(
            f"{limits.url} is larger than the limit of {limits.max_bytes // _MB} MB "
            "(stopped while fetching)"
        )


def _kill(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL git's process group (git, remote helpers, index-pack) and reap it."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(popen.pid, signal.SIGKILL)
    popen.communicate()


def _dir_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue  # git renames temporary files while we count
    return total


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", "surrogateescape")


# Any user:password@ or token@ git prints back inside a URL.
_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@")


def _translate(command: str, stderr: str, limits: _Limits) -> CloneError:
    """A CloneError whose message says what git objected to, without credentials."""
    text = _CREDENTIALS.sub(r"\1***@", stderr)
    lowered = text.lower()
    url = limits.url
    missing = ("remote branch", "not our ref", "couldn't find remote ref")
    if limits.git_ref is not None and any(m in lowered for m in missing):
        return RepoNotFound(f"ref {limits.git_ref!r} not found in {url}")
    if "does not appear to be a git repository" in lowered:
        return RepoNotFound(f"{url} is not a git repository")
    if "terminal prompts disabled" in lowered or "authentication failed" in lowered:
        return RepoNotFound(f"{url} was not found or needs credentials (private repository?)")
    return CloneError(f"git {command} failed for {url}: {_summary(text)}")


def _summary(text: str, limit: int = 400) -> str:
    """git's error lines (fatal:, error:), or its last line, shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))] or lines[-1:]
    summary = " | ".join(errors) or "no error output"
    return summary if len(summary) <= limit else summary[: limit - 1] + "…"
