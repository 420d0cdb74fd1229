"""Clone: real git repositories in tmp_path, real git processes, every limit and cleanup."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neo_ray.errors import CloneError, CloneTimeout, InvalidRepoError, RepoTooLarge
from neo_ray.pipeline.clone import checkout, resolve_commit
from neo_ray.repo_url import RepoRef, normalize_repo_url
from tests.conftest import MakeRepo, git

FILES = {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "X = 1\n"}


def local(path: Path | str) -> RepoRef:
    return normalize_repo_url(str(path), allowed_hosts=(), allow_local=True)


@pytest.fixture
def tmp_root(tmp_path: Path) -> Iterator[Path]:
    """A folder the checkouts create their temporary folders in; must be empty afterwards."""
    root = tmp_path / "clones"
    root.mkdir()
    yield root
    assert list(root.iterdir()) == [], "a checkout left its temporary folder behind"


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def test_local_path_and_file_url_give_the_same_checkout(make_repo: MakeRepo, tmp_root: Path):
    repo = make_repo(FILES)
    sha = git(repo, "rev-parse", "HEAD")
    for ref in (local(repo), local(repo.as_uri())):
        with checkout(ref, timeout_s=30, max_mb=10, tmp_root=tmp_root) as co:
            assert co.commit == sha
            assert sorted(co.tracked) == sorted(FILES)
            assert (co.root / "pkg/a.py").read_text() == "import pkg.b\n"
            assert co.root.parent.parent == tmp_root
        assert not co.root.exists()


def test_clone_is_shallow_single_branch_and_ignores_the_working_tree(
    make_repo: MakeRepo, tmp_root: Path
):
    repo = make_repo(FILES)
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "other.py").write_text("")
    commit_all(repo, "other branch")
    git(repo, "checkout", "-q", "main")
    (repo / "pkg/d.py").write_text("")
    commit = commit_all(repo, "second")
    (repo / "pkg/d.py").write_text("changed after the commit\n")
    (repo / "pkg/untracked.py").write_text("")

    with checkout(local(repo), timeout_s=30, max_mb=10, tmp_root=tmp_root) as co:
        assert co.commit == commit
        assert git(co.root, "rev-parse", "--is-shallow-repository") == "true"
        assert git(co.root, "rev-list", "--count", "HEAD") == "1"
        remotes = git(co.root, "for-each-ref", "--format=%(refname)", "refs/remotes").split()
        assert [r for r in remotes if not r.endswith("/HEAD")] == ["refs/remotes/origin/main"]
        assert (co.root / "pkg/d.py").read_text() == ""  # the commit, not the working tree
        assert sorted(co.tracked) == sorted([*FILES, "pkg/d.py"])


def test_branch_tag_and_sha_refs(make_repo: MakeRepo, tmp_root: Path):
    repo = make_repo(FILES)
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "feature.py").write_text("")
    feature = commit_all(repo, "feature")
    git(repo, "checkout", "-q", "main")
    (repo / "later.py").write_text("")
    commit_all(repo, "later on main")

    expected = {
        "feature": (feature, {*FILES, "feature.py"}),
        "v1": (first, set(FILES)),
        first: (first, set(FILES)),  # a full sha is fetched by id
    }
    for git_ref, (sha, files) in expected.items():
        with checkout(
            local(repo), git_ref=git_ref, timeout_s=30, max_mb=10, tmp_root=tmp_root
        ) as co:
            assert co.commit == sha, git_ref
            assert set(co.tracked) == files, git_ref
        assert resolve_commit(local(repo), git_ref, timeout_s=30) == sha


@pytest.mark.parametrize("missing", ["no-such-branch", "0" * 40])
def test_missing_ref_is_a_clear_error(make_repo: MakeRepo, tmp_root: Path, missing: str):
    repo = make_repo(FILES)
    with (
        pytest.raises(CloneError, match=f"ref '{missing}' not found in file://"),
        checkout(local(repo), git_ref=missing, timeout_s=30, max_mb=10, tmp_root=tmp_root),
    ):
        pytest.fail("checkout of a missing ref must not yield")
    if missing != "0" * 40:
        with pytest.raises(CloneError, match=f"ref '{missing}' not found"):
            resolve_commit(local(repo), missing, timeout_s=30)


def test_a_ref_git_could_misread_is_refused_before_git_runs(make_repo: MakeRepo, tmp_root: Path):
    repo = make_repo(FILES)
    for bad in ("--upload-pack=touch /tmp/x", "a..b", "x y", ""):
        with (
            pytest.raises(InvalidRepoError, match="ref"),
            checkout(local(repo), git_ref=bad, timeout_s=30, max_mb=10, tmp_root=tmp_root),
        ):
            pass


def test_empty_repository_gives_no_commit_and_no_files(tmp_path: Path, tmp_root: Path):
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    with checkout(local(repo), timeout_s=30, max_mb=10, tmp_root=tmp_root) as co:
        assert co.commit is None
        assert co.tracked == []
    assert resolve_commit(local(repo), timeout_s=30) is None


def test_not_a_repository_and_the_temp_folder_goes(tmp_path: Path, tmp_root: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with (
        pytest.raises(CloneError, match="is not a git repository"),
        checkout(local(plain), timeout_s=30, max_mb=10, tmp_root=tmp_root),
    ):
        pass


def test_submodule_gitlinks_are_not_tracked_files(make_repo: MakeRepo, tmp_root: Path):
    repo = make_repo(FILES)
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendor/sub")
    (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = vendor/sub\n\turl = ./x\n')
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-q", "-m", "submodule")
    with checkout(local(repo), timeout_s=30, max_mb=10, tmp_root=tmp_root) as co:
        assert sorted(co.tracked) == sorted([*FILES, ".gitmodules"])
        assert not any((co.root / "vendor/sub").iterdir())  # not fetched either


def test_folder_is_removed_when_the_body_raises(make_repo: MakeRepo, tmp_root: Path):
    repo = make_repo(FILES)
    seen: list[Path] = []
    with (
        pytest.raises(KeyError),
        checkout(local(repo), timeout_s=30, max_mb=10, tmp_root=tmp_root) as co,
    ):
        seen.append(co.root)
        assert co.root.is_dir()
        raise KeyError("boom")
    assert seen and not seen[0].exists()


def test_hooks_and_lfs_filters_never_run(
    make_repo: MakeRepo, tmp_path: Path, tmp_root: Path, monkeypatch: pytest.MonkeyPatch
):
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    hooks = tmp_path / "hooks"
    template = tmp_path / "template"
    for label, folder in (("global", hooks), ("template", template / "hooks")):
        folder.mkdir(parents=True)
        for hook in ("post-checkout", "reference-transaction", "post-merge", "post-index-change"):
            script = folder / hook
            script.write_text(f"#!/bin/sh\ntouch '{marker_dir}/{label}-{hook}'\n")
            script.chmod(0o755)
    config = tmp_path / "gitconfig"
    smudge = f"sh -c 'touch {marker_dir}/lfs-smudge; cat'"
    config.write_text(
        f"[core]\n\thooksPath = {hooks}\n[init]\n\ttemplateDir = {template}\n"
        f'[filter "lfs"]\n\tsmudge = "{smudge}"\n\trequired = true\n'
    )
    repo = make_repo({**FILES, ".gitattributes": "*.bin filter=lfs\n", "data.bin": "payload\n"})
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_TEMPLATE_DIR", str(template))

    # Control: a plain clone under this configuration does run hooks and the filter.
    subprocess.run(["git", "clone", "-q", repo.as_uri(), str(tmp_path / "plain")], check=True)
    assert {p.name for p in marker_dir.iterdir()} >= {"global-post-checkout", "lfs-smudge"}
    for marker in marker_dir.iterdir():
        marker.unlink()

    with checkout(local(repo), timeout_s=30, max_mb=10, tmp_root=tmp_root) as co:
        assert (co.root / "data.bin").read_text() == "payload\n"
        assert not (co.root / ".git/hooks").exists()  # no template copied
    assert list(marker_dir.iterdir()) == []


def test_size_limit_counts_git_data(make_repo: MakeRepo, tmp_root: Path):
    repo = make_repo({**FILES, "blob.bin": os.urandom(3 * 1024 * 1024)})  # incompressible
    with (
        pytest.raises(RepoTooLarge, match="limit"),
        checkout(local(repo), timeout_s=30, max_mb=1, tmp_root=tmp_root),
    ):
        pytest.fail("a too-large repository must not yield")


def test_size_limit_stops_git_while_it_fetches(make_repo: MakeRepo, tmp_root: Path):
    # git needs seconds to pack 40 MB of random bytes; the limit is noticed long before.
    repo = make_repo({"big.bin": os.urandom(40 * 1024 * 1024)})
    with (
        pytest.raises(RepoTooLarge, match="limit of 2 MB \\(stopped while fetching\\)"),
        checkout(local(repo), timeout_s=60, max_mb=2, tmp_root=tmp_root),
    ):
        pass


def test_size_limit_counts_files_before_writing_them(make_repo: MakeRepo, tmp_root: Path):
    # 3 MB of zeros compress to a few KB: only the checkout itself would be too large.
    repo = make_repo({**FILES, "zeros.bin": bytes(3 * 1024 * 1024)})
    with (
        pytest.raises(RepoTooLarge, match=r"files 3\.0 MB\); the limit is 2 MB"),
        checkout(local(repo), timeout_s=30, max_mb=2, tmp_root=tmp_root),
    ):
        pass
    with checkout(local(repo), timeout_s=30, max_mb=4, tmp_root=tmp_root) as co:
        assert (co.root / "zeros.bin").stat().st_size == 3 * 1024 * 1024


class SilentServer:
    """A TCP listener on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def http_ref(port: int, credentials: str = "") -> RepoRef:
    """A RepoRef built by hand: normalize_repo_url would refuse loopback and ports."""
    url = f"http://{credentials}127.0.0.1:{port}/owner/repo.git"
    return RepoRef(
        url="https://example.test/owner/repo",
        clone_url=url,
        is_local=False,
        host="127.0.0.1",
        path="owner/repo",
    )


def test_timeout_kills_git_and_its_helpers(silent_server: SilentServer, tmp_root: Path):
    started = time.monotonic()
    with (
        pytest.raises(CloneTimeout, match=r"took longer than 1 s"),
        checkout(http_ref(silent_server.port), timeout_s=1, max_mb=10, tmp_root=tmp_root),
    ):
        pass
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0  # it waited out the limit (and did not hang: the test's timeout)
    # git-remote-http held the connection; killed with its group, its socket closes.
    assert silent_server.conns, "git never connected"
    for conn in silent_server.conns:
        conn.settimeout(5)
        while conn.recv(65536):
            pass  # drain the request git sent; EOF proves the helper is dead


def test_errors_never_echo_credentials(tmp_root: Path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again below: connection refused
    with (
        pytest.raises(CloneError) as caught,
        checkout(http_ref(port, "user:hunter2@"), timeout_s=30, max_mb=10, tmp_root=tmp_root),
    ):
        pass
    assert "hunter2" not in str(caught.value)
    assert "example.test/owner/repo" in str(caught.value)
