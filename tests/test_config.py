"""Settings: environment names, the seed's aliases, and refusal of unsafe values."""

from __future__ import annotations

import pytest

from neo_ray.config import Mode, load_settings
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
