"""Run a neo-ray edge node in the foreground, for a service manager (systemd, launchd, NSSM).

    python deploy/edge_service.py [--env-file /etc/neo-ray/edge.env]

It refuses to start without the shared settings (queue, PostgreSQL, Qdrant: see
docs/deploy.md), starts a Ray head with the `edge` resource (`ray start --head --block`),
deploys the edge actors into it (`neo-ray up --mode edge`), and then lives as long as the head
does: a head that dies ends this process with a failure, so the service manager restarts it.
SIGTERM or Ctrl-C (what systemd, launchd and NSSM send) removes the actors (`neo-ray down`) and
stops the head, and the process exits 0.

Runner variables (not neo-ray settings): NEO_RAY_PORT (the head's GCS port, default 6380) and
NEO_RAY_NODE_IP (the address other edge machines join, default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from neo_ray.config import Mode, check_deployment, load_settings
from neo_ray.errors import ConfigError


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped; one pair of quotes removed)."""
    pairs: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        pairs[key.strip().removeprefix("export ").strip()] = value
    return pairs


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ray_executable() -> str:
    here = str(Path(sys.executable).parent)
    found = shutil.which("ray", path=here) or shutil.which("ray")
    if not found:
        raise SystemExit("neo-ray edge: the `ray` command is missing; install neo-ray[edge]")
    return found


def _neo_ray(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "neo_ray.cli", *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=None)
    args = parser.parse_args()
    if args.env_file is not None:
        os.environ.update(read_env_file(args.env_file))
    os.environ["NEO_MODE"] = Mode.EDGE.value
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        check_deployment(load_settings())
    except ConfigError as exc:
        print(f"neo-ray edge: {exc}", file=sys.stderr)
        return 2
    host = os.environ.get("NEO_RAY_NODE_IP", "127.0.0.1")
    port = int(os.environ.get("NEO_RAY_PORT", "6380"))
    os.environ["RAY_ADDRESS"] = f"{host}:{port}"
    head = subprocess.Popen(
        [
            _ray_executable(), "start", "--head", "--block", f"--port={port}",
            f"--node-ip-address={host}", "--include-dashboard=false", "--disable-usage-stats",
            '--resources={"edge": 1}',
        ]
    )  # fmt: skip
    return _supervise(head, host, port)


def _supervise(head: subprocess.Popen[bytes], host: str, port: int) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + 180
    while not _port_open(host, port):
        if head.poll() is not None or stop.is_set() or time.monotonic() > deadline:
            head.terminate()
            return 1 if not stop.is_set() else 0
        time.sleep(0.5)
    if _neo_ray("up", "--mode", "edge") != 0:
        head.terminate()
        head.wait(60)
        return 1
    while head.poll() is None and not stop.wait(1.0):
        pass
    if head.poll() is not None:  # the head died under us: fail, so the manager restarts
        print(f"neo-ray edge: the Ray head exited ({head.returncode})", file=sys.stderr)
        return 1
    _neo_ray("down")
    head.terminate()  # `ray start --block` stops its processes on SIGTERM
    head.wait(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
