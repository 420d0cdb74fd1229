"""Settings: environment names, the seed's aliases, and refusal of unsafe values."""

from __future__ import annotations

import pytest

from neo_ray.config import Mode, load_settings, mask_url
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
