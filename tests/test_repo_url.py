"""Repository URL validation: every accepted form, its canonical form, every refusal's reason."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from neo_ray.errors import InvalidRepoError
from neo_ray.repo_url import RepoRef, normalize_repo_url, validate_git_ref

HOSTS = ("github.com", "GitLab.com", "bitbucket.org")


def norm(raw: str, *, allow_local: bool = False) -> RepoRef:
    return normalize_repo_url(raw, allowed_hosts=HOSTS, allow_local=allow_local)


@pytest.mark.parametrize(
    "raw",
    [
        "github.com/Owner/repo",
        "https://github.com/Owner/repo",
        "https://github.com/Owner/repo.git",
        "https://GitHub.com/Owner/repo/",
        "https://github.com/Owner/repo.git/",
        "http://github.com/Owner/repo",
        "HTTPS://github.com/Owner/repo",
        "  https://github.com/Owner/repo  ",
        "github.com/Owner/repo.git",
    ],
)
def test_github_forms_share_one_canonical_url(raw: str):
    ref = norm(raw)
    assert ref == RepoRef(
        url="https://github.com/Owner/repo",
        clone_url="https://github.com/Owner/repo",
        is_local=False,
        host="github.com",
        path="Owner/repo",
    )
    assert (ref.owner, ref.name) == ("Owner", "repo")


def test_path_case_is_kept_host_case_is_not():
    assert norm("github.com/A/b").url != norm("github.com/a/b").url
    assert norm("GITHUB.COM/A/b").url == norm("github.com/A/b").url


def test_gitlab_subgroups_and_allowlist_case():
    ref = norm("https://gitlab.com/group/sub/deeper/project.git")
    assert ref.url == "https://gitlab.com/group/sub/deeper/project"
    assert (ref.owner, ref.name) == ("group/sub/deeper", "project")
    assert norm("bitbucket.org/team/my_repo-2.0").path == "team/my_repo-2.0"


def test_local_path_and_file_url_are_one_canonical_url(tmp_path: Path):
    repo = tmp_path / "my repo"
    repo.mkdir()
    link = tmp_path / "link"
    link.symlink_to(repo)
    forms = [str(repo), repo.as_uri(), f"file://localhost{repo}", str(link), f"{repo}/"]
    refs = {norm(f, allow_local=True) for f in forms}
    assert refs == {
        RepoRef(
            url=repo.resolve().as_uri(),
            clone_url=repo.resolve().as_uri(),
            is_local=True,
            host=None,
            path=str(repo.resolve()),
        )
    }
    assert "my%20repo" in refs.pop().url


def test_relative_local_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "r").mkdir()
    monkeypatch.chdir(tmp_path / "r")
    assert norm("./", allow_local=True).path == str(tmp_path.resolve() / "r")
    assert norm("../r", allow_local=True).path == str(tmp_path.resolve() / "r")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("github.com/o/" + "r" * 2100, r"too long \(2113 characters; at most 2048\)"),
        ("github.com/o/r\n", None),  # stripped: trailing newline is surrounding whitespace
        ("github.com/o/r x", "whitespace or control characters"),
        ("github.com/o/r\x00", "control characters"),
        ("github.com/o\t/r", "control characters"),
        ("/tmp/a\nb", "control characters"),
        ("ssh://git@github.com/o/r", "unsupported scheme 'ssh'"),
        ("git://github.com/o/r", "unsupported scheme 'git'"),
        ("ftp://github.com/o/r", "unsupported scheme 'ftp'"),
        ("git@github.com:o/r.git", r"SSH addresses \(user@host:path\)"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("ext::sh -c touch% /tmp/x", "whitespace"),
        ("ext::sh", "unsupported scheme 'ext'"),
        ("https://user:pass@github.com/o/r", "credentials"),
        ("https://ghp_token@github.com/o/r", "credentials"),
        ("https://evil.com/o/r", "host 'evil.com' is not allowed"),
        ("https://github.com.evil.com/o/r", "host 'github.com.evil.com' is not allowed"),
        ("evil.com/o/r", "host 'evil.com' is not allowed"),
        ("https://github.com:443/o/r", "ports are not accepted"),
        ("github.com:8080/o/r", "ports are not accepted"),
        ("https://github.com/o", "must name an owner and a repository"),
        ("https://github.com/", "must name an owner and a repository"),
        ("https://github.com/o/.git", "must name an owner and a repository"),
        ("https://github.com/o/../r", r"must not contain '\.' or '\.\.'"),
        ("https://gitlab.com/g/./r", r"must not contain '\.' or '\.\.'"),
        ("https://github.com/o/%2e%2e", "invalid path segment '%2e%2e'"),
        ("https://github.com/o//r", r"empty path segment"),
        ("https://github.com/o/r?tab=readme", "query"),
        ("https://github.com/o/r#readme", "fragment"),
        ("https://github.com/o/r?", "query"),
        ("https://github.com/o/r/tree/main", "unexpected extra path 'tree/main'"),
        ("https:///o/r", "no host"),
        ("/tmp", "local repositories are disabled"),
        ("file:///tmp", "local repositories are disabled"),
        ("./here", "local repositories are disabled"),
    ],
)
def test_refusals_say_why(raw: str, reason: str | None):
    if reason is None:
        assert norm(raw).url == "https://github.com/o/r"
        return
    with pytest.raises(InvalidRepoError, match=reason):
        norm(raw)


def test_credentials_are_never_echoed():
    with pytest.raises(InvalidRepoError) as caught:
        norm("https://alice:s3cret@github.com/o/r")
    assert "s3cret" not in str(caught.value)
    assert "alice" not in str(caught.value)


def test_host_refusal_names_the_allowlist():
    with pytest.raises(InvalidRepoError, match=r"allowed hosts: example\.org\)"):
        normalize_repo_url("github.com/o/r", allowed_hosts=["example.org"], allow_local=False)
    with pytest.raises(InvalidRepoError, match=r"allowed hosts: none"):
        normalize_repo_url("github.com/o/r", allowed_hosts=[], allow_local=False)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: str(p / "missing"), "does not exist"),
        (lambda p: (p / "missing").as_uri(), "does not exist"),
        (lambda p: str(p / "file.txt"), "is not a directory"),
        (lambda p: f"file://otherhost{p}", "must not name a host"),
        (lambda p: "file:relative/path", "absolute path"),
        (lambda p: f"{p.as_uri()}?x=1", "query"),
    ],
)
def test_local_refusals_say_why(tmp_path: Path, make, reason: str):
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(InvalidRepoError, match=reason):
        norm(make(tmp_path), allow_local=True)


@pytest.mark.parametrize("ref", [None, "main", "feature/x-1", "v1.2.3", "a" * 40, "release@2"])
def test_valid_git_refs_pass(ref: str | None):
    assert validate_git_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    ["", "-x", "--upload-pack=sh", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b",
     "x.lock", "/a", "a/", "a.", "a//b", "@", "a@{1}", ".hidden", "a/.b", "a" * 256, "a\x7f"],
)  # fmt: skip
def test_invalid_git_refs_are_refused(ref: str):
    with pytest.raises(InvalidRepoError, match="ref"):
        validate_git_ref(ref)


def test_module_is_pure_stdlib():
    """The cloud-mode Serve app imports this module: it must stay free of heavy imports."""
    source = Path(sys.modules[normalize_repo_url.__module__].__file__ or "").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"neo_ray", "__future__"}
