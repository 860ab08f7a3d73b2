"""The receiver inside the real daemon, over real sockets: handshake, refusals, durability."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.helpers import archived_messages, manifest_lines
from tests.webhook.conftest import SECRET, Harness, running_daemon, sign, wait_for

MARKER = "BODY-MARKER-must-never-be-logged"


def one_new_message(harness: Harness, new_session: bool = True) -> tuple[str, str, bytes]:
    """A message added upstream (no event sent by the simulator) and its event body.

    In a session of its own by default: the ISync one event asks for would otherwise often
    fetch the next message before its event is posted (and the event is then "known").
    """
    (line,) = harness.sim.add_messages(1, new_session=new_session)
    key = (line["session_id"], line["message_id"])
    return key[0], key[1], harness.sim.webhook_event(*key)


def with_text(body: bytes, text: str) -> bytes:
    event = json.loads(body)
    event["payload"]["object"]["message"] = text
    return json.dumps(event).encode()


async def test_url_validation_answers_zooms_exact_token(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as harness:
        body = json.dumps(
            {
                "event": "endpoint.url_validation",
                "event_ts": int(time.time() * 1000),
                "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
            }
        ).encode()
        status, answer = await harness.post(body, sign(body))
        expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256)
        assert status == 200
        assert answer == {
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": expected.hexdigest(),
        }
        # An unsigned challenge is not answered: it would sign anything anyone sends.
        status, _ = await harness.post(body, {"Content-Type": "application/json"})
        assert status == 401
        # The simulator's own handshake, right secret and wrong.
        harness.sim.set_switches(webhook_url=harness.url)
        assert await harness.sim.validate_webhook()
        async with harness.http.post(f"{harness.sim.control_url}/webhook/validate") as response:
            assert await response.json() == {"valid": True}
        harness.sim.set_switches(webhook_secret="not-the-secret")
        assert not await harness.sim.validate_webhook()
        assert harness.sim.stats()["webhooks"]["validations"] == {"failed": 1, "ok": 2}


async def test_a_200_means_the_line_is_already_durable(tmp_path: Path) -> None:
    archived = 0
    async with running_daemon(tmp_path) as harness:
        for n in range(10):
            # Every other message races the ISync the previous event asked for.
            session_id, message_id, body = one_new_message(harness, new_session=n % 2 == 0)
            status, answer = await harness.post(body, sign(body))
            # Read the manifest the instant the 200 is in: the line must be there already.
            lines = harness.lines_for(message_id)
            assert status == 200
            assert lines, "acknowledged but not in the manifest"
            if answer == {"status": "archived"}:
                # (The confirming ISync may already have added the API's version of an
                # outbound message: `delivered` where the event could only say `sent`.)
                assert lines[0]["source"] == "webhook" and lines[0]["session_id"] == session_id
                assert "jwt" not in json.dumps(lines[0])
                archived += 1
            else:
                assert answer == {"status": "known"}  # the ISync was first: no webhook line
                assert [line["source"] for line in lines] == ["sync"]
    assert archived >= 5  # at least every message in a session of its own


async def test_refused_requests_archive_nothing_and_never_log_the_body(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with running_daemon(tmp_path) as harness:
            _, message_id, body = one_new_message(harness)
            body = with_text(body, MARKER)
            now = int(time.time())
            headers = sign(body, now)
            cases: list[tuple[str, bytes, dict[str, str], int]] = [
                ("forged", body, sign(body, now, secret="guessed"), 401),
                ("tampered", with_text(body, MARKER + "!"), headers, 401),
                # 1 s past the tolerance (300 s) is tests/webhook/test_verify.py's, on a fixed
                # clock; here the request is sent seconds after `now` (CI once took more than
                # one, and a time 301 s ahead arrived 299.x s ahead): 60 s of margin.
                ("stale", body, sign(body, now - 301), 401),
                ("future", body, sign(body, now + 360), 401),
                ("no timestamp", body, _without(headers, "x-zm-request-timestamp"), 401),
                ("no signature", body, _without(headers, "x-zm-signature"), 401),
                ("oversized", big := _padded(body, 70_000), sign(big, now), 413),
            ]
            for name, data, hdrs, expected in cases:
                status, _ = await harness.post(data, hdrs)
                assert status == expected, name
            status, _ = await _post_chunked(harness, _padded(body, 70_000))
            assert status == 413, "chunked, no Content-Length"
            other = json.loads(body)
            other["payload"]["account_id"] = "someone-elses-account"
            other_body = json.dumps(other).encode()
            status, _ = await harness.post(other_body, sign(other_body))
            assert status == 403, "another account"
            assert harness.lines_for(message_id) == []
            # The very same body, correctly signed, is archived: the refusals were the checks.
            status, _ = await harness.post(body, sign(body))
            assert status == 200 and len(harness.lines_for(message_id)) == 1
    refused = [entry for entry in logs if entry["event"] == "webhook_refused"]
    assert sorted(entry["reason"] for entry in refused) == sorted(
        [
            "bad_signature",
            "bad_signature",
            "stale_timestamp",
            "future_timestamp",
            "missing_timestamp",
            "missing_signature",
            "too_large",
            "too_large",
            "other_account",
        ]
    )
    logged = json.dumps(logs, default=str)
    assert MARKER not in logged
    assert headers["x-zm-signature"][3:] not in logged and SECRET not in logged


async def test_replays_retries_and_other_events_add_no_line(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as harness:
        _, message_id, body = one_new_message(harness)
        headers = sign(body)
        assert (await harness.post(body, headers))[1] == {"status": "archived"}
        # The exact request again: recognised without touching the archive.
        assert (await harness.post(body, headers))[1] == {"status": "duplicate"}
        # Zoom's retry: same body, new timestamp and signature.
        assert (await harness.post(body, sign(body, int(time.time()) - 5)))[1] == {
            "status": "known"
        }
        # The confirming ISync adds the API's record as a second version; a retry after it
        # still adds nothing (the API's version is never superseded by an event).
        await wait_for(lambda: len(harness.lines_for(message_id)) >= 2, 20, "the sync version")
        assert (await harness.post(body, sign(body, int(time.time()) - 9)))[1] == {
            "status": "known"
        }
        lines = harness.lines_for(message_id)
        assert [line["source"] for line in lines] == ["webhook", "sync"]
        assert lines[1]["supersedes"] == lines[0]["seq"]
        etiquette = json.dumps(
            {
                "event": "phone.sms_etiquette_warn",
                "event_ts": 1,
                "payload": {"account_id": harness.sim.account_id, "object": {"x": 1}},
            }
        ).encode()
        assert await harness.post(etiquette, sign(etiquette)) == (200, {"status": "ignored"})
        bad = json.loads(body)
        del bad["payload"]["object"]["message_id"]
        bad_body = json.dumps(bad).encode()
        assert (await harness.post(bad_body, sign(bad_body)))[0] == 400
        assert (await harness.post(b"not json", sign(b"not json")))[0] == 400


async def test_attachments_are_downloaded_from_the_events_urls(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, sync="poll_interval = 3600") as harness:
        (line,) = harness.sim.add_messages(1, attachments=3)
        key = (line["session_id"], line["message_id"])
        body = harness.sim.webhook_event(*key)
        assert (await harness.post(body, sign(body)))[0] == 200
        wanted = {
            t["attachment_id"]
            for t in harness.sim.ground_truth()
            if t["kind"] == "attachment" and t["message_id"] == key[1]
        }

        def downloaded() -> set[str]:
            return {
                line["attachment_id"]
                for line in manifest_lines(harness.root)
                if line["kind"] == "attachment" and line["message_id"] == key[1]
            }

        await _until(lambda: downloaded() == wanted, 20)
        assert key in archived_messages(harness.root)


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def _padded(body: bytes, size: int) -> bytes:
    event = json.loads(body)
    event["payload"]["object"]["message"] = MARKER + "x" * size
    return json.dumps(event).encode()


async def _post_chunked(harness: Harness, body: bytes) -> tuple[int, Any]:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    async with harness.http.post(harness.url, data=chunks(), headers=sign(body)) as response:
        return response.status, await response.read()


async def _until(predicate: Any, timeout: float) -> None:
    from tests.webhook.conftest import wait_for

    await wait_for(predicate, timeout)
