"""The Ray head `neo-ray up` runs for itself, the Ray auth token, and where a running system is.

Every process neo-ray starts or joins uses one Ray auth token, decided by `use_auth_token`
before any `ray start` or `ray.init`: `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH` when the user
set one, else a token file in the data dir (created 0600), exported as `RAY_AUTH_TOKEN_PATH`
so that the head, its workers and every later driver read the same file. Nothing depends on
`~/.ray`, which a new machine does not have.

`up` writes `system.json` in the data dir (the Ray address, the API's base URL, the token's
path) and a per-user pointer to that data dir, so that `status`, `ingest`, `down`, ... find
the running system from any directory:

    data_dir/ray-auth-token    the cluster's token (0600)
    data_dir/ray-head.json     the head neo-ray started: {pid, started, address, loopback, ...}
    data_dir/ray-head.log      its output
    data_dir/system.json       what `up` started: {data_dir, mode, ray_address, api, ...}
    $XDG_STATE_HOME/neo-ray/current.json   {data_dir} of the system `up` started last

A head that no other machine joins keeps every port on 127.0.0.1 (`LOOPBACK_SWITCH`); every
process that joins it must set that switch too, before it imports ray (`use_loopback`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neo_ray.errors import NeoRayError
from neo_ray.procs import free_port, pid_alive, tail, write_private

if TYPE_CHECKING:
    import psutil

TOKEN_FILE = "ray-auth-token"
HEAD_FILE = "ray-head.json"
HEAD_LOG = "ray-head.log"
STATE_FILE = "system.json"
HEAD_START_TIMEOUT_S = 90.0

# Ray's switch for single-machine Ray on macOS and Windows, read once when ray is imported
# (ray/_private/ray_constants.py, ENABLE_RAY_CLUSTER). Set to 0, `ray start` and `ray.init`
# keep a node address of 127.0.0.1 instead of replacing it with the machine's
# (services.get_node_ip_address returns get_localhost_ip() when it is off), and Ray's servers
# then bind 127.0.0.1: GCS, raylet, object manager and each worker bind the node address,
# and the dashboard agent, the runtime-env agent, the Ray Client server and the metrics
# servers pick 127.0.0.1 when the node address is loopback (`is_localhost`). A process that
# joins such a head needs it too: without it ray.init rewrites 127.0.0.1 to the machine's
# address, where nothing listens. Joining a multi-machine cluster needs it unset.
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Fixed by default (44217, 44227), so two heads on one machine would compete for them.
METRIC_PORT_VARS = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")


# --------------------------------------------------------------------------- the auth token


def use_auth_token(data_dir: Path, *, create: bool = True) -> Path | None:
    """Make every Ray process this one starts or joins use one token; return its file.

    A token the user set (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`) wins; else the data dir's
    token file is made when missing (unless `create` is false) and exported.
    `RAY_AUTH_MODE=disabled` is respected. Call it before `ray` is imported: Ray reads its
    auth settings once, at import.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"].lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if given:
        return Path(given)
    path = (data_dir / TOKEN_FILE).resolve()
    if not path.exists():
        if not create:
            return None
        write_private(path, secrets.token_hex(16))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    return path


# --------------------------------------------------------------------------- where the system is


def pointer_file() -> Path:
    """The per-user file that names the data dir of the system `up` started last."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "neo-ray" / "current.json"


def recorded_data_dir() -> Path | None:
    """The data dir `up` recorded, when that system's record is still there."""
    try:
        data_dir = Path(json.loads(pointer_file().read_text(encoding="utf-8"))["data_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data_dir if (data_dir / STATE_FILE).exists() else None


def record_system(data_dir: Path, state: dict[str, Any]) -> None:
    """Write what `up` started, and point the user's later commands at it."""
    (data_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    pointer = pointer_file()
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"data_dir": str(data_dir)}) + "\n", encoding="utf-8")


def read_system(data_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def forget_system(data_dir: Path) -> None:
    """Remove `up`'s record, and the user's pointer when it names this data dir."""
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    if recorded_data_dir() is None:
        pointer_file().unlink(missing_ok=True)


def cluster_address(data_dir: Path) -> str | None:
    """The Ray cluster of the system in `data_dir` (RAY_ADDRESS wins), if it answers."""
    address = os.environ.get("RAY_ADDRESS") or (read_system(data_dir) or {}).get("ray_address")
    # A stale record (a cluster that died) would make ray.init wait for minutes.
    return address if address and port_open(address) else None


# --------------------------------------------------------------------------- the head


def port_open(address: str, timeout_s: float = 1.0) -> bool:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def owned_head(data_dir: Path) -> dict[str, Any] | None:
    """The head `start_head` started for `data_dir`, when it is still running."""
    try:
        head = dict(json.loads((data_dir / HEAD_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return head if pid_alive(int(head["pid"])) and port_open(head["address"]) else None


def use_loopback(data_dir: Path, *, starting: bool) -> bool:
    """Make this process's Ray keep to 127.0.0.1 when it joins a head that does; say whether.

    The head is the data dir's own (its record says whether it keeps to loopback) or, when
    none runs, the one this process is about to start (`starting`); RAY_ADDRESS (another
    cluster) leaves Ray as it is. Call it before `ray` is imported.
    """
    if os.environ.get("RAY_ADDRESS"):
        return False
    head = owned_head(data_dir)
    loopback = bool(head.get("loopback")) if head is not None else starting
    if loopback:
        os.environ[LOOPBACK_SWITCH] = "0"
    return loopback


def head_env(*, loopback: bool) -> dict[str, str]:
    """What `ray start` needs in its environment (beside `head_command`'s arguments): with
    `loopback`, the switch that keeps its node address, and so every port, on 127.0.0.1."""
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if loopback:
        env[LOOPBACK_SWITCH] = "0"
        for name in METRIC_PORT_VARS:
            env[name] = os.environ.get(name) or str(free_port())
    return env


def head_command(port: int, *, edge: bool) -> list[str]:
    """`ray start --head` on 127.0.0.1 with ports of its own, so that heads never collide.

    Only with `head_env(loopback=True)` do Ray's ports stay on 127.0.0.1; without it Ray
    replaces 127.0.0.1 with the machine's address, which other machines can join.
    """
    exe = Path(sys.executable).with_name("ray")
    command = [
        str(exe) if exe.exists() else "ray",
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--disable-usage-stats",
    ]
    if edge:
        command.append('--resources={"edge": 1}')
    return command


def start_head(
    data_dir: Path, *, edge: bool, loopback: bool, timeout_s: float = HEAD_START_TIMEOUT_S
) -> str:
    """Start a Ray head node as a daemon owned by `data_dir`; return its GCS address.

    With `loopback` every port of the head listens on 127.0.0.1 only (no other machine can
    join it); without it Ray binds the machine's address too, for edge machines to join.
    Raises NeoRayError with the end of the head's log when it does not come up.
    """
    port = free_port()
    command = head_command(port, edge=edge)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / HEAD_LOG
    env = {**os.environ, **head_env(loopback=loopback)}
    if not loopback:
        env.pop(LOOPBACK_SWITCH, None)
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    address = f"127.0.0.1:{port}"
    dashboard = next(a.split("=", 1)[1] for a in command if a.startswith("--dashboard-port"))
    head = {
        "pid": proc.pid,
        # With the pid, what tells this head's processes from a later owner of that pid.
        "started": _create_time(proc.pid),
        "address": address,
        "dashboard": f"127.0.0.1:{dashboard}",
        "loopback": loopback,
    }
    (data_dir / HEAD_FILE).write_text(json.dumps(head), encoding="utf-8")
    deadline = time.monotonic() + timeout_s
    while not port_open(address, 0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_head(data_dir)
            raise NeoRayError(
                f"the Ray head did not start (see {log_path}); its log ends:\n{tail(log_path)}"
            )
        time.sleep(0.2)
    return address


def stop_head(data_dir: Path, timeout_s: float = 60.0) -> int:
    """Stop the head `start_head` started, and every process it left; return how many ran
    (0: none, so the result reads as "was there one").

    `ray start --block` drains on SIGTERM and stops the processes it started. When the head
    was killed without warning (kill -9 of `ray start`, its GCS or its raylet), its dashboard,
    agents and workers live on as orphans: they are found by the head's session (`ray start`
    runs in a session of its own, which every Ray process of that head inherits) and killed.
    Nothing outside that session is touched, nor any process of another user.
    """
    path = data_dir / HEAD_FILE
    try:
        head = dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return 0
    import psutil  # not in the base install (the control plane never stops a head)

    pid = int(head["pid"])
    found = 0
    if owned_head(data_dir) is not None and _is_leader(head):
        found = 1
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # `ray start --block` drains, then stops its processes
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)
    left = head_processes(head)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=10)
    path.unlink(missing_ok=True)
    return found + len(left)


def clear_dead_head(data_dir: Path) -> int:
    """Remove what a head killed without warning left (its `ray start` is gone); never touch
    a head that is still starting. Returns how many processes were stopped."""
    try:
        head = dict(json.loads((data_dir / HEAD_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return 0
    return 0 if _is_leader(head) else stop_head(data_dir)


def head_processes(head: dict[str, Any]) -> list[psutil.Process]:
    """The live processes of the head `head` records: its session's, this user's, born after it.

    When the head's pid now belongs to another process (a stale record), only processes whose
    command line names the head's Ray session (`session_<date>_<pid>`) count.
    """
    import psutil

    pid = int(head["pid"])
    started = float(head.get("started") or 0.0)
    by_session = _is_leader(head) or not pid_alive(pid)
    marker = re.compile(rf"session_[0-9_-]+_{pid}(/|\b)")
    found = []
    for proc in psutil.process_iter(["pid", "uids", "create_time", "status", "cmdline"]):
        info = proc.info
        try:
            if os.getsid(proc.pid) != pid or info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except OSError:
            continue
        if info["uids"] is None or info["uids"].real != os.getuid():
            continue
        if started and (info["create_time"] or 0.0) < started - 1.0:
            continue  # older than the head: not of it
        named = marker.search(" ".join(info["cmdline"] or []))
        if (by_session and started) or named:
            found.append(proc)
    return found


def _is_leader(head: dict[str, Any]) -> bool:
    """Whether the head's pid is still the `ray start` that `start_head` launched."""
    started = head.get("started")
    pid = int(head["pid"])
    if not pid_alive(pid):
        return False
    return started is None or abs(_create_time(pid) - float(started)) < 1.0


def _create_time(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0
