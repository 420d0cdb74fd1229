"""Validate a submitted repository URL or path and reduce it to one canonical form.

Pure and light (stdlib only): the cloud-mode Serve app imports it to refuse bad input early.

Canonical form, which is what makes duplicate detection work:

- remote: ``https://<host>/<path>`` with the host lowercased, the path's case kept as
  written (GitHub ignores case, GitLab does not, so lowercasing could merge two GitLab
  projects), a trailing ``.git`` and trailing slashes removed. Plain ``http://`` is upgraded
  to ``https://``: every forge on the default allowlist serves https, and an unencrypted
  clone could be altered in transit.
- local (only when local repositories are allowed): ``file:///abs/path`` of the resolved
  directory (symlinks followed), as ``Path.as_uri`` writes it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from neo_ray.errors import InvalidRepoError

MAX_URL_LENGTH = 2048

# Forges where a repository is exactly owner/name; elsewhere (GitLab) groups may nest.
_TWO_LEVEL_HOSTS = frozenset({"github.com", "bitbucket.org"})
# The characters GitHub, GitLab and Bitbucket allow in owner, group and repository names.
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# scp-like SSH addresses: git@github.com:owner/repo
_SCP_LIKE = re.compile(r"^[^/:]+@[^/:]+:")
# host:port/... written without a scheme
_HOST_PORT = re.compile(r"^[^/:]+:\d+(/|$)")
_LOCAL_PREFIXES = ("/", "./", "../", "~/")


@dataclass(frozen=True, slots=True)
class RepoRef:
    """A validated repository: its canonical `url` and the address git clones from.

    For a remote, `host` is the lowercased host and `path` the ``owner/repo`` (or
    ``group/sub/repo``) part; for a local repository `host` is None and `path` the absolute
    directory.
    """

    url: str
    clone_url: str
    is_local: bool
    host: str | None
    path: str

    @property
    def name(self) -> str:
        """The repository's name: the last path segment."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def owner(self) -> str | None:
        """Owner or group path of a remote (``group/sub`` on GitLab); None when local."""
        if self.is_local:
            return None
        return self.path.rsplit("/", 1)[0]


def normalize_repo_url(
    raw: str, *, allowed_hosts: Sequence[str], allow_local: bool, local_root: Path | None = None
) -> RepoRef:
    """Validate `raw` and return its canonical RepoRef; raise InvalidRepoError saying why.

    Local folders are refused unless `allow_local`; with a `local_root` (what the HTTP route
    and the workers pass) they must be absolute paths that resolve inside it, and an error
    about a path outside the root never says whether that path exists.
    """
    text = _check_text(raw)
    if text.lower().startswith("file:"):
        return _local_ref(_file_url_path(text), allow_local, local_root)
    if text.startswith(_LOCAL_PREFIXES) or text in (".", "..", "~"):
        # a local folder's name may hold spaces
        return _local_ref(text, allow_local, local_root)
    if any(ch.isspace() for ch in text):
        raise InvalidRepoError("repository URL contains whitespace or control characters")
    return _remote_ref(_with_scheme(text), allowed_hosts)


def _check_text(raw: str) -> str:
    """Refuse empty, overlong and control-character input; strip surrounding whitespace."""
    text = raw.strip()
    if not text:
        raise InvalidRepoError("repository URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidRepoError(
            f"repository URL is too long ({len(text)} characters; at most {MAX_URL_LENGTH})"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidRepoError("repository URL contains control characters")
    return text


def _with_scheme(text: str) -> str:
    """Return an http(s) URL for `text`, adding https:// to a bare host/owner/repo form."""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise InvalidRepoError(
                f"unsupported scheme {scheme!r}: only https:// URLs are accepted "
                "(ssh, git and other protocols are refused)"
            )
        return text
    if _SCP_LIKE.match(text):
        raise InvalidRepoError(
            "SSH addresses (user@host:path) are not supported: use https://host/owner/repo"
        )
    if _HOST_PORT.match(text):
        return "https://" + text  # the port is refused with its own reason below
    scheme_match = _SCHEME.match(text)
    if scheme_match:
        raise InvalidRepoError(
            f"unsupported scheme {scheme_match.group(1).lower()!r}: only https:// URLs are accepted"
        )
    return "https://" + text


def _remote_ref(url: str, allowed_hosts: Sequence[str]) -> RepoRef:
    """Split an http(s) URL into a canonical remote RepoRef."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced brackets and the like
        raise InvalidRepoError(f"malformed repository URL ({exc})") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise InvalidRepoError("repository URL must not have a query (?…) or fragment (#…)")
    if "@" in parts.netloc:
        # Never echo the netloc: it holds the credentials.
        raise InvalidRepoError(
            "credentials in the repository URL are not accepted (user:password@host)"
        )
    host = _host_of(parts.netloc)
    allowed = {h.strip().lower() for h in allowed_hosts}
    if host not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        raise InvalidRepoError(f"host {host!r} is not allowed (allowed hosts: {listed})")
    segments = _path_segments(parts.path, host)
    path = "/".join(segments)
    canonical = f"https://{host}/{path}"
    return RepoRef(url=canonical, clone_url=canonical, is_local=False, host=host, path=path)


_IPV4_LIKE = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.IGNORECASE)


def _host_of(netloc: str) -> str:
    """The lowercased host of `netloc`; refuse IP literals, ports, encodings and non-ASCII."""
    if "[" in netloc or "]" in netloc:
        raise InvalidRepoError("IP address literals are not accepted as hosts (IPv6 [..])")
    host, _, port = netloc.partition(":")
    host = host.lower()
    if not host:
        raise InvalidRepoError("repository URL has no host")
    if not host.isascii():
        raise InvalidRepoError(
            "hosts must be plain ASCII names (internationalized look-alike hosts are refused)"
        )
    if "%" in host or "\\" in host:
        raise InvalidRepoError("percent-encoded or escaped hosts are not accepted")
    if _IPV4_LIKE.match(host) or _is_ip(host):
        raise InvalidRepoError(
            "IP address literals are not accepted as hosts (decimal, octal, hex or dotted)"
        )
    if port or netloc.endswith(":"):
        raise InvalidRepoError(f"ports are not accepted in repository URLs ({host}:{port})")
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _path_segments(path: str, host: str) -> list[str]:
    """Validate the owner/repo segments of a URL path and strip `.git` from the last one."""
    segments = path.strip("/").split("/") if path.strip("/") else []
    if any(seg in (".", "..") for seg in segments):
        raise InvalidRepoError("repository URL must not contain '.' or '..' path segments")
    if any(seg == "" for seg in segments):
        raise InvalidRepoError("repository URL has an empty path segment ('//')")
    if segments and segments[-1].endswith(".git"):
        segments[-1] = segments[-1][: -len(".git")]
        if not segments[-1]:
            segments.pop()
    if len(segments) < 2:
        raise InvalidRepoError(
            "repository URL must name an owner and a repository (host/owner/repo)"
        )
    for seg in segments:
        if not _SEGMENT.match(seg):
            raise InvalidRepoError(
                f"invalid path segment {seg!r}: names use letters, digits, '.', '_' and '-'"
            )
    if host in _TWO_LEVEL_HOSTS and len(segments) > 2:
        extra = "/".join(segments[2:])
        raise InvalidRepoError(
            f"{host} repositories are host/owner/repo; unexpected extra path {extra!r}"
        )
    return segments


def _file_url_path(text: str) -> str:
    """The local path a file:// URL names."""
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise InvalidRepoError(f"malformed file:// URL ({exc})") from None
    if not text.lower().startswith("file:///") and parts.netloc not in ("", "localhost"):
        raise InvalidRepoError("file:// URLs must not name a host (use file:///abs/path)")
    if parts.query or parts.fragment:
        raise InvalidRepoError("repository URL must not have a query (?…) or fragment (#…)")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidRepoError("file:// URLs must hold an absolute path (file:///abs/path)")
    return path


def _local_ref(raw_path: str, allow_local: bool, local_root: Path | None) -> RepoRef:
    """A local directory as a RepoRef, when local repositories are allowed (under the root)."""
    if not allow_local:
        raise InvalidRepoError(
            "local repositories are disabled (set NEO_ALLOW_LOCAL_REPOS=1 and "
            "NEO_LOCAL_REPOS_ROOT to allow those under one folder)"
        )
    if local_root is None:  # one's own disk, through the CLI
        path = Path(raw_path).expanduser().resolve()
    else:
        path = _inside_root(raw_path, local_root)
    if not path.exists():
        raise InvalidRepoError(f"local repository path does not exist: {path}")
    if not path.is_dir():
        raise InvalidRepoError(f"local repository path is not a directory: {path}")
    uri = path.as_uri()
    return RepoRef(url=uri, clone_url=uri, is_local=True, host=None, path=str(path))


def _inside_root(raw_path: str, root: Path) -> Path:
    """`raw_path` resolved (symlinks followed) when it is absolute and inside `root`.

    The refusal is the same whether or not the path exists, so that the route tells a
    caller nothing about the disk outside the root.
    """
    if not raw_path.startswith("/") or "\x00" in raw_path:
        raise InvalidRepoError(
            "local repository paths must be absolute (no ~, relative paths or the server's cwd)"
        )
    path = Path(raw_path).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InvalidRepoError("local repositories must lie under NEO_LOCAL_REPOS_ROOT")
    return path


# What `git check-ref-format` forbids, plus a leading '-' (it would read as an option).
_BAD_REF = re.compile(
    r"(^-)|(\.\.)|(@\{)|(//)|([\x00-\x20\x7f~^:?*\[\\])|(\.lock$)|(^/)|(/$)|(\.$)"
)


def validate_git_ref(ref: str | None) -> str | None:
    """Return `ref` (a branch, tag or commit sha) if git could name it; else InvalidRepoError."""
    if ref is None:
        return None
    if not ref or len(ref) > 255:
        raise InvalidRepoError("git ref must be 1 to 255 characters")
    if ref == "@" or _BAD_REF.search(ref) or "/." in ref or ref.startswith("."):
        raise InvalidRepoError(f"invalid git ref {ref!r} (not a valid branch, tag or commit)")
    return ref
