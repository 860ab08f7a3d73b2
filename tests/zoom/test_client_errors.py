"""The client's error contract over a real loopback server: only the token endpoint refusing
the credentials is account-fatal; a gateway's 404 is no "session gone"; a 401 renews."""

from __future__ import annotations

import pytest

from archiver.errors import (
    SessionGoneError,
    SyncTokenInvalid,
    ZoomAuthError,
    ZoomError,
    ZoomResponseError,
    ZoomSessionError,
    ZoomTransientError,
)
from tests.zoom.scripted import (
    HTML_403,
    HTML_404,
    HTML_502,
    SESSION,
    Reply,
    client_for,
    scripted_zoom,
    zoom_error,
)


async def test_an_html_404_on_sync_is_the_sessions_failure_not_gone() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", Reply.html(404, HTML_404))
        with pytest.raises(ZoomError) as caught:
            await client.sync(SESSION, "FSync", 20)
        assert not isinstance(caught.value, SessionGoneError)
        assert isinstance(caught.value, ZoomSessionError)
        assert (caught.value.status, caught.value.session_id) == (404, SESSION)
        # The next call is answered normally: nothing was concluded about the session.
        page = await client.sync(SESSION, "FSync", 20)
        assert [m["message_id"] for m in page.messages] == ["m1"]


async def test_a_json_404_without_12004_is_the_sessions_failure() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", zoom_error(404, 1001, "Not found"))
        with pytest.raises(ZoomSessionError):
            await client.sync(SESSION, "FSync", 20)


async def test_only_12004_is_session_gone() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", zoom_error(404, 12004, f"Session does not exist: {SESSION}"))
        with pytest.raises(SessionGoneError):
            await client.sync(SESSION, "FSync", 20)


@pytest.mark.parametrize(
    "reply",
    [
        Reply.html(403, HTML_403),
        zoom_error(403, 200, "No permission."),
        zoom_error(403, 4711, "Invalid access token, does not contain scopes."),
    ],
    ids=["html", "json", "scope"],
)
async def test_a_403_is_the_sessions_failure_not_the_accounts(reply: Reply) -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", reply)
        with pytest.raises(ZoomError) as caught:
            await client.sync(SESSION, "ISync", 20, "dG9rZW4")
        assert not isinstance(caught.value, ZoomAuthError)
        assert isinstance(caught.value, ZoomSessionError)
        assert caught.value.status == 403


async def test_a_403_on_the_list_is_discoverys_failure() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("list_sessions", Reply.html(403, HTML_403))
        with pytest.raises(ZoomSessionError) as caught:
            await _list(client)
        assert caught.value.session_id is None


async def test_a_401_renews_the_token_and_goes_on() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        # The first token is refused, and so is the renewed one at first (tokens may take a
        # moment to reach every server): two renewals, then the call goes through.
        zoom.then(
            "sync",
            zoom_error(401, 124, "Access token has expired."),
            zoom_error(401, 124, "Invalid access token."),
        )
        page = await client.sync(SESSION, "FSync", 20)
        assert [m["message_id"] for m in page.messages] == ["m1"]
        assert len(zoom.issued) == 3  # the first token and two renewals
        assert zoom.seen[-1] == ("sync", zoom.issued[-1])  # the newest token was used


async def test_a_401_that_persists_is_transient_never_fatal() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("get_message", *[zoom_error(401, 124, "Invalid access token.")] * 50)
        with pytest.raises(ZoomError) as caught:
            await client.get_message(SESSION, "m1")
        assert isinstance(caught.value, ZoomTransientError)
        assert not isinstance(caught.value, ZoomAuthError)
        tries = zoom.requests("get_message")
        assert 1 < tries < 50  # bounded: the caller retries later
        used = [token for route, token in zoom.seen if route == "get_message"]
        assert used == zoom.issued  # every refusal earned a new token
        # The last refused token is forgotten too: the next call starts with a new one.
        zoom.script.clear()
        await client.get_message(SESSION, "m1")
        assert zoom.seen[-1] == ("get_message", zoom.issued[-1])
        assert len(zoom.issued) == tries + 1


async def test_a_502_html_page_is_retried() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", Reply.html(502, HTML_502), Reply(503, b""), Reply.html(504, HTML_502))
        page = await client.sync(SESSION, "FSync", 20)
        assert [m["message_id"] for m in page.messages] == ["m1"]
        assert zoom.requests("sync") == 4


async def test_a_200_html_page_is_a_response_error() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", Reply.html(200, HTML_404))
        with pytest.raises(ZoomResponseError):
            await client.sync(SESSION, "FSync", 20)


async def test_300_and_7035_ask_for_a_resync() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("sync", zoom_error(400, 300, "The sync token is invalid or expired."))
        zoom.then("sync", zoom_error(400, 7035, "The number of new records exceeds the count."))
        for _ in range(2):
            with pytest.raises(SyncTokenInvalid):
                await client.sync(SESSION, "ISync", 20, "dG9rZW4")


async def test_the_token_endpoint_refusing_the_credentials_is_fatal() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        refusal = {"reason": "Invalid client_id or client_secret", "error": "invalid_client"}
        zoom.then("token", Reply.json(401, refusal))
        with pytest.raises(ZoomAuthError) as caught:
            await client.sync(SESSION, "FSync", 20)
        assert "scripted-secret" not in str(caught.value)
        assert zoom.requests("sync") == 0


async def test_a_wrong_account_id_is_fatal() -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then(
            "token", Reply.json(400, {"reason": "Invalid account", "error": "invalid_request"})
        )
        with pytest.raises(ZoomAuthError):
            await _list(client)


@pytest.mark.parametrize(
    "replies",
    [
        [Reply.html(401, HTML_403), Reply.html(403, HTML_403)],  # a proxy's pages
        [Reply(503, b""), Reply.html(502, HTML_502)],
        [Reply.json(429, {"code": 429, "message": "Too many requests."})],
        [Reply.json(200, {"token_type": "bearer"})],  # a 200 without a token
    ],
    ids=["html", "5xx", "429", "no-token"],
)
async def test_a_token_endpoint_that_misbehaves_is_retried_not_fatal(
    replies: list[Reply],
) -> None:
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.then("token", *replies)
        page = await client.sync(SESSION, "FSync", 20)
        assert [m["message_id"] for m in page.messages] == ["m1"]
        assert zoom.requests("token") == len(replies) + 1


async def _list(client):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return await client.list_sessions(
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 1, 31, tzinfo=UTC),
        session_type="all",
    )
