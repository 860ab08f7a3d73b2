"""The token reply's `api_url` decides nothing unless it is https on a Zoom host (issue 18)."""

from __future__ import annotations

import pytest

from archiver.zoom.auth import regional_api_base, regional_refusal
from tests.zoom.scripted import SESSION, Reply, client_for, scripted_zoom

CONFIGURED = "https://api.zoom.us/v2"


@pytest.mark.parametrize(
    ("token_api_url", "expected"),
    [
        (None, CONFIGURED),
        ("", CONFIGURED),
        ("https://api-eu.zoom.us", "https://api-eu.zoom.us/v2"),
        ("https://api.zoom.us/", CONFIGURED),
        ("https://zoom.us", "https://zoom.us/v2"),
        ("https://API-EU.ZOOM.US", "https://API-EU.ZOOM.US/v2"),
        ("https://api-eu.zoom.us/v2/", "https://api-eu.zoom.us/v2"),
        # Refused, the configured URL stays:
        ("http://api-eu.zoom.us", CONFIGURED),  # clear text
        ("https://evil.example.com", CONFIGURED),
        ("https://zoom.us.evil.example.com", CONFIGURED),
        ("https://evilzoom.us", CONFIGURED),
        ("https://api.zoom.us@evil.example.com", CONFIGURED),
        ("https://user@api-eu.zoom.us", CONFIGURED),
        ("https://169.254.169.254", CONFIGURED),
        ("https://10.0.0.5:8443", CONFIGURED),
        ("https://api-eu.zoom.us:notaport", CONFIGURED),
        ("ftp://api-eu.zoom.us", CONFIGURED),
        ("//api-eu.zoom.us", CONFIGURED),
        ("https://api\uff0f.zoom.us", CONFIGURED),  # urlsplit raises ValueError (NFKC)
        ("https://\u0430pi.zoom.us", CONFIGURED),  # a Cyrillic a: not a plain ASCII host
        # urllib reads a zoom.us host, yarl (which sends) another or none (review of issue 13)
        ("https://evil.com\\.zoom.us", CONFIGURED),
        ("https://evil.com\\@api.zoom.us", CONFIGURED),
        ("https://api.zoom.us\t", CONFIGURED),
        ("https://api-eu.zoom.us /v2", CONFIGURED),
    ],
)
def test_regional_api_base(token_api_url: str | None, expected: str) -> None:
    assert regional_api_base(CONFIGURED, token_api_url) == expected


def test_the_configured_host_itself_is_always_acceptable() -> None:
    # The simulator's loopback case: its token reply names the configured host, by configuration.
    assert regional_refusal("http://127.0.0.1:8080/v2", "http://127.0.0.1:8080") is None
    assert regional_api_base("http://127.0.0.1:8080/v2", "http://127.0.0.1:8080") == (
        "http://127.0.0.1:8080/v2"
    )
    assert regional_refusal(CONFIGURED, "http://127.0.0.1:8080") == "not https"


async def test_a_token_reply_naming_another_host_gets_no_api_call_and_no_token() -> None:
    async with scripted_zoom() as zoom, scripted_zoom() as foreign, client_for(zoom) as client:
        zoom.issued.append("tok-spoofed-reply")
        zoom.then(
            "token",
            Reply.json(
                200,
                {
                    "access_token": "tok-spoofed-reply",
                    "token_type": "bearer",
                    "expires_in": 3599,
                    "api_url": foreign.base,  # another host, and http
                },
            ),
        )
        page = await client.sync(SESSION, "FSync", 20)
        assert [m["message_id"] for m in page.messages] == ["m1"]
        assert foreign.seen == []  # never called, never sent the token
        assert zoom.seen[-1] == ("sync", "tok-spoofed-reply")


@pytest.mark.parametrize(
    ("token_api_url", "reason"),
    [("https://api\uff0f.zoom.us", "not a URL"), ("https://\u0430pi.zoom.us", "not a plain host")],
)
def test_an_unparseable_api_url_is_a_refusal_not_an_exception(
    token_api_url: str, reason: str
) -> None:
    assert regional_refusal(CONFIGURED, token_api_url) == reason


async def test_a_token_reply_whose_api_url_urlsplit_rejects_changes_nothing() -> None:
    # Fails on 2eba1d4: urlsplit's ValueError came out of the token request, every renewal.
    async with scripted_zoom() as zoom, client_for(zoom) as client:
        zoom.issued.append("tok-odd-reply")
        zoom.then(
            "token",
            Reply.json(
                200,
                {
                    "access_token": "tok-odd-reply",
                    "token_type": "bearer",
                    "expires_in": 3599,
                    "api_url": "https://api\uff0f.zoom.us",
                },
            ),
        )
        page = await client.sync(SESSION, "FSync", 20)
        assert [m["message_id"] for m in page.messages] == ["m1"]
        assert zoom.seen[-1] == ("sync", "tok-odd-reply")
