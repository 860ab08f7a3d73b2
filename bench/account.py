"""What the simulated account holds (from its ground truth) and what the archive holds.

The minimum number of API calls of a backfill is computed here from the truth alone, not from
the archiver's code: one sync call per 250 messages of each session, and one session-list
call per 100 sessions of each calendar-month window (Zoom's list takes at most one month)
from `history_start` to now; `confirming_calls` is the price of evidence: one empty BSync for
each session whose last page was short.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.harness import Simulator

SYNC_PAGE = 250
LIST_PAGE = 100


@dataclass
class Account:
    messages: Counter[str] = field(default_factory=Counter)  # session_id -> messages
    last_message: dict[str, str] = field(default_factory=dict)  # session_id -> date_time
    attachments: dict[str, int] = field(default_factory=dict)  # attachment_id -> size

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    @property
    def attachment_bytes(self) -> int:
        return sum(self.attachments.values())

    def minimum_sync_calls(self) -> int:
        return sum(max(1, math.ceil(n / SYNC_PAGE)) for n in self.messages.values())

    def confirming_calls(self) -> int:
        """Sessions whose last page is short (fewer than 250 messages left): a short page is
        no proof of the start of history, so each earns one confirming BSync (empty)."""
        return sum(1 for n in self.messages.values() if n % SYNC_PAGE)

    def minimum_list_calls(self, start: date, now: datetime | None = None) -> int:
        """One call per month window, one more per further 100 sessions listed in it."""
        now = now or datetime.now(UTC)
        per_month = Counter(text[:7] for text in self.last_message.values())
        calls = 0
        year, month = start.year, start.month
        while (year, month) <= (now.year, now.month):
            calls += max(1, math.ceil(per_month[f"{year:04d}-{month:02d}"] / LIST_PAGE))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return calls


def read_account(sim: Simulator) -> Account:
    account = Account()
    for item in sim.truth():
        if item.get("deleted"):
            continue
        if item["kind"] == "message":
            sid: str = item["session_id"]
            account.messages[sid] += 1
            stamp: str = item["record"]["date_time"]
            if stamp > account.last_message.get(sid, ""):
                account.last_message[sid] = stamp
        elif item["kind"] == "attachment":
            account.attachments[item["attachment_id"]] = int(item["size"])
    return account


def archived_messages(root: Path) -> int:
    """Message lines in the manifest (found in the bytes: a million lines take a second)."""
    total = 0
    for segment in sorted((root / "manifest").glob("*.jsonl")):
        with segment.open("rb") as fh:
            total += sum(1 for line in fh if b'"kind":"message"' in line)
    return total


def archived_attachments(root: Path) -> list[dict[str, Any]]:
    out = []
    for segment in sorted((root / "manifest").glob("*.jsonl")):
        with segment.open("rb") as fh:
            for line in fh:
                if b'"kind":"attachment' in line:
                    out.append(json.loads(line))
    return out
