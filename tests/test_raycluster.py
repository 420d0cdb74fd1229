"""The Ray auth token neo-ray owns, and the record that lets commands find a running system."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
