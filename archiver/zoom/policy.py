"""The one error policy: what a Zoom answer means, decided in one pure function.

`decide(endpoint, status, code, body_kind)` turns what came back (or `status=None`: no answer
at all, i.e. a reset, a timeout or a truncated body) into an `Action`. The client, the token
provider and the download manager's URL refresh act on it; nothing else decides. The rules
(zoom/README.md, DESIGN.md invariant 8: nothing is concluded without evidence):

- Only the OAuth token endpoint refusing the credentials in Zoom's own words (a JSON 4xx
  other than 408/425/429) is fatal for the account. Its 5xx, 408/425/429, an HTML page, a 200
  without a token or no answer are transient.
- A 401 on an API call means "renew the token", never "the account is broken".
- Only Zoom's code 12004 says a session is gone. A 403, a 404 without 12004 (a gateway's HTML
  page, say) or another 4xx says nothing about the account or the session's existence: that
  request's failure, retried later with backoff by whoever owns the work.
- 300/7035 on the sync endpoint: the sync cursor is refused; FSync again.
- 429: the label's budget pauses (Retry-After or backoff), then the call queues again.
- 5xx, 408, 425 and no answer: retried with jittered backoff.

`error_for(action, ...)` is the exception each final action raises, and `action_of(exc)` reads
it back, so a layer above (the download manager) can act on an error without re-deciding it.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

from archiver.errors import (
    SessionGoneError,
    SyncTokenInvalid,
    ZoomAuthError,
    ZoomError,
    ZoomRateLimited,
    ZoomResponseError,
    ZoomSessionError,
    ZoomTransientError,
)

TOKEN: Final = "token"  # noqa: S105 - the OAuth endpoint's name in `decide`, not a password
LIST_SESSIONS: Final = "list_sessions"
SYNC: Final = "sync"

CODE_INVALID_TOKEN: Final = 124
CODE_SYNC_TOKEN: Final = 300
CODE_TOO_MANY_NEW: Final = 7035
CODE_SESSION_GONE: Final = 12004
SCOPE_CODES: Final = frozenset({4700, 4711})

TRANSIENT_STATUSES: Final = frozenset({408, 425})
_FIRST: Final = re.compile(rb"\s*(\S)")


class BodyKind(Enum):
    JSON = "json"
    HTML = "html"
    EMPTY = "empty"
    OTHER = "other"


class Action(Enum):
    ACCEPT = "accept"  # a 200 with a JSON body: parse it (the schema may still refuse it)
    RETRY = "retry"  # transient: jittered backoff, again; spent -> ZoomTransientError
    RENEW_TOKEN = "renew_token"  # noqa: S105 - an action's name. Invalidate the access token, renew, again; spent -> transient
    PARK = "park"  # 429: the budget pauses the label; long pauses raise BudgetExhausted
    RESYNC = "resync"  # the sync cursor is refused: FSync again (SyncTokenInvalid)
    SESSION_FAILURE = "session_failure"  # this request's failure, retried later (ZoomSessionError)
    SESSION_GONE = "session_gone"  # Zoom's 12004 (SessionGoneError)
    ACCOUNT_FATAL = "account_fatal"  # the token endpoint refused the credentials (ZoomAuthError)
    BAD_RESPONSE = "bad_response"  # a 200 that is not JSON (ZoomResponseError)


# Actions the client handles itself by trying again; the others end the call with `error_for`.
REPEATING: Final = frozenset({Action.RETRY, Action.RENEW_TOKEN, Action.PARK})


def body_kind(raw: bytes) -> BodyKind:
    """What a body looks like, from its first byte only: a 250-message page is not parsed twice.
    A JSON answer that does not parse is still JSON-looking; the parser says so later."""
    first = _FIRST.match(raw)
    if first is None:
        return BodyKind.EMPTY
    if first[1] in (b"{", b"["):
        return BodyKind.JSON
    if first[1] == b"<":
        return BodyKind.HTML
    return BodyKind.OTHER


def decide(endpoint: str, status: int | None, code: int | None, kind: BodyKind) -> Action:
    """The action for one answer (`status=None`: none came). `code` is Zoom's `code` field."""
    if status is None or status >= 500 or status in TRANSIENT_STATUSES:
        return Action.RETRY
    if endpoint == TOKEN:
        return _decide_token(status, kind)
    if status == 429:
        return Action.PARK
    return _decide_api(endpoint, status, code, kind)


def _decide_api(endpoint: str, status: int, code: int | None, kind: BodyKind) -> Action:
    if 200 <= status < 300:
        return Action.ACCEPT if kind is BodyKind.JSON else Action.BAD_RESPONSE
    if status == 401:
        # Whatever the body (124 expired/invalid, a gateway page): a new token is the cure, and
        # the token endpoint will say so itself if the credentials are the problem.
        return Action.RENEW_TOKEN
    if code == CODE_SESSION_GONE and endpoint != LIST_SESSIONS:
        return Action.SESSION_GONE
    if endpoint == SYNC and code in (CODE_SYNC_TOKEN, CODE_TOO_MANY_NEW) and status in (400, 404):
        return Action.RESYNC
    # 403 (any body), 404 without 12004, a scope code (4700/4711), any other status: nothing
    # here proves the session gone or the account broken.
    return Action.SESSION_FAILURE


def _decide_token(status: int, kind: BodyKind) -> Action:
    if 200 <= status < 300:
        # A 200 the provider cannot use (not JSON, or no access_token: it passes OTHER) is a
        # broken answer, not a refusal of the credentials.
        return Action.ACCEPT if kind is BodyKind.JSON else Action.RETRY
    if status == 429:
        return Action.RETRY  # no budget of ours paces the token endpoint: back off
    if 400 <= status < 500 and kind is BodyKind.JSON:
        return Action.ACCOUNT_FATAL  # Zoom's OAuth speaks JSON: invalid_client, bad account id
    return Action.RETRY  # an HTML page from a proxy, an empty 401: nothing says "credentials"


def error_for(
    action: Action,
    *,
    status: int | None,
    code: int | None,
    message: str | None,
    endpoint: str,
    session_id: str | None,
    kind: BodyKind = BodyKind.JSON,
) -> ZoomError:
    """The exception a final `action` raises. `message` is Zoom's text (never a credential),
    cut short; `endpoint` is a path template."""
    text = (message or ("an HTML page" if kind is BodyKind.HTML else "no message"))[:200]
    error: type[ZoomError] = ZoomSessionError
    if action is Action.SESSION_GONE:
        error, text = SessionGoneError, f"session does not exist upstream: {text}"
    elif action is Action.RESYNC:
        error, text = SyncTokenInvalid, f"resync needed: {text}"
    elif action is Action.ACCOUNT_FATAL:
        error = ZoomAuthError
        text = (
            f"Zoom refused the credentials: {text}; "
            "check zoom.account_id, zoom.client_id and the client secret"
        )
    elif action is Action.BAD_RESPONSE:
        error, text = ZoomResponseError, f"response is not JSON ({kind.value} body)"
    elif action is Action.PARK:
        error, text = ZoomRateLimited, "still rate limited after retries"
    elif action is Action.RENEW_TOKEN:
        error, text = ZoomTransientError, f"access token refused after renewals: {text}"
    elif action is Action.RETRY:
        error, text = ZoomTransientError, f"no usable answer after retries: {text}"
    else:
        if code in SCOPE_CODES:
            text += "; check the app's scopes (phone:read:admin or phone_sms:read:admin)"
        text = f"Zoom refused the request: {text}"
    return error(text, status=status, code=code, endpoint=endpoint, session_id=session_id)


# Most specific first: BudgetExhausted is also ZoomRateLimited.
_ACTION_OF: Final[tuple[tuple[type[ZoomError], Action], ...]] = (
    (SessionGoneError, Action.SESSION_GONE),
    (ZoomAuthError, Action.ACCOUNT_FATAL),
    (SyncTokenInvalid, Action.RESYNC),
    (ZoomRateLimited, Action.PARK),
    (ZoomResponseError, Action.BAD_RESPONSE),
    (ZoomSessionError, Action.SESSION_FAILURE),
)


def action_of(exc: ZoomError) -> Action:
    """The action behind an error the client raised: what a caller holding only the exception
    (the download manager) should do. ZoomTransientError, and any error not named, is RETRY."""
    for error, action in _ACTION_OF:
        if isinstance(exc, error):
            return action
    return Action.RETRY
