"""Which received message records need a manifest line (DESIGN.md, invariant 1).

Pure: the writer looks up what is already archived and hands it in as `known`. A record whose
content (digest of the jwt-stripped record) was archived before for that message gets no line;
new content of a known message gets a line that `supersedes` the message's latest line; an
unknown message gets a plain line. Every earlier version counts, not only the latest, so content
that alternates (a webhook payload and the sync record of the same message differ in shape)
never adds a line each time it comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from archiver.store.manifest import canonical, sha256_hex, strip_jwt

# message_id -> [(digest, seq)] of each archived version
Known = dict[str, list[tuple[str, int]]]
# A key "download_url" always shows as this in canonical JSON; a record without it has nothing
# to strip and is archived as the very object received, without a copy.
_URL_KEY: Final = b'"download_url"'


@dataclass(frozen=True, slots=True)
class Plan:
    entries: list[dict[str, Any]]
    encoded: list[bytes]  # canonical bytes of each entry's record, for `canonical_with`
    new: int
    changed: int
    unchanged: int


def plan_messages(
    session_id: str,
    records: Sequence[Mapping[str, Any]],
    source: str,
    known: Known,
    first_seq: int,
) -> Plan:
    """Entries for the records that need a line; they will get seqs first_seq, first_seq+1...

    `known` is updated in place with the planned lines, so a message repeated inside one page
    (Zoom's own examples do it) is judged against its first copy.
    """
    entries: list[dict[str, Any]] = []
    encoded: list[bytes] = []
    new = changed = unchanged = 0
    for record in records:
        message_id = record["message_id"]
        raw = canonical(record)
        if _URL_KEY in raw:
            record = strip_jwt(record)  # noqa: PLW2901 - archive the stripped copy
            raw = canonical(record)
        digest = sha256_hex(raw)
        versions = known.get(message_id)
        if versions and any(seen == digest for seen, _ in versions):
            unchanged += 1
            continue
        entry: dict[str, Any] = {
            "kind": "message",
            "session_id": session_id,
            "message_id": message_id,
            "record": record,
            "digest": digest,
            "source": source,
        }
        if not versions:  # the common case: a message not archived before
            known[message_id] = [(digest, first_seq + len(entries))]
            new += 1
        else:
            entry["supersedes"] = max(seq for _, seq in versions)
            versions.append((digest, first_seq + len(entries)))
            changed += 1
        entries.append(entry)
        encoded.append(raw)
    return Plan(entries, encoded, new, changed, unchanged)
