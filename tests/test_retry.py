"""The one retry policy: exponential backoff, capped; transient errors retried, others not."""

from __future__ import annotations

import pytest
from test_store import FlakyCall as Flaky  # fails with the given errors in turn, then "ok"

from neo_ray.retry import Backoff


def test_delays_grow_and_stop_at_the_cap() -> None:
    policy = Backoff(first_s=0.1, factor=2.0, cap_s=1.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_call_heals_after_transient_failures_and_reports_each() -> None:
    sleeps: list[float] = []
    seen: list[tuple[int, str]] = []
    flaky = Flaky(OSError("reset"), OSError("again"))
    result = Backoff(first_s=0.5, attempts=3).call(
        flaky,
        retry_on=(OSError,),
        on_failure=lambda n, exc: seen.append((n, str(exc))),
        sleep=sleeps.append,
    )
    assert (result, flaky.calls, sleeps) == ("ok", 3, [0.5, 1.0])
    assert seen == [(1, "reset"), (2, "again")]


def test_call_raises_the_last_error_once_attempts_run_out() -> None:
    sleeps: list[float] = []
    flaky = Flaky(*(OSError(f"down {i}") for i in range(5)))
    with pytest.raises(OSError, match="down 2"):
        Backoff(first_s=0.1, attempts=3).call(flaky, retry_on=(OSError,), sleep=sleeps.append)
    assert (flaky.calls, sleeps) == (3, [0.1, 0.2])


def test_final_and_foreign_errors_are_not_retried() -> None:
    final = Flaky(ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        Backoff().call(
            final,
            retry_on=(ValueError, OSError),
            transient=lambda exc: isinstance(exc, OSError),
            sleep=lambda s: None,
        )
    foreign = Flaky(KeyError("not ours"))
    with pytest.raises(KeyError):
        Backoff().call(foreign, retry_on=(OSError,), sleep=lambda s: None)
    assert final.calls == foreign.calls == 1


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"first_s": -1.0}, {"factor": 0.5}, {"cap_s": -1.0}]
)
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
