"""Reading an export back in tests."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from archiver.export import ExportFilter, ExportResult, export_archive


def export(root: Path, out: Path, **kwargs: Any) -> ExportResult:
    return export_archive(root, out, ExportFilter(**kwargs))


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "messages.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def ids(out: Path) -> list[str]:
    return [row["message_id"] for row in csv_rows(out)]


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "export.json").read_text())
    return data


def files_on_disk(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def check_hashes(out: Path) -> dict[str, Any]:
    """export.json lists every other file of the export, with its true SHA-256 and size."""
    data = manifest(out)
    listed = {entry["path"]: entry for entry in data["files"]}
    assert set(listed) == files_on_disk(out) - {"export.json"}
    for path, entry in listed.items():
        content = (out / path).read_bytes()
        assert hashlib.sha256(content).hexdigest() == entry["sha256"], path
        assert len(content) == entry["size"], path
    return data


def page_of(out: Path, session_id: str) -> str:
    from archiver.export.files import session_file

    return (out / session_file(session_id)).read_text(encoding="utf-8")
