"""UTC timestamps as neo-ray writes them (ISO 8601 with a `Z`) and the one parser for them."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow_iso() -> str:
    """Now, UTC, ISO 8601 with microseconds and a `Z` (the task and record timestamp format)."""
    return format_utc(datetime.now(UTC))


def format_utc(stamp: datetime, *, micros: bool = True) -> str:
    """`stamp` in UTC as ISO 8601 with a `Z`; a naive datetime is taken to be UTC already."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if micros else "%Y-%m-%dT%H:%M:%SZ"
    return stamp.astimezone(UTC).strftime(pattern)


def parse_utc(text: str) -> datetime:
    """An aware UTC datetime from ISO 8601 (`Z` or an offset; no offset means UTC).

    Raises ValueError for text that is not ISO 8601; callers translate it where it matters.
    """
    stamp = datetime.fromisoformat(text.strip())  # Python 3.11 reads the `Z` itself
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
