"""What a reviewer asked for: the export filter, and whether one message record matches it.

Pure functions only. Every value read from a record came from Zoom and is untrusted: a field
may be missing, of the wrong type or hostile, and none of that may raise here; such a message
simply does not match a filter that needs the field.

Filters combine with AND; the repeated values of one filter (`--session A --session B`) combine
with OR.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from archiver.errors import ArchiverError

FORMATS: Final = ("html", "csv", "jsonl")
DIRECTIONS: Final = ("in", "out")

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


class ExportUsageError(ArchiverError, ValueError):
    """The export cannot start as asked (bad date, bad folder, not an archive): exit 2."""


@dataclass(frozen=True)
class ExportFilter:
    """Which messages to export. Empty tuples and None mean "no restriction"."""

    sessions: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    start: datetime | None = None  # inclusive, UTC
    end: datetime | None = None  # inclusive, UTC
    direction: str | None = None  # "in" or "out"
    all_versions: bool = False
    formats: tuple[str, ...] = FORMATS
    csv_bom: bool = False
    # Digits of each --phone, derived once: "+1 (205) 555-0100" and "+12055550100" are one number.
    phone_digits: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digits = frozenset(phone_key(p) for p in self.phones)
        if "" in digits:
            raise ExportUsageError("--phone needs at least one digit")
        object.__setattr__(self, "phone_digits", digits)
        if self.start and self.end and self.start > self.end:
            raise ExportUsageError("--from is after --to")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ExportUsageError(f"--direction must be one of {', '.join(DIRECTIONS)}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ExportUsageError(f"--format must be among {', '.join(FORMATS)}")

    def to_json(self) -> dict[str, Any]:
        """The filter as recorded in export.json: exactly what was asked, in stable form."""
        return {
            "sessions": list(self.sessions),
            "phones": list(self.phones),
            "from": _rfc3339(self.start),
            "to": _rfc3339(self.end),
            "direction": self.direction,
            "all_versions": self.all_versions,
            "formats": list(self.formats),
            "csv_bom": self.csv_bom,
        }


def parse_when(text: str, *, end_of_day: bool) -> datetime:
    """A --from/--to value: `YYYY-MM-DD` (a whole UTC day) or an ISO 8601 time with offset.

    A bare date given to --to means the end of that day, so `--from D --to D` is the whole day.
    """
    text = text.strip()
    try:
        if _DATE_ONLY.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end_of_day else time.min, UTC).replace(
                microsecond=0
            )
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ExportUsageError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from exc
    if when.tzinfo is None:
        # A time without an offset is ambiguous; Zoom's times are UTC, so read it as UTC.
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _rfc3339(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def phone_key(number: str) -> str:
    """The digits of a phone number: how numbers are compared (formatting is ignored)."""
    return "".join(ch for ch in number if "0" <= ch <= "9")


def record_epoch(record: Mapping[str, Any]) -> int | None:
    """`date_time` as Unix seconds, or None when it is missing or not a time."""
    value = record.get("date_time")
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def epoch_text(epoch: int | None) -> str:
    """Unix seconds as `2022-03-23 02:58:01 UTC`, the one time format of the export."""
    if epoch is None:
        return "(no time)"
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def as_dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: object) -> str:
    """A scalar field as text ("" when missing); containers are not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return ""


def participants(record: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The sender, then every recipient: each a dict (possibly empty)."""
    yield as_dict(record.get("sender"))
    for member in as_list(record.get("to_members")):
        yield as_dict(member)


def matches(flt: ExportFilter, session_id: str, record: Mapping[str, Any]) -> bool:
    """Whether one message (its latest version, by default) falls inside the filter."""
    if flt.sessions and session_id not in flt.sessions:
        return False
    if flt.direction is not None and as_text(record.get("direction")).lower() != flt.direction:
        return False
    if (flt.start is not None or flt.end is not None) and not _in_range(flt, record):
        return False
    if flt.phone_digits:
        numbers = {phone_key(as_text(p.get("phone_number"))) for p in participants(record)}
        return not numbers.isdisjoint(flt.phone_digits)
    return True


def _in_range(flt: ExportFilter, record: Mapping[str, Any]) -> bool:
    epoch = record_epoch(record)
    if epoch is None:
        return False  # a message with no readable time cannot be shown to be in the range
    after_start = flt.start is None or epoch >= flt.start.timestamp()
    return after_start and (flt.end is None or epoch <= flt.end.timestamp())
