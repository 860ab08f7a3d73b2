"""Credentials: OAuth access tokens for the API, HS256 JWTs for attachment URLs.

Access tokens are opaque random strings remembered with their expiry; a revoked token is
forgotten, so it reads as unknown ("Invalid access token."). Attachment JWTs carry Zoom's
claims `{"iss": "crossfile", "aud": "file", "dig": <sha256 hex>, "exp": <unix s>}`.

Signing costs ~25 us, and a 250-message page can hold a hundred URLs, so a JWT is reused
while it keeps at least 90% of `jwt_lifetime` (`Expiry`): a URL handed out may expire up to a
tenth of its lifetime earlier than one signed that instant.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

from archiver.simulator.model import Attachment
from archiver.simulator.protocol import MSG_124_EXPIRED, MSG_124_INVALID

SCOPE = "phone:read:admin phone_sms:read:admin"
REUSE_FRACTION = 0.1


@dataclass(frozen=True)
class Expiry:
    """The `exp` a JWT signed now gets, and the oldest `exp` still good enough to hand out."""

    new: int
    oldest: float

    @classmethod
    def at(cls, lifetime: float, now: float | None = None) -> Expiry:
        now = time.time() if now is None else now
        return cls(int(now + lifetime), now + lifetime - REUSE_FRACTION * abs(lifetime))

    def accepts(self, earliest: int, latest: int) -> bool:
        # `latest` above `new` means the lifetime was shortened since: sign again.
        return self.oldest <= earliest and latest <= self.new


class AccessTokens:
    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}  # token -> monotonic expiry

    def issue(self, lifetime: float, now: float) -> str:
        self._forget_expired(now - 3600.0)
        token = "sim." + secrets.token_urlsafe(32)
        self._expiry[token] = now + lifetime
        return token

    def problem(self, authorization: str | None, now: float) -> str | None:
        """None when the `Authorization` header holds a live token, else Zoom's message."""
        scheme, _, token = (authorization or "").partition(" ")
        expiry = self._expiry.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None:
            return MSG_124_INVALID
        if now >= expiry:
            return MSG_124_EXPIRED
        return None

    def revoke(self) -> int:
        count = len(self._expiry)
        self._expiry.clear()
        return count

    def _forget_expired(self, before: float) -> None:
        # Expired tokens are kept an hour so they answer "expired" rather than "invalid".
        if len(self._expiry) > 1000:
            self._expiry = {t: e for t, e in self._expiry.items() if e > before}


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = (
            base64.b64decode(value.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (client_id, secret) if sep else None


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class FileTokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()
        self._last: dict[str, tuple[int, str]] = {}

    def token(self, attachment: Attachment, expiry: Expiry) -> tuple[int, str]:
        """(exp, JWT) for the attachment: the last one signed if `expiry` accepts it."""
        cached = self._last.get(attachment.id)
        if cached is not None and expiry.accepts(cached[0], cached[0]):
            return cached
        claims = {"iss": "crossfile", "aud": "file", "dig": attachment.sha256, "exp": expiry.new}
        # Zoom's example header is exactly {"alg":"HS256"}, without "typ".
        token = jwt.encode(claims, self._key, algorithm="HS256", headers={"typ": None})
        self._last[attachment.id] = (expiry.new, token)
        return expiry.new, token

    def problem(self, token: str, attachment: Attachment) -> str | None:
        """None when `token` is a live JWT signed by us for this file, else what is wrong."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience="file",
                issuer="crossfile",
                options={"require": ["exp", "dig"]},
            )
        except jwt.ExpiredSignatureError:
            return "The download link has expired."
        except jwt.InvalidTokenError:
            return "Invalid download token."
        if claims.get("dig") != attachment.sha256:
            return "Invalid download token."
        return None
