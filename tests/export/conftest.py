"""Fixtures for the export tests: small archives written in the public format."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.archive import Archive, attachment_ref, png


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "root")


@pytest.fixture
def sample(archive: Archive) -> Archive:
    """Two sessions; one message edited once; an image, a failed and a pending attachment."""
    a = archive
    a.event("start")
    a.message("S1", "m1", text="Hi Bob 👋", when="2024-05-01T09:58:01Z")
    a.message(
        "S1",
        "m2",
        text="Here, see",
        direction="Out",
        sender=("+12055550199", "Bob"),
        to=(("+12055550100", "Alice"),),
        when="2024-05-01T10:01:10Z",
        attachments=(attachment_ref("a1"), attachment_ref("a2", "clip.mp4", "VIDEO")),
        message_type=2,
    )
    a.attachment("S1", "m2", "a1", png())
    a.failed("S1", "m2", "a2", "over max_bytes")
    first = a.message("S1", "m3", text="draft", when="2024-05-02T08:00:00Z")
    a.message("S1", "m3", text="final", when="2024-05-02T08:00:00Z", supersedes=first)
    a.message(
        "S2",
        "x1",
        text="other conversation",
        when="2024-04-30T23:59:59Z",
        sender=("+447700900123", "Carol"),
        to=(("+12055550100", "Alice"),),
        attachments=(attachment_ref("p1", "later.png"),),
    )
    a.event("stop")
    return a
