"""The Ray auth token neo-ray owns, the record that lets commands find a running system, and
the addresses the head `up` starts listens on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from neo_ray import raycluster

NEO = str(Path(sys.executable).with_name("neo-ray"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Ray token or mode in the environment; HOME and XDG_STATE_HOME inside tmp_path."""
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_token_is_made_in_the_data_dir_private_from_the_start(clean_env: Path) -> None:
    data = clean_env / "data"
    old = os.umask(0)  # a permissive umask must not leak into the token file's mode
    try:
        path = raycluster.use_auth_token(data)
    finally:
        os.umask(old)
    assert path == (data / "ray-auth-token").resolve()
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_text().strip()) == 32
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(path)
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_an_existing_token_is_kept(clean_env: Path) -> None:
    data = clean_env / "data"
    first = raycluster.use_auth_token(data)
    assert first is not None
    text = first.read_text()
    os.environ.pop("RAY_AUTH_TOKEN_PATH")
    assert raycluster.use_auth_token(data) == first and first.read_text() == text


def test_a_token_the_user_set_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = clean_env / "mine"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(mine))
    assert raycluster.use_auth_token(clean_env / "data") == mine
    assert not (clean_env / "data").exists()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 32)
    assert raycluster.use_auth_token(clean_env / "data") is None
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ


def test_auth_disabled_is_respected(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert raycluster.use_auth_token(clean_env / "data") is None
    assert not (clean_env / "data").exists()


def test_no_token_is_made_unless_asked(clean_env: Path) -> None:
    assert raycluster.use_auth_token(clean_env / "data", create=False) is None
    assert not (clean_env / "data" / "ray-auth-token").exists()


def test_the_record_points_later_commands_at_the_data_dir(clean_env: Path) -> None:
    data = clean_env / "data"
    data.mkdir()
    assert raycluster.recorded_data_dir() is None
    raycluster.record_system(data, {"api": "http://127.0.0.1:1", "ray_address": "127.0.0.1:1"})
    assert raycluster.pointer_file().is_relative_to(clean_env / "home")
    assert raycluster.recorded_data_dir() == data
    assert raycluster.read_system(data) == {
        "api": "http://127.0.0.1:1",
        "ray_address": "127.0.0.1:1",
    }
    # Nothing listens there: a stale record is no cluster (ray.init would wait for minutes).
    assert raycluster.cluster_address(data) is None
    raycluster.forget_system(data)
    assert raycluster.recorded_data_dir() is None and not raycluster.pointer_file().exists()


def test_ray_token_command_prints_the_shared_file(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
    }
    env |= {"HOME": str(tmp_path), "NEO_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([NEO, "ray-token"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path == (tmp_path / "data" / "ray-auth-token").resolve() and path.is_file()


@pytest.fixture
def no_switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Neither RAY_ADDRESS nor Ray's loopback switch set, before the test and after it."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(raycluster.LOOPBACK_SWITCH, raising=False)
    yield
    os.environ.pop(raycluster.LOOPBACK_SWITCH, None)


def test_a_process_keeps_to_loopback_only_to_join_a_head_that_does(
    no_switch: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    switch = raycluster.LOOPBACK_SWITCH
    assert raycluster.use_loopback(tmp_path, starting=False) is False
    assert switch not in os.environ
    # No head runs: the one `up` is about to start decides.
    assert raycluster.use_loopback(tmp_path, starting=True) is True
    assert os.environ[switch] == "0"
    os.environ.pop(switch)
    # A running head's record decides (here this process, listening like a head would).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        for recorded in (False, True):
            head = {"pid": os.getpid(), "started": None, "address": address, "loopback": recorded}
            (tmp_path / raycluster.HEAD_FILE).write_text(json.dumps(head))
            assert raycluster.use_loopback(tmp_path, starting=not recorded) is recorded
            assert (os.environ.pop(switch, None) == "0") is recorded
    # Another cluster (RAY_ADDRESS) is joined as Ray joins it.
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert raycluster.use_loopback(tmp_path, starting=True) is False
    assert switch not in os.environ


def _machine_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("loopback", [True, False], ids=["local", "cluster"])
def test_a_local_head_listens_on_loopback_alone_and_a_cluster_head_where_edges_join(
    loopback: bool, no_switch: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head `up` starts: local (every socket of every one of its processes on 127.0.0.1,
    its GCS refused on the machine's address), or for edge machines to join (its GCS open on
    the machine's address)."""
    machine = _machine_address()
    if machine is None:
        pytest.skip("this machine has no address but loopback")
    ray_tmp = tempfile.mkdtemp(prefix="nrh", dir="/tmp")  # short: Ray puts sockets there
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    data = tmp_path / "data"
    try:
        address = raycluster.start_head(data, edge=False, loopback=loopback)
        head = json.loads((data / raycluster.HEAD_FILE).read_text())
        assert head["loopback"] is loopback
        # The agents and metrics servers start a moment after the GCS port opens.
        dashboard = head["dashboard"]
        deadline = time.monotonic() + 120
        while not raycluster.port_open(dashboard):
            assert time.monotonic() < deadline, "the head's dashboard never opened"
            time.sleep(0.5)
        time.sleep(3)
        port = address.rsplit(":", 1)[1]
        assert raycluster.port_open(address)
        assert raycluster.port_open(f"{machine}:{port}") is not loopback
        procs = raycluster.head_processes(head)
        sockets = [
            (conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port, proc.name())
            for proc in procs
            for conn in proc.net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN
        ]
        names = {name for _, _, name in sockets}
        assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names
        wide = [s for s in sockets if s[0] != "127.0.0.1"]
        assert (wide == []) is loopback, wide
    finally:
        raycluster.stop_head(data)
        shutil.rmtree(ray_tmp, ignore_errors=True)
