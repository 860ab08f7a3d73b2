"""Pure checks on attachment URLs: scheme, host allow-list, address class, JWT expiry.

The URL carries a credential (its `jwt`), so nothing here ever puts the query string into an
error message: `describe()` gives the scheme, host and path only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import jwt


class UrlRefused(ValueError):
    """The URL may not be fetched; `reason` is short and safe to record."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allowed_schemes: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    allow_private_addresses: bool


def describe(url: str) -> str:
    """scheme://host/path with no query: safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """`zoom.us` matches itself; `*.zoom.us` matches any subdomain (not zoom.us itself)."""
    host = host.lower().rstrip(".")
    for raw in patterns:
        pattern = raw.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def address_is_public(address: str) -> bool:
    """False for loopback, private, link-local, multicast, reserved and unspecified addresses
    (IPv4-mapped IPv6 addresses are judged by the IPv4 address inside)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_url(url: str, policy: UrlPolicy) -> str:
    """Return the URL's host if it may be fetched under `policy`, else raise UrlRefused."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise UrlRefused("malformed URL") from None
    if parts.scheme not in policy.allowed_schemes:
        raise UrlRefused(f"scheme {parts.scheme or '(none)'!r} is not allowed")
    if not host:
        raise UrlRefused("URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("URL carries user credentials")
    if not host_allowed(host, policy.allowed_hosts):
        raise UrlRefused(f"host {host!r} is not in downloads.allowed_hosts")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if (
        literal is not None
        and not policy.allow_private_addresses
        and not address_is_public(str(literal))
    ):
        raise UrlRefused(f"address {host} is private, loopback or link-local")
    return host


def jwt_of(url: str) -> str | None:
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "jwt":
            return value
    return None


@dataclass(frozen=True, slots=True)
class JwtClaims:
    exp: float | None
    dig: str | None


def jwt_claims(url: str) -> JwtClaims:
    """`exp` and `dig` from the URL's JWT, read with PyJWT without verifying the signature:
    we are not the audience and hold no key; the claims only schedule our own work."""
    token = jwt_of(url)
    if not token:
        return JwtClaims(None, None)
    try:
        claims = jwt.decode(
            token,
            options={"verify_signature": False, "verify_exp": False, "verify_aud": False},
        )
    except jwt.PyJWTError:
        return JwtClaims(None, None)
    exp = claims.get("exp")
    dig = claims.get("dig")
    return JwtClaims(
        float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
        dig.lower() if isinstance(dig, str) and len(dig) == 64 else None,
    )
