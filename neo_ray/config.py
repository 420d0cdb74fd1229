"""The one frozen settings object, read from the environment once per entry point and passed on."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from neo_ray.errors import ConfigError

MIN_TOKEN_LENGTH = 16
# Tokens that ship in examples and must never guard a real deployment.
_PLACEHOLDER_TOKENS = frozenset({"changeme", "change-me", "secret", "token", "admin", "password"})
MASK = "***"
# Query parameters that carry a credential (`?password=` in a libpq URL, `?api_key=`, ...).
_SECRET_PARAMS = ("pass", "token", "key", "secret", "auth")
# Settings holding URLs that may carry credentials: shown masked wherever settings print.
URL_FIELDS = ("redis_url", "database_url", "upstash_redis_rest_url", "qdrant_url")


def mask_url(url: str | None) -> str | None:
    """`url` with its password and credential-bearing query values replaced by `***`.

    `redis://:hunter2@host:6379/0` → `redis://:***@host:6379/0`; the user name, host, port,
    path and harmless query parameters stay, so the output still says where it points.
    """
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            name = user.split(":", 1)[0]
            netloc = f"{name}:{MASK}@{host}"
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_param(k) for k, _ in pairs):
            masked = [(k, MASK if _secret_param(k) else v) for k, v in pairs]
            query = urlencode(masked, safe="/*")
    except ValueError:  # unparseable (e.g. a bad port): show nothing of it
        return MASK
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_param(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_PARAMS)


class Mode(str, Enum):
    """Which planes this Ray cluster runs."""

    LOCAL = "local"
    """Everything on one machine, with embedded Redis, PostgreSQL and Qdrant by default."""
    CLOUD = "cloud"
    """Only the Serve control plane; never imports torch, tree-sitter or GitPython."""
    EDGE = "edge"
    """Bridge, history and workers; no HTTP."""


class Settings(BaseSettings):
    """Every knob of neo-ray. Environment names are `NEO_<FIELD>` unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="NEO_", frozen=True, extra="ignore", populate_by_name=True
    )

    mode: Mode = Mode.LOCAL
    data_dir: Path = Path(".neo")

    # --- HTTP control plane
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    admin_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("PHAROS_ADMIN_TOKEN", "NEO_ADMIN_TOKEN")
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = (
        "github.com",
        "gitlab.com",
        "bitbucket.org",
    )
    allow_local_repos: bool = False
    local_repos_root: Path | None = None
    max_queue_size: int = Field(10, ge=1)
    task_ttl_s: int = Field(86_400, ge=1)
    retry_after_s: int = Field(30, ge=1)
    # Replicas of the Serve control plane (local mode): with two, a killed one leaves the
    # other answering while Serve replaces it. The plain ASGI process ignores it.
    control_replicas: int = Field(2, ge=1)
    # Under Serve, a request no replica has begun to answer after this long is answered 503
    # with Retry-After (every replica gone); above the longest route (a 15 s vector search).
    http_deadline_s: float = Field(20.0, gt=0)
    # Under Serve, neo-ray's front listens on http_host:http_port and relays to Serve's proxy
    # on 127.0.0.1:serve_port (0: a free port chosen at start), so that the port never
    # refuses while Serve replaces a dead proxy. Off: Serve's proxy listens there itself.
    http_front: bool = True
    serve_port: int = Field(0, ge=0, le=65535)

    # --- Redis
    redis_url: str | None = None
    redis_prefix: str = ""
    upstash_redis_rest_url: str | None = Field(
        None, validation_alias=AliasChoices("UPSTASH_REDIS_REST_URL")
    )
    upstash_redis_rest_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("UPSTASH_REDIS_REST_TOKEN")
    )

    # Upstash REST: every call's time limit, and the budget knobs (the free plan counts
    # commands): an idle edge polls the queue at most this often once it has backed off, and
    # an idle worker renews its heartbeat this often (busy ones every heartbeat_interval_s).
    upstash_timeout_s: float = Field(5.0, gt=0)
    idle_poll_max_s: float = Field(60.0, gt=0)
    idle_heartbeat_s: float = Field(60.0, gt=0)

    # /worker/status answers from a snapshot this young (one Redis read serves them all).
    status_cache_s: float = Field(0.5, ge=0)

    # --- PostgreSQL and Qdrant
    database_url: str | None = None
    # A root certificate to verify the server against (sslmode=verify-full); remote hosts
    # get sslmode=require without one. Each process keeps at most this many connections.
    database_ca: Path | None = None
    database_pool_size: int = Field(2, ge=1)
    # While PostgreSQL is away a job's repository metadata waits in Redis (compressed) up to
    # this size; a bigger one fails the attempt as before (retried). 0: never parked.
    park_metadata_max_mb: float = Field(8.0, ge=0)
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = "code_structure_embeddings"

    # --- workers and the queue hand-off
    heartbeat_interval_s: float = Field(2.0, gt=0)
    heartbeat_ttl_s: int = Field(15, ge=1)
    max_attempts: int = Field(3, ge=1)
    workers_per_node: int = Field(1, ge=1)

    # --- clone and discovery limits
    clone_timeout_s: float = Field(300.0, gt=0)
    max_repo_mb: int = Field(1024, ge=1)
    max_file_bytes: int = Field(1_000_000, ge=1)
    max_files: int = Field(200_000, ge=1)
    parse_workers: int | None = Field(None, ge=0)
    # A full tree-sitter parse of every file, files with syntax errors left out; by default a
    # lexical scan reads what it is sure of and tree-sitter the rest, and broken files stay.
    strict_parse: bool = False

    # --- Node2Vec (the seed's defaults)
    dim: int = Field(64, ge=2)
    walk_length: int = Field(20, ge=2)
    context_size: int = Field(10, ge=2)
    walks_per_node: int = Field(10, ge=1)
    p: float = Field(1.0, gt=0)
    q: float = Field(1.0, gt=0)
    epochs: int = Field(10, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @field_validator("admin_token")
    @classmethod
    def _refuse_weak_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value().strip()
        if secret.lower() in _PLACEHOLDER_TOKENS:
            raise ValueError("PHAROS_ADMIN_TOKEN is a placeholder; set a real secret")
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"PHAROS_ADMIN_TOKEN must be at least {MIN_TOKEN_LENGTH} characters "
                "(empty would let anyone in); generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return SecretStr(secret)

    @property
    def submission_root(self) -> Path | None:
        """The folder local repositories submitted over HTTP must lie in; None: refused."""
        return self.local_repos_root if self.allow_local_repos else None

    @property
    def context_window_ok(self) -> bool:
        """Node2Vec needs walks at least as long as the context window."""
        return self.walk_length >= self.context_size

    def with_(self, **changes: Any) -> Settings:
        """These settings with `changes`, validated as a new object (ConfigError if refused).

        The only way settings change after loading: every field is validated again, so a
        change can never smuggle in a value the environment would have been refused for.
        """
        try:
            changed = type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc)) from None
        return _checked(changed)

    def model_copy(self, *, update: Any = None, deep: bool = False) -> Settings:
        """Validated like `with_` (pydantic's own copy would skip validation)."""
        return self.with_(**(update or {}))

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr(), str() and every log line that shows settings: credentials masked.
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in URL_FIELDS else value

    def upstash_rest(self) -> tuple[str, str] | None:
        """(URL, token) of Upstash REST when both are set; None otherwise."""
        if not (self.upstash_redis_rest_url and self.upstash_redis_rest_token):
            return None
        return self.upstash_redis_rest_url, self.upstash_redis_rest_token.get_secret_value()

    @property
    def has_queue(self) -> bool:
        """Whether a shared queue is configured (NEO_REDIS_URL or Upstash REST)."""
        return bool(self.redis_url) or self.upstash_rest() is not None


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; translate validation failures into ConfigError.

    The error names each bad setting and why, never its value: a value may be a secret.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return _checked(settings)


def _checked(settings: Settings) -> Settings:
    """Checks across fields, which field validators cannot make."""
    if not settings.context_window_ok:
        raise ConfigError(
            f"NEO_WALK_LENGTH ({settings.walk_length}) must be ≥ NEO_CONTEXT_SIZE "
            f"({settings.context_size})"
        )
    return settings


def _env_name(field: str) -> str:
    """The environment variable a user sets for `field`."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return f"NEO_{field.upper()}"


def describe_errors(exc: ValidationError) -> str:
    """Each invalid setting by its environment name, with the reason and without the value."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        field = str(err["loc"][0]) if err.get("loc") else ""
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{_env_name(field)}: {message}" if field else message)
    return "invalid settings: " + "; ".join(parts)


def missing_settings(settings: Settings) -> list[str]:
    """The settings this mode cannot run without, by environment name (empty when ready).

    Edge mode refuses to run alone: without shared Redis (or Upstash), PostgreSQL and Qdrant
    an edge node would run private stores that no control plane reaches. Cloud mode needs the
    admin token (ingestion is never open) and the shared queue. In every mode, Upstash REST
    needs its URL and its token together.
    """
    missing: list[str] = []
    if bool(settings.upstash_redis_rest_url) != bool(settings.upstash_redis_rest_token):
        missing.append(
            "UPSTASH_REDIS_REST_TOKEN"
            if settings.upstash_redis_rest_url
            else "UPSTASH_REDIS_REST_URL"
        )
    elif settings.mode is not Mode.LOCAL and not settings.has_queue:
        missing.append("NEO_REDIS_URL (or UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN)")
    if settings.mode is Mode.EDGE:
        if not settings.database_url:
            missing.append("NEO_DATABASE_URL")
        if not settings.qdrant_url:
            missing.append("NEO_QDRANT_URL")
    if settings.mode is Mode.CLOUD and settings.admin_token is None:
        missing.append("PHAROS_ADMIN_TOKEN")
    return missing


def check_deployment(settings: Settings) -> None:
    """Raise ConfigError naming every setting this mode is missing (never any value)."""
    missing = missing_settings(settings)
    if missing:
        raise ConfigError(f"{settings.mode.value} mode cannot start without: " + ", ".join(missing))
