"""The simulator's knobs: one frozen dataclass, validated on construction.

Each field's `metadata["doc"]` is its documentation; the `simulate` command builds its flags
from it, so a knob cannot exist without a flag and a help text. Fields in `FIXED_AT_START`
shape the generated data or the sockets; every other field is a *switch* that
`Simulator.set_switches` (and `POST /_sim/switches`) may change while the simulator runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar, get_type_hints

from archiver.config import ENDPOINTS, LABELS
from archiver.errors import ConfigError

T = TypeVar("T")

PLANS: Final = ("pro", "business")
HEADER_STYLES: Final = ("full", "iso", "none")
FAULTS: Final = ("fault_5xx", "fault_reset", "fault_truncate", "fault_slow", "fault_stall")
GATEWAY: Final = ("html_404_probability", "forbidden_probability")
PAGE_SHAPES: Final = ("short_page_probability", "no_token_probability", "short_isync_probability")
DEFAULT_LABELS: Final = dict.fromkeys(ENDPOINTS, "medium")
ZOOM_RETRY_SCHEDULE: Final = "300,1200,3600"
MAX_RETRIES: Final = 10
FIXED_AT_START: Final = frozenset(
    {
        "host",
        "port",
        "file_port",
        "seed",
        "sessions",
        "anchor",
        "history_days",
        "mean_messages",
        "busy_fraction",
        "max_messages",
        "large_attachments",
        "large_attachment_bytes",
        "jwt_secret",
    }
)


def knob(default: T, doc: str) -> T:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class SimulatorConfig:
    # --- sockets and credentials ---
    host: str = knob("127.0.0.1", "address both servers listen on")
    port: int = knob(0, "API + OAuth + control port (0 = a free port)")
    file_port: int = knob(0, "attachment file host port (0 = a free port)")
    account_id: str = knob("sim-account", "the only account_id the OAuth endpoint accepts")
    client_id: str = knob("sim-client", "OAuth client id")
    client_secret: str = knob("sim-secret", "OAuth client secret")
    token_lifetime: float = knob(3600.0, "access token lifetime in seconds")
    jwt_lifetime: float = knob(
        172800.0, "attachment URL (JWT) lifetime in seconds; negative = already expired"
    )
    jwt_secret: str = knob(
        "sim-jwt-secret-for-attachment-urls", "HS256 key of the attachment JWTs (>= 32 bytes)"
    )
    # --- generated data (same values => byte-identical data) ---
    seed: int = knob(1, "seed of the generated data")
    sessions: int = knob(20, "number of generated sessions")
    anchor: str = knob(
        "now",
        "time of the newest generated message: 'now' = the start of the current UTC day, or "
        "YYYY-MM-DDTHH:MM:SSZ for data that is byte-identical on every day",
    )
    history_days: float = knob(400.0, "how far before the anchor generated messages go")
    mean_messages: float = knob(25.0, "mean messages of an ordinary session")
    busy_fraction: float = knob(0.1, "fraction of busy sessions (100..max_messages messages)")
    max_messages: int = knob(1000, "cap on the messages of one generated session")
    attachment_probability: float = knob(0.2, "chance that a message is an MMS (1..10 files)")
    max_attachment_bytes: int = knob(1 << 20, "largest ordinary attachment")
    large_attachments: int = knob(0, "how many attachments get large_attachment_bytes")
    large_attachment_bytes: int = knob(2 << 30, "size of the large attachments")
    # --- rate limits ---
    plan: str = knob("business", "Zoom Phone rate-limit table: pro or business")
    rate_limits: bool = knob(False, "enforce the per-label limits and the Heavy daily cap")
    labels: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_LABELS),
        metadata={"doc": "rate-limit label per endpoint (light, medium, heavy)"},
    )
    daily_cap: int | None = knob(None, "Heavy daily cap instead of the plan's 15000/30000")
    header_style: str = knob("full", "rate-limit headers: full, iso or none")
    # --- quirks Zoom might have (zoom/README.md) ---
    quirk_overlap: bool = knob(
        False,
        "BSync/ISync pages repeat the previous window's boundary message inside `count`: a "
        "full ISync page may hold the already-known newest message and leave the newest new "
        "one for the next call",
    )
    quirk_ascending: bool = knob(False, "sync pages oldest first instead of newest first")
    quirk_duplicate: bool = knob(False, "a message appears twice inside a sync page")
    quirk_no_token_on_empty: bool = knob(False, "empty sync pages carry no sync_token")
    quirk_list_deleted: bool = knob(
        False, "the session list still shows deleted sessions (which answer 404, 12004)"
    )
    quirk_expired_jwt_200: bool = knob(
        False, "expired/forged attachment JWT answered 200 with a JSON error body"
    )
    short_page_probability: float = knob(
        0.0,
        "chance that a FSync/BSync page holds only 1..count-1 messages while older ones "
        "remain (its token continues from what it returned)",
    )
    no_token_probability: float = knob(
        0.0, "chance that a non-empty sync page comes without its sync_token"
    )
    short_isync_probability: float = knob(
        0.0,
        "chance that an ISync page holds only 1..count-1 of the new messages (the rest come "
        "with the next ISync)",
    )
    quirk_inclusive_bsync: bool = knob(
        False,
        "every BSync page repeats the oldest message its token covers, at the start of "
        "history too (a page of that one message, never an empty page)",
    )
    # --- faults (probability per request, API and file host) ---
    fault_5xx: float = knob(
        0.0, "answer 500/502/503 with a JSON or an HTML body (a gateway's 502 page among them)"
    )
    fault_reset: float = knob(0.0, "reset the connection without an answer")
    fault_truncate: float = knob(0.0, "send fewer bytes than Content-Length, then close")
    fault_slow: float = knob(0.0, "answer after slow_seconds")
    slow_seconds: float = knob(2.0, "delay of a slow answer")
    fault_stall: float = knob(0.0, "stall for stall_seconds (downloads: mid-body), then go on")
    stall_seconds: float = knob(600.0, "length of a stall")
    # --- gateway answers (probability per /v2 request; never the OAuth token endpoint) ---
    html_404_probability: float = knob(
        0.0, "answer 404 with a gateway's HTML page and no Zoom code"
    )
    forbidden_probability: float = knob(
        0.0, "answer 403, with Zoom's JSON (code 200, not 12004) or an HTML page, per request"
    )
    file_gateway_probability: float = knob(
        0.0,
        "chance per file host request that a gateway in front of it answers 404, 403 or 502 "
        "with an HTML page and no code, before the JWT is looked at (the file is untouched)",
    )
    # --- live traffic and sync tokens ---
    live_rate: float = knob(0.0, "new messages per second while running (0 = off)")
    visible_lag: float = knob(
        0.0,
        "seconds after its date_time before a message shows in the session list, sync pages "
        "and the session's message history (not the one-message endpoint); the same for "
        "every message (0 = at once; the archiver assumes at most 5)",
    )
    token_expiry: float | None = knob(
        None,
        "sync tokens are refused (400, code 300) this many seconds after they were issued "
        "(issuing the same token again restarts its clock; tokens issued while this was off "
        "are refused)",
    )
    # --- webhooks (events as messages arrive; see webhooks.py) ---
    webhook_url: str = knob("", "URL events are posted to as messages arrive ('' = none)")
    webhook_secret: str = knob(
        "sim-webhook-secret-token", "the app's webhook secret token, which signs every event"
    )
    webhook_retry_schedule: str = knob(
        ZOOM_RETRY_SCHEDULE,
        "seconds after its first attempt at which a failed event is sent again, comma-"
        "separated (Zoom: 5, 20 and 60 minutes); e.g. '0.5,1,2' for tests",
    )
    webhook_timeout: float = knob(3.0, "an answer slower than this counts as failed (Zoom: 3 s)")

    def __post_init__(self) -> None:
        _check_types(self)
        object.__setattr__(self, "labels", {**DEFAULT_LABELS, **self.labels})
        for endpoint, label in self.labels.items():
            if endpoint not in ENDPOINTS:
                raise ConfigError(
                    f"unknown endpoint; known: {', '.join(ENDPOINTS)}", key=f"labels.{endpoint}"
                )
            if label not in LABELS:
                raise ConfigError(
                    f"{label!r} is not one of {', '.join(LABELS)}", key=f"labels.{endpoint}"
                )
        _one_of(self.plan, PLANS, "plan")
        _one_of(self.header_style, HEADER_STYLES, "header_style")
        _check_ranges(self)
        if len(self.jwt_secret.encode()) < 32:
            raise ConfigError("must be at least 32 bytes (RFC 7518 for HS256)", key="jwt_secret")
        anchor_ms(self.anchor)

    def with_switches(self, **changes: Any) -> SimulatorConfig:
        """A copy with some switches changed; data knobs are refused once running."""
        fixed = sorted(set(changes) & FIXED_AT_START)
        if fixed:
            raise ConfigError("cannot be changed while the simulator runs", key=fixed[0])
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError("unknown switch", key=unknown[0])
        return dataclasses.replace(self, **changes)

    def switches(self) -> dict[str, Any]:
        """The current run-time switches, JSON-ready."""
        return {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
            for f in dataclasses.fields(self)
            if f.name not in FIXED_AT_START and f.name not in ("client_secret", "webhook_secret")
        }


def anchor_ms(anchor: str, now: float | None = None) -> int:
    """The anchor as Unix milliseconds; 'now' is today's UTC midnight."""
    if anchor == "now":
        moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
        return int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * 1000
    try:
        parsed = datetime.strptime(anchor, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(
            f"{anchor!r} is not YYYY-MM-DDTHH:MM:SSZ or 'now'", key="anchor"
        ) from None
    return int(parsed.timestamp()) * 1000


def _check_types(config: SimulatorConfig) -> None:
    # Switches arrive as JSON over the control endpoint: refuse a string where a number goes.
    hints = get_type_hints(SimulatorConfig)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        hint = hints[f.name]
        optional = hint in (int | None, float | None)
        if optional and value is None:
            continue
        base = {int | None: int, float | None: float}.get(hint, hint)
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, f.name, float(value))
            continue
        expected = Mapping if f.name == "labels" else base
        if not isinstance(value, expected) or (base is not bool and isinstance(value, bool)):
            raise ConfigError(
                f"{value!r} is not of type {getattr(base, '__name__', base)}", key=f.name
            )


def _check_ranges(config: SimulatorConfig) -> None:
    probabilities = (*FAULTS, *GATEWAY, *PAGE_SHAPES, "file_gateway_probability")
    for name in (*probabilities, "attachment_probability", "busy_fraction"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{value} is not a probability in [0, 1]", key=name)
    # Each group is one draw per request, so its odds must fit in one.
    for group in (FAULTS, GATEWAY):
        if sum(getattr(config, name) for name in group) > 1.0:
            raise ConfigError("the probabilities add up to more than 1", key=group[0])
    for name in (
        "port",
        "file_port",
        "sessions",
        "max_attachment_bytes",
        "large_attachments",
        "large_attachment_bytes",
        "slow_seconds",
        "stall_seconds",
        "live_rate",
        "visible_lag",
    ):
        _at_least(getattr(config, name), 0, name)
    for name in ("token_lifetime", "history_days", "mean_messages", "token_expiry"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{value} must be greater than 0", key=name)
    _at_least(config.max_messages, 1, "max_messages")
    if config.daily_cap is not None:
        _at_least(config.daily_cap, 0, "daily_cap")
    if not math.isfinite(config.jwt_lifetime):
        raise ConfigError("must be a finite number of seconds", key="jwt_lifetime")
    if config.webhook_url and not config.webhook_url.startswith(("http://", "https://")):
        raise ConfigError(f"{config.webhook_url!r} is not an http(s) URL", key="webhook_url")
    if not config.webhook_secret:
        raise ConfigError("must not be empty", key="webhook_secret")
    if not config.webhook_timeout > 0:
        raise ConfigError(f"{config.webhook_timeout} must be greater than 0", key="webhook_timeout")
    retry_delays(config.webhook_retry_schedule)


def retry_delays(schedule: str) -> tuple[float, ...]:
    """'300,1200,3600' -> (300.0, 1200.0, 3600.0): retry n is due that long after the first
    attempt (Zoom: "retries after 5, 20 and 60 minutes"), so the delays must not decrease."""
    if not schedule.strip():
        return ()
    try:
        delays = tuple(float(part) for part in schedule.split(","))
    except ValueError:
        raise ConfigError(
            f"{schedule!r} is not comma-separated seconds", key="webhook_retry_schedule"
        ) from None
    if (
        len(delays) > MAX_RETRIES
        or not all(math.isfinite(d) and d > 0 for d in delays)
        or list(delays) != sorted(delays)
    ):
        raise ConfigError(
            f"{schedule!r}: at most {MAX_RETRIES} positive delays, in increasing order",
            key="webhook_retry_schedule",
        )
    return delays


def _one_of(value: str, options: tuple[str, ...], key: str) -> None:
    if value not in options:
        raise ConfigError(f"{value!r} is not one of {', '.join(options)}", key=key)


def _at_least(value: float, minimum: float, key: str) -> None:
    if value < minimum:
        raise ConfigError(f"{value} must be at least {minimum}", key=key)
