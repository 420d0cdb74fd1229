"""The one retry policy: exponential backoff with a cap, for calls and for loops that poll.

Used by the vector store (each request, a few attempts) and by the bridge (its loop while
Redis is away, without end). Errors stay the caller's: `Backoff.call` re-raises the last one,
and the caller translates it (StoreError, QueueUnavailable, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

FailureHook = Callable[[int, BaseException], None]
"""Called after every failed attempt with (attempt number from 1, error)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait `first_s`, then × `factor` after each further failure, never more than `cap_s`."""

    first_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 30.0
    attempts: int = 3
    """Tries `call` makes in all (the first one included)."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be ≥ 1, got {self.attempts}")
        if self.first_s < 0 or self.factor < 1 or self.cap_s < 0:
            raise ValueError(f"a backoff must not shrink or be negative: {self}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (1 → `first_s`)."""
        return min(self.first_s * self.factor ** max(failures - 1, 0), self.cap_s)

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_on: tuple[type[BaseException], ...],
        transient: Callable[[BaseException], bool] = lambda exc: True,
        on_failure: FailureHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Run `fn`; after an error in `retry_on` that is `transient`, wait and try again.

        Raises the error itself at once when it is not transient, or once `attempts` tries
        failed; errors outside `retry_on` pass through untouched.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except retry_on as exc:
                if on_failure is not None:
                    on_failure(attempt, exc)
                if attempt == self.attempts or not transient(exc):
                    raise
                sleep(self.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")
