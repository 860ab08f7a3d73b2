"""Pure URL checks: scheme, host allow-list, address class, JWT claims."""

from __future__ import annotations

import time

import jwt
import pytest

from archiver.downloads.urls import (
    UrlPolicy,
    UrlRefused,
    address_is_public,
    check_url,
    describe,
    host_allowed,
    jwt_claims,
)

ZOOM = UrlPolicy(("https",), ("zoom.us", "*.zoom.us"), allow_private_addresses=False)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("zoom.us", True),
        ("file.zoom.us", True),
        ("a.b.zoom.us", True),
        ("ZOOM.US.", True),
        ("evilzoom.us", False),
        ("zoom.us.evil.com", False),
        ("us", False),
        ("", False),
    ],
)
def test_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, ("zoom.us", "*.zoom.us")) is allowed


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("100.64.0.1", False),
    ],
)
def test_address_is_public(address: str, public: bool) -> None:
    assert address_is_public(address) is public


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://file.zoom.us/file/download/x?jwt=a", "scheme 'http'"),
        ("ftp://file.zoom.us/x", "scheme 'ftp'"),
        ("https://evil.example/file?jwt=a", "not in downloads.allowed_hosts"),
        ("https://user:pw@file.zoom.us/x", "user credentials"),
        ("https:///nohost", "no host"),
        ("https://file.zoom.us:99999/x", "malformed"),
        ("file:///etc/passwd", "scheme 'file'"),
    ],
)
def test_refused_urls(url: str, fragment: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url(url, ZOOM)
    assert fragment in info.value.reason
    assert "jwt" not in info.value.reason


def test_private_literal_refused_unless_allowed() -> None:
    policy = UrlPolicy(("https",), ("127.0.0.1", "10.0.0.1"), allow_private_addresses=False)
    with pytest.raises(UrlRefused, match="private"):
        check_url("https://127.0.0.1/x", policy)
    with pytest.raises(UrlRefused, match="private"):
        check_url("https://10.0.0.1/x", policy)
    relaxed = UrlPolicy(("https",), ("127.0.0.1",), allow_private_addresses=True)
    assert check_url("https://127.0.0.1/x", relaxed) == "127.0.0.1"


def test_allowed_url() -> None:
    assert check_url("https://file.zoom.us/file/download/abc?jwt=x", ZOOM) == "file.zoom.us"


def test_describe_drops_the_query() -> None:
    assert describe("https://file.zoom.us/file/download/a?jwt=secret") == (
        "https://file.zoom.us/file/download/a"
    )


def test_jwt_claims_read_without_the_key() -> None:
    exp = int(time.time()) + 100
    token = jwt.encode(
        {"iss": "crossfile", "aud": "file", "dig": "ab" * 32, "exp": exp}, "k" * 32, "HS256"
    )
    claims = jwt_claims(f"https://file.zoom.us/file/download/a?x=1&jwt={token}")
    assert claims.exp == exp and claims.dig == "ab" * 32
    expired = jwt.encode({"exp": 5}, "k" * 32, "HS256")
    assert jwt_claims(f"https://h/x?jwt={expired}").exp == 5.0  # expiry is read, not enforced
    assert jwt_claims("https://h/x?jwt=garbage").exp is None
    assert jwt_claims("https://h/x").exp is None
    short_dig = jwt.encode({"dig": "abc"}, "k" * 32, "HS256")
    assert jwt_claims(f"https://h/x?jwt={short_dig}").dig is None
