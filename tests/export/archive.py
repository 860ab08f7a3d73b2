"""A tiny archive writer for export tests: valid chained manifest lines and blobs, written
directly in the public format (DESIGN.md, "Archive format"), with no archiver code involved,
so the export is tested against the contract rather than against its own assumptions."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

ZERO = "0" * 64
RED_PNG_SIZE = 24


def canonical(obj: object) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate cannot be UTF-8: written as a \uXXXX escape, as the archiver does.
    return re.sub(r"[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def png(
    width: int = RED_PNG_SIZE, height: int = RED_PNG_SIZE, rgb: bytes = b"\xff\x00\x00"
) -> bytes:
    """A solid-colour PNG, made by hand: the suite has no imaging library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + rgb * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class Archive:
    """Append lines to ROOT/manifest/NNNNNN.jsonl, `per_segment` lines to a segment."""

    def __init__(self, root: Path, per_segment: int = 4) -> None:
        self.root = root
        self.per_segment = per_segment
        self.seq = 0
        self.prev = ZERO
        (root / "manifest").mkdir(parents=True)
        (root / "blobs" / "sha256").mkdir(parents=True)
        self.lines: dict[int, bytes] = {}  # seq -> exact line bytes (no newline)

    def segment(self, seq: int) -> Path:
        return self.root / "manifest" / f"{(seq - 1) // self.per_segment + 1:06d}.jsonl"

    def line(self, entry: dict[str, Any]) -> int:
        self.seq += 1
        obj = {**entry, "seq": self.seq, "prev": self.prev, "at": "2024-06-01T00:00:00.000000Z"}
        raw = canonical(obj)
        with self.segment(self.seq).open("ab") as handle:
            handle.write(raw + b"\n")
        self.prev = hashlib.sha256(raw).hexdigest()
        self.lines[self.seq] = raw
        return self.seq

    def message(
        self,
        session_id: str,
        message_id: str,
        *,
        text: str = "hello",
        when: str = "2024-05-01T10:00:00Z",
        direction: str = "In",
        sender: tuple[str, str] = ("+12055550100", "Alice"),
        to: tuple[tuple[str, str], ...] = (("+12055550199", "Bob"),),
        attachments: tuple[dict[str, Any], ...] = (),
        supersedes: int | None = None,
        message_type: int = 1,
    ) -> int:
        record = {
            "message_id": message_id,
            "date_time": when,
            "direction": direction,
            "message": text,
            "message_type": message_type,
            "delivery_status": "delivered",
            "sender": {"phone_number": sender[0], "display_name": sender[1]},
            "to_members": [{"phone_number": n, "display_name": d} for n, d in to],
            "attachments": list(attachments),
        }
        entry: dict[str, Any] = {
            "kind": "message",
            "session_id": session_id,
            "message_id": message_id,
            "record": record,
            "digest": hashlib.sha256(canonical(record)).hexdigest(),
            "source": "sync",
        }
        if supersedes is not None:
            entry["supersedes"] = supersedes
        return self.line(entry)

    def blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / "sha256" / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return sha

    def attachment(
        self,
        session_id: str,
        message_id: str,
        attachment_id: str,
        data: bytes,
        *,
        name: str = "photo.png",
        zoom_type: str = "PNG",
        blob: str | None = None,
    ) -> str:
        sha = self.blob(data)
        self.line(
            {
                "kind": "attachment",
                "session_id": session_id,
                "message_id": message_id,
                "attachment_id": attachment_id,
                "name": name,
                "type": zoom_type,
                "size": len(data),
                "sha256": sha,
                "blob": blob if blob is not None else f"blobs/sha256/{sha[:2]}/{sha}",
            }
        )
        return sha

    def failed(self, session_id: str, message_id: str, attachment_id: str, reason: str) -> int:
        return self.line(
            {
                "kind": "attachment_failed",
                "session_id": session_id,
                "message_id": message_id,
                "attachment_id": attachment_id,
                "name": "gone.mp4",
                "type": "VIDEO",
                "size": 10,
                "reason": reason,
                "attempts": 3,
            }
        )

    def event(self, name: str = "start") -> int:
        return self.line({"kind": "event", "event": name})


def attachment_ref(
    attachment_id: str, name: str = "photo.png", zoom_type: str = "PNG"
) -> dict[str, Any]:
    """An entry of a record's `attachments` (download_url already without its jwt)."""
    return {
        "id": attachment_id,
        "name": name,
        "size": 100,
        "type": zoom_type,
        "download_url": f"https://file.zoom.us/file/download/{attachment_id}",
    }
