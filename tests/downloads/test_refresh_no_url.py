"""A URL refresh whose answer lists the attachment without a usable `download_url` (absent or
"") parks the job (`no_url`) and asks again later: listed is evidence the attachment exists.
Only a record that no longer lists the attachment id fails it as gone upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.downloads import manager as manager_module
from tests.downloads.rig import running_manager
from tests.zoom.scripted import Reply, record, scripted_zoom


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "RETRY_BASE", 0.01)
    monkeypatch.setattr(manager_module, "PARK_BASE", 0.01)


@pytest.mark.parametrize("url", [None, ""], ids=["absent", "empty"])
async def test_a_listed_attachment_without_url_is_parked_then_fetched(
    tmp_path: Path, url: str | None
) -> None:
    listed = record("m1", url="https://files.invalid/x")
    att = listed["attachments"][0]
    if url is None:
        del att["download_url"]
    else:
        att["download_url"] = url
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        zoom.then("get_message", Reply.json(200, listed))  # once; then the normal record
        await rig.archive("m1")
        rig.manager.load_pending()  # as after a restart: the URL must be fetched again
        await rig.settled("m1")
        assert rig.lines("attachment_failed") == []
        assert len(rig.lines("attachment")) == 1
        assert rig.manager.stats.parkings_by_reason.get(manager_module.NO_URL) == 1
