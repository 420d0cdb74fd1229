"""The exception tree of neo-ray; third-party errors are translated into it at each adapter.

NeoRayError
├── ConfigError            a setting is missing, malformed or unsafe
├── InvalidRepoError       a repository URL or path is refused (the message says why)
├── CloneError             git could not fetch the repository
│   ├── CloneTimeout       the clone ran past its time limit
│   ├── RepoTooLarge       the checkout exceeds the size limit
│   └── RepoNotFound       no such repository or ref (or it needs credentials)
├── ParseError             a source file does not parse (the message says where)
├── EmbedError             Node2Vec could not train (bad input graph, device)
├── StoreError             the vector store refused or failed a request after retries
│   └── FileNotStored      the queried file has no vector (never ingested, or removed)
├── DatabaseError          PostgreSQL failed or is unreachable
│   └── DatabaseUnavailable it is unreachable, or too busy to answer (another try may do)
├── NotFound               no such repository or file in what was ingested
├── QueueError             the Redis queue failed
│   ├── QueueUnavailable   Redis is unreachable
│   └── QueueFull          the queue is at its cap
└── ActorError             a named actor (history, store) is missing, dead or too slow
    └── ActorTimeout       it did not answer within the caller's timeout

Missing configuration (an actor or the control plane started without `NEO_REDIS_URL`) is a
ConfigError, never a bare ValueError.
"""

from __future__ import annotations


class NeoRayError(Exception):
    """Base of every error neo-ray raises on purpose."""


class ConfigError(NeoRayError):
    """A setting is missing, malformed or unsafe."""


class InvalidRepoError(NeoRayError):
    """A repository URL or path is refused; the message says why."""


class CloneError(NeoRayError):
    """git could not fetch the repository."""


class CloneTimeout(CloneError):
    """The clone ran past its time limit."""


class RepoTooLarge(CloneError):
    """The checkout exceeds the configured size limit."""


class RepoNotFound(CloneError):
    """No such repository or ref, or it needs credentials: another try cannot help."""


class ParseError(NeoRayError):
    """A source file does not parse; the message says where (`syntax error at line N`)."""


class EmbedError(NeoRayError):
    """Node2Vec could not train on the given graph or device."""


class StoreError(NeoRayError):
    """The vector store refused or failed a request after its retries."""


class FileNotStored(StoreError):
    """The queried file has no vector in the store (never ingested, or removed)."""


class DatabaseError(NeoRayError):
    """PostgreSQL failed or is unreachable."""


class DatabaseUnavailable(DatabaseError):
    """PostgreSQL is unreachable (no connection, a broken one, the pool timed out) or could
    not run the statement for now; not a refusal of the data, so another try may succeed."""


class NotFound(NeoRayError):
    """No such repository, or no such file in it, among what was ingested."""


class QueueError(NeoRayError):
    """The Redis queue failed."""


class QueueUnavailable(QueueError):
    """Redis is unreachable."""


class QueueFull(QueueError):
    """The ingest queue is at its cap."""

    def __init__(self, size: int, cap: int, retry_after_s: int) -> None:
        super().__init__(f"ingest queue is full ({size}/{cap}); retry in {retry_after_s} s")
        self.size = size
        self.cap = cap
        self.retry_after_s = retry_after_s


class ActorError(NeoRayError):
    """A named actor (history, store) is missing, died, or failed the call."""


class ActorTimeout(ActorError):
    """A named actor did not answer within the caller's timeout."""
