"""Settings: environment names, the seed's aliases, and refusal of unsafe values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from neo_ray.config import Mode, check_deployment, load_settings, mask_url, missing_settings
from neo_ray.errors import ConfigError


def test_environment_and_seed_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEO_MODE", "cloud")
    monkeypatch.setenv("NEO_ALLOWED_HOSTS", "GitHub.com, git.example.org")
    monkeypatch.setenv("PHAROS_ADMIN_TOKEN", "  a-long-enough-secret-token  ")
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "https://x.upstash.io")
    monkeypatch.setenv("NEO_MAX_QUEUE_SIZE", "25")
    s = load_settings()
    assert s.mode is Mode.CLOUD and s.max_queue_size == 25
    assert s.allowed_hosts == ("github.com", "git.example.org")
    assert s.admin_token is not None
    assert s.admin_token.get_secret_value() == "a-long-enough-secret-token"
    assert "a-long" not in repr(s)  # secrets never print
    assert s.upstash_redis_rest_url == "https://x.upstash.io"


@pytest.mark.parametrize("token", ["", "   ", "changeme", "short-token"])
def test_weak_admin_tokens_are_refused(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("PHAROS_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError, match="PHAROS_ADMIN_TOKEN"):
        load_settings()


def test_settings_are_frozen_and_checked() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.max_queue_size = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="NEO_WALK_LENGTH"):
        load_settings(walk_length=5, context_size=10)
    with pytest.raises(ConfigError):
        load_settings(http_port=0)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:AbC123@eu1.upstash.io:6379", "rediss://default:***@eu1.upstash.io:6379"),
        (
            "postgresql://neo:pw@db.neon.tech/neo?sslmode=require&password=pw2",
            "postgresql://neo:***@db.neon.tech/neo?sslmode=require&password=***",
        ),
        ("https://q.example.org:6333/?api_key=k3y", "https://q.example.org:6333/?api_key=***"),
        # Nothing secret: the URL comes back exactly as given (the socket path's escape kept).
        (
            "postgresql://postgres@/postgres?host=/tmp/a%20b&port=5432",
            "postgresql://postgres@/postgres?host=/tmp/a%20b&port=5432",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (None, None),
    ],
)
def test_mask_url_hides_passwords_and_keeps_the_address(url: str | None, shown: str | None) -> None:
    assert mask_url(url) == shown


def test_credential_urls_never_show_in_repr_or_str() -> None:
    s = load_settings(
        redis_url="redis://:hunter2@127.0.0.1:6379/0",
        database_url="postgresql://neo:pg-secret@db/neo",
        upstash_redis_rest_url="https://u:rest-secret@x.upstash.io",
        qdrant_url="https://q:qd-secret@q.example.org",
    )
    for text in (repr(s), str(s), f"{s!r}"):
        assert all(word not in text for word in ("hunter2", "pg-secret", "rest-secret", "qd-secr"))
        assert "redis://:***@127.0.0.1:6379/0" in text
    assert s.redis_url == "redis://:hunter2@127.0.0.1:6379/0"  # the value itself is intact


def test_settings_change_only_through_validation() -> None:
    s = load_settings()
    changed = s.with_(mode="cloud", max_queue_size=3)
    assert (changed.mode, changed.max_queue_size, s.mode) == (Mode.CLOUD, 3, Mode.LOCAL)
    with pytest.raises(ConfigError, match="NEO_HTTP_PORT"):
        s.with_(http_port=0)
    with pytest.raises(ConfigError, match="PHAROS_ADMIN_TOKEN"):
        s.with_(admin_token="changeme")
    with pytest.raises(ConfigError, match="NEO_WALK_LENGTH"):
        s.with_(walk_length=3)
    # pydantic's model_copy would skip validation; on Settings it validates as with_ does.
    with pytest.raises(ConfigError, match="NEO_MAX_QUEUE_SIZE"):
        s.model_copy(update={"max_queue_size": 0})


_SECRET = "s3cret-value-" + "x" * 20


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"NEO_MODE": "edge"},
            ["NEO_REDIS_URL", "UPSTASH_REDIS_REST_URL", "NEO_DATABASE_URL", "NEO_QDRANT_URL"],
        ),
        (
            {"NEO_MODE": "edge", "UPSTASH_REDIS_REST_URL": "https://u.example"},
            ["UPSTASH_REDIS_REST_TOKEN", "NEO_DATABASE_URL", "NEO_QDRANT_URL"],
        ),
        ({"NEO_MODE": "cloud"}, ["NEO_REDIS_URL", "PHAROS_ADMIN_TOKEN"]),
        (
            {"NEO_MODE": "cloud", "NEO_REDIS_URL": f"redis://:{_SECRET}@h:6379"},
            ["PHAROS_ADMIN_TOKEN"],
        ),
        ({"NEO_MODE": "local", "UPSTASH_REDIS_REST_TOKEN": _SECRET}, ["UPSTASH_REDIS_REST_URL"]),
    ],
)
def test_a_mode_refuses_to_start_without_its_shared_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: list[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        check_deployment(load_settings())
    message = str(caught.value)
    assert all(name in message for name in named), message
    assert _SECRET not in message


def test_complete_settings_pass_each_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    check_deployment(load_settings())  # local: embedded servers fill in
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "https://u.example")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", _SECRET)
    monkeypatch.setenv("NEO_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("NEO_QDRANT_URL", "https://q.example")
    check_deployment(load_settings(mode="edge"))
    check_deployment(load_settings(mode="cloud", admin_token=_SECRET))
    assert missing_settings(load_settings(mode="cloud")) == ["PHAROS_ADMIN_TOKEN"]


def test_a_bad_setting_is_named_and_its_value_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHAROS_ADMIN_TOKEN", "tooshort-" + "q1w2")
    monkeypatch.setenv("NEO_HTTP_PORT", "99999999")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "PHAROS_ADMIN_TOKEN" in message and "NEO_HTTP_PORT" in message
    assert "q1w2" not in message and "99999999" not in message


def test_edge_up_refuses_before_starting_any_embedded_server(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "NEO_MODE": "edge",
        "NEO_DATA_DIR": str(tmp_path / "data"),
        "NEO_DATABASE_URL": f"postgresql://u:{_SECRET}@127.0.0.1:1/db",
    }
    done = subprocess.run(
        [sys.executable, "-m", "neo_ray.cli", "up"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert "NEO_REDIS_URL" in done.stderr and "NEO_QDRANT_URL" in done.stderr
    assert "NEO_DATABASE_URL" not in done.stderr and _SECRET not in done.stderr
    assert not (tmp_path / "data").exists()  # no private Redis or PostgreSQL was started
