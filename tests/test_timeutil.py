"""The one parser and formatter of neo-ray's ISO-8601 `Z` timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from neo_ray.timeutil import format_utc, parse_utc, utcnow_iso


def test_now_is_utc_with_microseconds_and_a_z() -> None:
    stamp = utcnow_iso()
    assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00.000000Z")
    assert abs(parse_utc(stamp) - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00.250000Z", datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-25T12:00:00+02:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),  # naive means UTC
        (" 2026-11-25T10:00:00Z\n", datetime(2026, 11, 25, 10, tzinfo=UTC)),
    ],
)
def test_parse_utc_reads_every_form_we_meet(text: str, expected: datetime) -> None:
    parsed = parse_utc(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "1700000000"])
def test_parse_utc_refuses_what_is_not_iso_8601(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc(text)


def test_format_utc_round_trips_and_converts_offsets() -> None:
    stamp = datetime(2026, 11, 25, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_utc(stamp) == "2026-11-25T10:30:05.123456Z"
    assert format_utc(stamp, micros=False) == "2026-11-25T10:30:05Z"
    assert format_utc(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"
    assert parse_utc(format_utc(stamp)) == stamp
