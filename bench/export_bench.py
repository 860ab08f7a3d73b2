"""Export benchmark: time and peak RSS of `export` over a generated archive.

    .venv/bin/python bench/export_bench.py --messages 1000000

Writes a valid, chained archive directly in the public format (fast: no daemon, no simulator),
then runs the export as a child process and reports its wall time and peak resident memory
(getrusage of the child: the same number `/usr/bin/time -v` prints as "Maximum resident set
size"). One JSON object on stdout, so tests and CI can read it.

The archive looks like real traffic where it matters for memory: many sessions, a share of
edited messages (superseded lines), attachment lines with blobs, events in between.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

SEGMENT_LINES = 50_000
BLOBS = 64  # distinct attachment contents: copying stays cheap, lookups stay realistic


class Writer:
    """Appends chained canonical lines to numbered segments."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seq = 0
        self.prev = "0" * 64
        self.bytes = 0
        self._handle: BinaryIO | None = None
        (root / "manifest").mkdir(parents=True)

    def line(self, entry: dict[str, Any]) -> int:
        if self.seq % SEGMENT_LINES == 0:
            if self._handle:
                self._handle.close()
            name = f"{self.seq // SEGMENT_LINES + 1:06d}.jsonl"
            self._handle = (self.root / "manifest" / name).open("wb", buffering=1 << 20)
        self.seq += 1
        entry.update(seq=self.seq, prev=self.prev, at="2026-01-01T00:00:00.000000Z")
        raw = canonical(entry)
        assert self._handle is not None
        self._handle.write(raw + b"\n")
        self.prev = hashlib.sha256(raw).hexdigest()
        self.bytes += len(raw) + 1
        return self.seq

    def close(self) -> None:
        if self._handle:
            self._handle.close()


def canonical(obj: object) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def make_blobs(root: Path) -> list[str]:
    hashes = []
    for n in range(BLOBS):
        data = f"attachment {n} ".encode() * 100
        sha = hashlib.sha256(data).hexdigest()
        path = root / "blobs" / "sha256" / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        hashes.append(sha)
    return hashes


def generate(root: Path, messages: int, sessions: int) -> Writer:
    """`messages` distinct messages; every 20th is edited once, every 10th has an image."""
    writer = Writer(root)
    blobs = make_blobs(root)
    writer.line({"kind": "event", "event": "start"})
    start = 1_700_000_000
    for n in range(messages):
        session = f"session-{n % sessions:06d}"
        message_id = f"msg-{n:09d}"
        has_image = n % 10 == 0
        record: dict[str, Any] = {
            "message_id": message_id,
            "date_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + n * 7)),
            "direction": "In" if n % 3 else "Out",
            "message": f"Message {n}: the quick brown fox jumps over the lazy dog 🦊",
            "message_type": 2 if has_image else 1,
            "delivery_status": "delivered",
            "sender": {
                "phone_number": f"+1205555{n % 10000:04d}",
                "display_name": f"Person {n % 977}",
            },
            "to_members": [{"phone_number": "+12055550100", "display_name": "Front desk"}],
            "attachments": [],
        }
        if has_image:
            record["attachments"] = [
                {
                    "id": f"att-{n}",
                    "name": f"photo-{n}.jpg",
                    "size": 1500,
                    "type": "JPG",
                    "download_url": f"https://file.zoom.us/file/download/att-{n}",
                }
            ]
        seq = writer.line(_message(session, message_id, record))
        if n % 20 == 0:
            record = {**record, "message": record["message"] + " (edited)"}
            writer.line({**_message(session, message_id, record), "supersedes": seq})
        if has_image:
            sha = blobs[n % BLOBS]
            writer.line(
                {
                    "kind": "attachment",
                    "session_id": session,
                    "message_id": message_id,
                    "attachment_id": f"att-{n}",
                    "name": f"photo-{n}.jpg",
                    "type": "JPG",
                    "size": 1500,
                    "sha256": sha,
                    "blob": f"blobs/sha256/{sha[:2]}/{sha}",
                }
            )
    writer.line({"kind": "event", "event": "stop"})
    writer.close()
    return writer


def _message(session: str, message_id: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "message",
        "session_id": session,
        "message_id": message_id,
        "record": record,
        "digest": hashlib.sha256(canonical(record)).hexdigest(),
        "source": "sync",
    }


def run_export(root: Path, out: Path, extra: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stdout of `python -m archiver.export.cli`."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "archiver.export.cli", str(root), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"export failed ({done.returncode}): {done.stderr}")
    # ru_maxrss of RUSAGE_CHILDREN: the largest child so far, in KiB on Linux. The export is
    # the only child this process starts.
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=0, help="default: messages / 500")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temp folder, removed)")
    parser.add_argument("export_args", nargs="*", help="extra export arguments, after --")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        began = time.monotonic()
        writer = generate(
            work / "root", args.messages, args.sessions or max(args.messages // 500, 1)
        )
        generated = time.monotonic() - began
        seconds, rss_kib, stdout = run_export(work / "root", work / "out", args.export_args)
        out_bytes = sum(p.stat().st_size for p in (work / "out").rglob("*") if p.is_file())
        report = {
            "messages": args.messages,
            "manifest_lines": writer.seq,
            "manifest_bytes": writer.bytes,
            "generate_seconds": round(generated, 1),
            "export_seconds": round(seconds, 1),
            "peak_rss_kib": rss_kib,
            "peak_rss_mib": round(rss_kib / 1024, 1),
            "export_bytes": out_bytes,
            "summary": stdout.strip(),
        }
        print(json.dumps(report, indent=2))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
