"""Hostile repository URLs and local paths: every one refused with a reason, none let through.

A table of known SSRF and traversal tricks, property tests over generated URLs and paths,
the local-repository root, the limits on folders read in place, and settings errors that
never echo a secret.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neo_ray.config import load_settings
from neo_ray.errors import CloneTimeout, ConfigError, InvalidRepoError, RepoTooLarge
from neo_ray.pipeline import discover
from neo_ray.repo_url import RepoRef, normalize_repo_url

HOSTS = ("github.com", "gitlab.com", "bitbucket.org")


def remote(raw: str) -> RepoRef:
    return normalize_repo_url(raw, allowed_hosts=HOSTS, allow_local=False)


def local(raw: str, root: Path) -> RepoRef:
    return normalize_repo_url(raw, allowed_hosts=HOSTS, allow_local=True, local_root=root)


# (URL, a word the refusal must contain)
TRICKS = [
    ("https://[github.com/a/b", "malformed"),
    ("https://]github.com[/a/b", "malformed"),
    ("https://[::1]/a/b", "IP address literals"),
    ("https://[::ffff:127.0.0.1]/a/b", "IP address literals"),
    ("https://2130706433/a/b", "IP address literals"),  # decimal 127.0.0.1
    ("https://017700000001/a/b", "IP address literals"),  # octal
    ("https://0x7f000001/a/b", "IP address literals"),  # hex
    ("https://0x7f.0.0.1/a/b", "IP address literals"),
    ("https://127.1/a/b", "IP address literals"),
    ("https://169.254.169.254/latest/meta-data", "IP address literals"),
    ("https://gіthub.com/a/b", "ASCII"),  # Cyrillic і
    ("https://xn--gthub-n4a.com/a/b", "not allowed"),  # its punycode: just another host
    ("https://github.com%2e/a/b", "percent-encoded"),
    ("https://github%2ecom/a/b", "percent-encoded"),
    ("https://user:pw@github.com/a/b", "credentials"),
    ("https://github.com@evil.example/a/b", "credentials"),
    ("https://evil.example#@github.com/a/b", "query"),
    ("https://github.com:22/a/b", "ports"),
    ("https://github.com:/a/b", "ports"),
    ("https://github.com/a/%2e%2e", "invalid path segment"),
    ("https://github.com/a/../../etc", "'..'"),
    ("https://github.com/%2e%2e/%2e%2e/etc/passwd", "invalid path segment"),
    ("https://github.com/a/b?x=1", "query"),
    ("git://github.com/a/b", "scheme"),
    ("ssh://git@github.com/a/b", "scheme"),
    ("ext::sh -c touch% /tmp/pwned", "whitespace"),
    ("ext::sh%20-c%20id", "scheme"),
    ("git@github.com:a/b", "SSH"),
    ("javascript:alert(1)", "scheme"),
    ("file:///etc", "disabled"),
    ("https://github.com./a/b/c", "host/owner/repo"),
    ("https://localhost/a/b", "not allowed"),
    ("https://github.com.evil.example/a/b", "not allowed"),
    ("https://evil.example/github.com/a/b", "not allowed"),
]


@pytest.mark.parametrize(("url", "reason"), TRICKS, ids=[t[0][:40] for t in TRICKS])
def test_known_tricks_are_refused_with_their_reason(url: str, reason: str) -> None:
    with pytest.raises(InvalidRepoError, match=None) as caught:
        remote(url)
    assert reason in str(caught.value), str(caught.value)
    assert "pw" not in str(caught.value)  # credentials are never echoed


_segment = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..") and not s.endswith(".git") and s.strip(".")
)


@given(host=st.sampled_from(HOSTS), owner=_segment, name=_segment)
def test_every_well_formed_url_is_accepted_and_canonical(host: str, owner: str, name: str) -> None:
    ref = remote(f"https://{host.upper()}/{owner}/{name}.git/")
    assert ref.url == f"https://{host}/{owner}/{name}"
    assert remote(ref.url) == ref  # the canonical form is a fixed point


@given(st.text(max_size=200))
@settings(max_examples=400)
def test_any_text_is_a_remote_on_an_allowed_host_or_a_reasoned_refusal(text: str) -> None:
    try:
        ref = remote(text)
    except InvalidRepoError as exc:
        assert str(exc)
        return
    assert ref.host in HOSTS and ref.url == f"https://{ref.host}/{ref.path}"
    assert not ref.is_local


@given(
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["https", "http", "HTTPS", "file", "ftp", "git+ssh"]),
        st.sampled_from(["", "u@", "u:p@", "@"]),
        st.sampled_from([*HOSTS, "127.0.0.1", "[::1]", "0x7f.1", "evil.example", "gіthub.com"]),
        st.text(string.printable, max_size=40),
    )
)
@settings(max_examples=400)
def test_generated_urls_never_reach_a_host_off_the_list(url: str) -> None:
    try:
        ref = remote(url)
    except InvalidRepoError:
        return
    assert ref.host in HOSTS and "@" not in ref.url


# --------------------------------------------------------------------------- local paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inside = tmp_path / "root"
    (inside / "repo").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (inside / "escape").symlink_to(tmp_path / "outside")
    return inside


def test_a_folder_under_the_root_is_accepted(root: Path) -> None:
    ref = local(str(root / "repo"), root)
    assert ref.is_local and ref.path == str((root / "repo").resolve())
    assert local((root / "repo").as_uri(), root) == ref


@pytest.mark.parametrize(
    "raw",
    ["~", "~/", "./", ".", "..", "../../etc", "repo", "~root/x"],
)
def test_home_relative_and_cwd_paths_are_refused(raw: str, root: Path) -> None:
    with pytest.raises(InvalidRepoError, match=r"absolute|scheme|host"):
        local(raw, root)


def test_outside_the_root_says_nothing_about_existence(root: Path, tmp_path: Path) -> None:
    errors = set()
    for raw in (
        "/etc",
        "/nonexistent-neo-ray-path",
        str(tmp_path / "outside"),
        str(tmp_path / "missing"),
        str(root / "escape"),  # a symlink inside the root that leads out
        str(root / "repo" / ".." / ".." / "outside"),
        "file:///etc",
        "file://localhost/etc",
        "file:///%2e%2e/etc",
    ):
        with pytest.raises(InvalidRepoError) as caught:
            local(raw, root)
        errors.add(str(caught.value))
    assert errors == {"local repositories must lie under NEO_LOCAL_REPOS_ROOT"}


@given(st.text(string.printable.replace("\x00", ""), min_size=1, max_size=60))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_generated_path_escapes_the_root(root: Path, suffix: str) -> None:
    for raw in (str(root) + "/" + suffix, "/" + suffix, suffix):
        try:
            ref = local(raw, root)
        except InvalidRepoError:
            continue
        assert Path(ref.path).is_relative_to(root.resolve())


def test_http_submissions_without_a_root_refuse_local_paths(tmp_path: Path) -> None:
    s = load_settings(allow_local_repos=True)
    assert s.submission_root is None
    s = load_settings(allow_local_repos=True, local_repos_root=tmp_path)
    assert s.submission_root == tmp_path
    assert load_settings(local_repos_root=tmp_path).submission_root is None


# --------------------------------------------------------------------------- folder limits


def _check(folder: Path, **limits: float) -> None:
    args = {"timeout_s": 60.0, "max_mb": 10, "max_files": 1000, **limits}
    discover.check_folder(folder, **args)  # type: ignore[arg-type]


def test_folders_read_in_place_keep_a_clones_limits(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"m{i}.py").write_text("import os\n")
    _check(tmp_path)  # within every limit
    with pytest.raises(RepoTooLarge, match="NEO_MAX_FILES"):
        _check(tmp_path, max_files=29)
    (tmp_path / "big.py").write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(RepoTooLarge, match="NEO_MAX_REPO_MB"):
        _check(tmp_path, max_mb=1)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(1000):
        (many / f"f{i}").touch()
    with pytest.raises(CloneTimeout, match="NEO_CLONE_TIMEOUT_S"):
        _check(many, timeout_s=0.0, max_mb=100, max_files=10_000)


def test_vendored_folders_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "huge.js").write_bytes(b"x" * (2 * 1024 * 1024))
    (tmp_path / "a.js").write_text("import './b.js'\n")
    _check(tmp_path, max_mb=1)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("token", ["changeme", "short-secret-9", "  ", "password"])
def test_a_refused_token_is_never_echoed(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAROS_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "PHAROS_ADMIN_TOKEN" in text
    assert "input_value" not in text
    if token.strip():
        assert token not in text


def test_a_bad_url_setting_names_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEO_HTTP_PORT", "99999")
    with pytest.raises(ConfigError, match="NEO_HTTP_PORT") as caught:
        load_settings()
    assert "99999" not in str(caught.value)
    os.environ.pop("NEO_HTTP_PORT", None)
