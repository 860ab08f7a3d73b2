"""Pure time-window arithmetic for session discovery.

Zoom's session list takes `from`/`to` spanning at most one month. Calendar months are used,
never "30 days", because a month-long window that starts on the 31st would overrun February
by a strict reading of "one month".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

ONE_SECOND = timedelta(seconds=1)


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(moment: datetime) -> datetime:
    start = month_start(moment)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def month_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Inclusive [from, to] windows at second resolution covering start..end, each inside one
    calendar month. Empty when end < start."""
    start = start.astimezone(UTC).replace(microsecond=0)
    end = end.astimezone(UTC).replace(microsecond=0)
    windows = []
    cursor = start
    while cursor <= end:
        boundary = next_month(cursor)
        window_end = min(end, boundary - ONE_SECOND)
        windows.append((cursor, window_end))
        cursor = boundary
    return windows


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
