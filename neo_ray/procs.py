"""Small process and port helpers shared by the embedded servers, the Ray head and the tests."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether a process runs: a zombie (exited, not yet reaped by its parent) counts as gone."""
    import psutil  # not in the base install (the control plane never needs it)

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message ("" when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def write_private(path: Path, text: str, *, replace: bool = False) -> None:
    """Create `path` holding `text`, readable by its owner only from the first byte on.

    An existing file is kept (another process made it first: theirs stands) unless `replace`,
    which writes a private temporary file beside it and renames it over the old one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if replace:  # a leftover of a killed writer with our pid: start over
            target.unlink()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        else:
            return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    if replace:
        os.replace(target, path)
