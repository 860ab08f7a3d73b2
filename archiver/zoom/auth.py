"""Server-to-Server OAuth: one access token shared by every task, renewed before it expires.

Only one renewal is ever in flight (an asyncio.Lock); a worker that saw a 401 with a token
that has since been replaced simply uses the new one instead of asking again. What the token
endpoint's answer means is `policy.decide`'s call: only a JSON 4xx (Zoom refusing the
credentials) is ZoomAuthError; 5xx, 429, an HTML page, a reset or a 200 without a token are
retried with backoff, then ZoomTransientError.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl

from archiver.config import Secret, ambiguous_url
from archiver.errors import ZoomTransientError
from archiver.ops.logs import get_logger, register_secret
from archiver.zoom.policy import TOKEN, Action, BodyKind, body_kind, decide, error_for
from archiver.zoom.retry_after import backoff_delay

# Renew this long before Zoom's stated expiry, so no request goes out with a dying token.
RENEW_MARGIN = 300.0
TRANSIENT_ATTEMPTS = 6
TOKEN_ENDPOINT = "POST /oauth/token"  # noqa: S105 - an endpoint name, not a password


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float  # monotonic clock


ZOOM_DOMAIN = "zoom.us"


def regional_api_base(configured: str, token_api_url: str | None) -> str:
    """The API base to use: the token's regional `api_url` (host) with the configured path.

    Zoom returns e.g. `https://api-eu.zoom.us` while requests go to `.../v2`. The token's host
    is taken only when `regional_refusal` finds nothing against it: the Bearer token goes
    wherever this points, so a spoofed token reply must not choose a clear-text or internal
    host. (The simulator's loopback host is the configured one, and so kept as configured.)
    """
    if not token_api_url or regional_refusal(configured, token_api_url) is not None:
        return configured.rstrip("/")
    token_parts = urlsplit(token_api_url)
    if token_parts.path.rstrip("/"):
        return token_api_url.rstrip("/")
    path = urlsplit(configured).path.rstrip("/")
    return f"{token_parts.scheme}://{token_parts.netloc}{path}"


def regional_refusal(configured: str, token_api_url: str) -> str | None:  # noqa: PLR0911
    """Why the token's `api_url` is not used (None: it is, or it names the configured host).

    Only `https` on `zoom.us` or a subdomain, with no user info; the configured scheme and
    host themselves are always acceptable (and change nothing).
    """
    # "https://evil.com\\.zoom.us" is a zoom.us host to urllib only.
    if ambiguous_url(token_api_url):
        return "not a URL"
    try:
        # urlsplit itself raises ValueError for some netlocs (one that NFKC changes, as a
        # fullwidth solidus), `port` for a malformed port: then the reply is not a URL.
        parts, mine = urlsplit(token_api_url), urlsplit(configured)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a malformed port
        sent_to = (yarl.URL(token_api_url).raw_host or "").lower()
    except ValueError:
        return "not a URL"
    if (parts.scheme, parts.netloc) == (mine.scheme, mine.netloc):
        return None
    if parts.scheme != "https":
        return "not https"
    if "@" in parts.netloc or not host or not host.isascii() or sent_to != host:
        return "not a plain host"
    if host != ZOOM_DOMAIN and not host.endswith("." + ZOOM_DOMAIN):
        return f"not a {ZOOM_DOMAIN} host"
    return None


class TokenProvider:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        oauth_url: str,
        api_url: str,
        account_id: str,
        client_id: str,
        client_secret: Secret,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 30.0,
    ) -> None:
        self._http = http
        self._oauth_url = oauth_url
        self._configured_api = api_url
        self._account_id = account_id
        self._client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: AccessToken | None = None
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._lock = asyncio.Lock()
        self.api_base = api_url.rstrip("/")
        self._refused_api: str | None = None
        self.renewals = 0
        self._log = get_logger(component="oauth")
        register_secret(client_secret.reveal())

    @property
    def valid(self) -> bool:
        return self._token is not None and self._clock() < self._token.expires_at

    async def token(self) -> str:
        current = self._token
        if current is not None and self._clock() < current.expires_at - RENEW_MARGIN:
            return current.value
        async with self._lock:
            current = self._token
            if current is not None and self._clock() < current.expires_at - RENEW_MARGIN:
                return current.value
            return await self._renew()

    async def invalidate(self, rejected: str) -> None:
        """A request was refused with `rejected`: forget it unless it was already replaced."""
        async with self._lock:
            if self._token is not None and self._token.value == rejected:
                self._token = None

    async def _renew(self) -> str:
        """Ask for a token, retrying transient failures (5xx, resets) with backoff."""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return await self._request_token()
            except ZoomTransientError:
                if attempt == TRANSIENT_ATTEMPTS:
                    raise
                await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0, self._rng))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request_token(self) -> str:
        basic = base64.b64encode(f"{self._client_id}:{self._secret.reveal()}".encode()).decode()
        params = {"grant_type": "account_credentials", "account_id": self._account_id}
        status: int | None = None
        raw = b""
        failure: str | None = None
        try:
            async with self._http.post(
                self._oauth_url,
                params=params,
                headers={"Authorization": f"Basic {basic}"},
                timeout=self._timeout,
            ) as response:
                status = response.status
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__  # a class name: never the URL or the credentials
        body = _json_object(raw)
        kind = body_kind(raw)
        value = body.get("access_token")
        if status == 200 and not (isinstance(value, str) and value):
            kind = BodyKind.OTHER  # a 200 we cannot use is a broken answer, not a refusal
        action = decide(TOKEN, status, None, kind)
        if action is not Action.ACCEPT:
            reason = body.get("reason") or body.get("error")
            raise error_for(
                action,
                status=status,
                code=None,
                message=failure or (reason if isinstance(reason, str) else None),
                endpoint=TOKEN_ENDPOINT,
                session_id=None,
                kind=kind,
            )
        assert isinstance(value, str)  # ACCEPT: checked above
        expires_in = body.get("expires_in", 3599)
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 3599
        register_secret(value)
        # A token that lives less than the renewal margin is renewed at half its life instead.
        margin = min(RENEW_MARGIN, expires_in / 2)
        self._token = AccessToken(value, self._clock() + expires_in - margin + RENEW_MARGIN)
        api_url = body.get("api_url")
        if isinstance(api_url, str) and api_url:
            refusal = regional_refusal(self._configured_api, api_url)
            if refusal is not None and api_url != self._refused_api:
                self._refused_api = api_url  # once per distinct value, not every renewal
                self._log.warning(
                    "token_api_url_ignored",
                    reason=refusal,
                    api_url=api_url[:200],
                    using=self._configured_api,
                )
        self.api_base = regional_api_base(
            self._configured_api, api_url if isinstance(api_url, str) else None
        )
        self.renewals += 1
        self._log.info("token_renewed", expires_in=expires_in, api_base=self.api_base)
        return value


def _json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or {} when it is none (an HTML page, a truncated body)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}
