"""Plain Python facades over the named actors, in the manner of Ray's `ray/util/queue.py`.

Callers of the history and store actors go through these: each call has a timeout, nobody
waits forever, and Ray's errors come out as neo-ray's (errors.py):

    actor not found, dead, restarting past its budget   → ActorError
    no answer within the timeout                         → ActorTimeout
    the actor's method raised a NeoRayError              → that same error (QueueUnavailable, ...)
    the actor's method raised anything else              → ActorError, with the cause chained

The actor is looked up by name at each call (never passed around, never cached): a facade is
cheap to build, and an actor that was removed and created again is found again.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from neo_ray.errors import ActorError, ActorTimeout, NeoRayError
from neo_ray.models import JobRecord, RepoGraph
from neo_ray.names import HISTORY, NAMESPACE, STORE
from neo_ray.stores.vectors import Mode as SearchMode
from neo_ray.stores.vectors import Neighbor, Scope, Tokens

# Writing a record is two Redis scripts and, with PostgreSQL, an insert (parked when that
# fails): seconds at worst. Half a minute means something is wrong; the caller then retries.
HISTORY_TIMEOUT_S = 30.0
# Quick questions (ping, count, similar) answer in milliseconds.
QUERY_TIMEOUT_S = 10.0
# Writing a repository's vectors grows with its size: 100,000 files took seconds here.
UPLOAD_TIMEOUT_S = 600.0

log = logging.getLogger(__name__)


class ActorFacade:
    """A named actor behind calls with timeouts and translated errors."""

    def __init__(self, name: str, *, namespace: str = NAMESPACE, timeout_s: float) -> None:
        self.name = name
        self.namespace = namespace
        self.timeout_s = timeout_s

    def _actor(self) -> Any:
        try:
            return ray.get_actor(self.name, namespace=self.namespace)
        except ValueError as exc:  # Ray's "Failed to look up actor with name ..."
            raise ActorError(f"no actor {self.name!r} in namespace {self.namespace!r}") from exc

    def call(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """`actor.method.remote(*args, **kwargs)`, waited for at most `timeout_s` (default: the
        facade's)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            ref = getattr(self._actor(), method).remote(*args, **kwargs)
            return ray.get(ref, timeout=timeout)
        except GetTimeoutError as exc:
            raise ActorTimeout(
                f"actor {self.name!r} did not answer {method}() within {timeout:g} s"
            ) from exc
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, NeoRayError):
                raise cause from exc
            raise ActorError(f"actor {self.name!r} failed {method}(): {cause!r}") from exc
        except RayActorError as exc:
            raise ActorError(f"actor {self.name!r} is unavailable: {type(exc).__name__}") from exc
        except RayError as exc:
            raise ActorError(f"calling {self.name!r}.{method}() failed: {exc}") from exc

    def ping(self) -> bool:
        """True when the actor answers within the timeout; False (never an exception) if not."""
        try:
            return bool(self.call("ping"))
        except NeoRayError:
            log.debug("actor %s did not answer ping", self.name, exc_info=True)
            return False


class History(ActorFacade):
    """The history actor: the one writer of job records."""

    def __init__(self, *, name: str = HISTORY, timeout_s: float = HISTORY_TIMEOUT_S) -> None:
        super().__init__(name, timeout_s=timeout_s)

    def record(self, record: JobRecord) -> bool:
        """Write one final record (Redis, then PostgreSQL or the parking list); False when
        the job already had another (it ran twice; the first record stands)."""
        return bool(self.call("record", record))

    def pending(self) -> int:
        """Records not yet in PostgreSQL."""
        return int(self.call("pending"))

    def metadata_parked(self) -> None:
        """Say that a worker parked a repository's metadata (written at the next retry)."""
        self.call("metadata_parked")

    def pending_metadata(self) -> int:
        """Repositories whose metadata is not yet in PostgreSQL."""
        return int(self.call("pending_metadata"))


class Store(ActorFacade):
    """The store actor: the one owner of the embedded vector store."""

    def __init__(self, *, name: str = STORE, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        super().__init__(name, timeout_s=timeout_s)

    def replace_repo(
        self,
        graph: RepoGraph,
        vectors: np.ndarray,
        repo_url: str,
        job_id: str | None = None,
        tokens: Tokens | None = None,
    ) -> int:
        """Write a repository's vectors and lexical vectors (stale ones removed); the count."""
        args = (graph, vectors, repo_url, job_id, dict(tokens) if tokens else None)
        return int(self.call("replace_repo", *args, timeout_s=UPLOAD_TIMEOUT_S))

    def similar(
        self,
        repo_url: str,
        file_path: str,
        k: int = 10,
        *,
        scope: Scope = "repo",
        mode: SearchMode = "structural",
    ) -> list[Neighbor]:
        return list(self.call("similar", repo_url, file_path, k, scope=scope, mode=mode))

    def count(self, repo_url: str | None = None) -> int:
        return int(self.call("count", repo_url))
