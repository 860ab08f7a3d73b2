"""Fixtures for the store tests: a prepared archive root, its state, and a writer factory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter


def message(n: int, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A Zoom-shaped message record."""
    return {
        "message_id": f"msg-{n}",
        "date_time": "2024-03-01T10:00:00Z",
        "direction": "In",
        "message": f"{text} {n}",
        "message_type": 1,
        "sender": {"phone_number": "+15550100", "display_name": "Alice"},
        "to_members": [{"phone_number": "+15550101"}],
        **extra,
    }


def mms(
    n: int, attachment_ids: list[str], jwt: str = "eyJhbGciOiJIUzI1NiJ9.e30.sig"
) -> dict[str, Any]:
    return message(
        n,
        message_type=2,
        attachments=[
            {
                "id": aid,
                "name": f"{aid}.png",
                "size": 10,
                "type": "PNG",
                "download_url": f"https://file.zoom.us/file/download/{aid}?jwt={jwt}",
            }
            for aid in attachment_ids
        ],
    )


def read_lines(root: Path) -> list[dict[str, Any]]:
    """Every manifest line, parsed, in order."""
    out: list[dict[str, Any]] = []
    for path in sorted((root / "manifest").glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return out


def segment(root: Path, n: int = 1) -> Path:
    return root / "manifest" / f"{n:06d}.jsonl"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "archive"
    prepare_root(path)
    return path


@pytest.fixture
def state(root: Path) -> Iterator[State]:
    db = State.open(root)
    yield db
    db.close()


OpenWriter = Callable[..., Any]


@pytest.fixture
async def open_writer(root: Path, state: State) -> AsyncIterator[OpenWriter]:
    """`await open_writer(**kwargs)`: a writer on `root`, closed at the end of the test."""
    writers: list[ManifestWriter] = []

    async def factory(**kwargs: Any) -> ManifestWriter:
        writer = await ManifestWriter.open(root, state, **kwargs)
        writers.append(writer)
        return writer

    yield factory
    for writer in writers:
        await writer.close()
