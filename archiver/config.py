"""Configuration: TOML (`tomllib`) into frozen dataclasses, validated on load.

Every problem is a `ConfigError` naming the file, the key and what is wrong, e.g.
``/etc/zsa.toml: sync.count: 300 is above Zoom's maximum of 250``. Unknown keys are errors,
never silently ignored. Secrets are not read here but by `read_client_secret`,
`read_webhook_secret`, `read_s3_secret` and `read_secret_file`, which refuse files readable by
group or others; the `Secret` type keeps them out of every repr, log line and error message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import UnionType
from typing import Any, Final, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yarl

from archiver.errors import ConfigError

_BUCKET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ENDPOINTS: Final = ("list_sessions", "sync", "get_message", "session_details")
LABELS: Final = ("light", "medium", "heavy")
PLANS: Final = ("pro", "business", "unlimited")
SESSION_TYPES: Final = ("all", "user", "call_queue", "auto_receptionist", "service_endpoint")
MAX_SYNC_COUNT: Final = 250


class Secret:
    """A string that never shows itself: repr/str are masked; `.reveal()` is explicit."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ZoomConfig:
    account_id: str = ""
    client_id: str = ""
    client_secret_file: str | None = None
    api_url: str = "https://api.zoom.us/v2"
    oauth_url: str = "https://zoom.us/oauth/token"

    def __post_init__(self) -> None:
        for key in ("api_url", "oauth_url"):
            problem = zoom_url_problem(getattr(self, key))
            if problem:
                raise ConfigError(problem, key=f"zoom.{key}")


@dataclass(frozen=True)
class ArchiveConfig:
    root: str = "/var/lib/zoom-sms-archiver"
    # Ed25519 key from `keygen` for signed checkpoints; a secret file (see read_signing_key).
    signing_key_file: str | None = None
    checkpoint_interval: float = 300.0  # seconds between checkpoints while the head moves

    def __post_init__(self) -> None:
        _positive(self.checkpoint_interval, "archive.checkpoint_interval")
        _at_least(self.checkpoint_interval, 1, "archive.checkpoint_interval", "a second")
        _at_most(self.checkpoint_interval, 7 * DAY, "archive.checkpoint_interval", "a week")


MAX_SYNC_WORKERS: Final = 256


@dataclass(frozen=True)
class SyncConfig:
    session_type: str = "all"
    history_start: str = "2020-01-01"
    poll_interval: float = 60.0
    count: int = MAX_SYNC_COUNT
    workers: int = 8
    lookback: float = 600.0
    pinned_sessions: tuple[str, ...] = ()
    shutdown_grace: float = 20.0

    def __post_init__(self) -> None:
        if self.session_type not in SESSION_TYPES:
            raise ConfigError(
                f"{self.session_type!r} is not one of {', '.join(SESSION_TYPES)}",
                key="sync.session_type",
            )
        try:
            start = date.fromisoformat(self.history_start)
        except ValueError:
            raise ConfigError(
                f"{self.history_start!r} is not a date (YYYY-MM-DD)", key="sync.history_start"
            ) from None
        # A start after today lists nothing and the first walk is then over: refused, not
        # taken (a typo such as 2062 would otherwise archive nothing and exit 0). A day of
        # slack for time zones.
        if start > datetime.now(UTC).date() + timedelta(days=1):
            raise ConfigError(
                f"{self.history_start!r} is in the future: discovery would list nothing",
                key="sync.history_start",
            )
        if self.count < 1:
            raise ConfigError(
                f"{_shown(self.count)} is below Zoom's minimum of 1", key="sync.count"
            )
        if self.count > MAX_SYNC_COUNT:
            raise ConfigError(
                f"{_shown(self.count)} is above Zoom's maximum of {MAX_SYNC_COUNT}",
                key="sync.count",
            )
        _positive(self.poll_interval, "sync.poll_interval")
        _at_least(self.poll_interval, 0.1, "sync.poll_interval", "0.1 s")
        _at_most(self.poll_interval, DAY, "sync.poll_interval", "a day")
        _positive(self.workers, "sync.workers")
        _at_most(self.workers, MAX_SYNC_WORKERS, "sync.workers", f"{MAX_SYNC_WORKERS}")
        _non_negative(self.lookback, "sync.lookback")
        _at_most(self.lookback, 366 * DAY, "sync.lookback", "366 days")
        _positive(self.shutdown_grace, "sync.shutdown_grace")
        _at_most(self.shutdown_grace, HOUR, "sync.shutdown_grace", "an hour")

    @property
    def history_start_date(self) -> date:
        return date.fromisoformat(self.history_start)


@dataclass(frozen=True)
class RateLimitConfig:
    plan: str = "business"
    share: float = 0.8
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.plan not in PLANS:
            raise ConfigError(
                f"{self.plan!r} is not one of {', '.join(PLANS)}", key="rate_limits.plan"
            )
        if not 0.01 <= self.share <= 1:
            raise ConfigError(
                f"{self.share} is outside [0.01, 1]: it is the fraction of the account's budget "
                "this daemon may use",
                key="rate_limits.share",
            )
        for endpoint, label in self.labels.items():
            if endpoint not in ENDPOINTS:
                raise ConfigError(
                    f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}",
                    key=f"rate_limits.labels.{endpoint}",
                )
            if label not in LABELS:
                raise ConfigError(
                    f"{label!r} is not one of {', '.join(LABELS)}",
                    key=f"rate_limits.labels.{endpoint}",
                )


MAX_DOWNLOAD_WORKERS = 64


@dataclass(frozen=True)
class DownloadConfig:
    workers: int = 8
    allowed_hosts: tuple[str, ...] = ("zoom.us", "*.zoom.us")
    allowed_schemes: tuple[str, ...] = ("https",)
    allow_private_addresses: bool = False
    max_bytes: int = 100 * 1024 * 1024
    refresh_margin: float = 300.0
    # Bytes per second a download must average: its total deadline is 30 s plus its size
    # (or max_bytes when none is advertised) over this rate; a slower one is retried.
    min_rate: int = 8192

    def __post_init__(self) -> None:
        _positive(self.workers, "downloads.workers")
        if self.workers > MAX_DOWNLOAD_WORKERS:
            # Each worker has a writer thread: the units' TasksMax=128 holds 34 + workers.
            raise ConfigError(
                f"{_shown(self.workers)} is more than {MAX_DOWNLOAD_WORKERS} (each worker has a "
                "thread of its own; the shipped units' TasksMax=128 allows 34 + workers)",
                key="downloads.workers",
            )
        _positive(self.max_bytes, "downloads.max_bytes")
        _at_most(self.max_bytes, 1 << 40, "downloads.max_bytes", "1 TiB")
        _non_negative(self.refresh_margin, "downloads.refresh_margin")
        _at_most(self.refresh_margin, DAY, "downloads.refresh_margin", "a day")
        _positive(self.min_rate, "downloads.min_rate")
        # A download's deadline is 30 s plus its size over this rate: 1 GiB/s still leaves 30 s.
        _at_most(self.min_rate, 1 << 30, "downloads.min_rate", "1 GiB/s")
        for scheme in self.allowed_schemes:
            if scheme not in ("https", "http"):
                raise ConfigError(
                    f"{scheme!r} is not a download scheme (https, http)",
                    key="downloads.allowed_schemes",
                )
        if not self.allowed_hosts:
            raise ConfigError("must name at least one host", key="downloads.allowed_hosts")


@dataclass(frozen=True)
class WebhookConfig:
    enabled: bool = False
    listen: str = "127.0.0.1:8787"
    path: str = "/zoom/webhook"
    secret_token_file: str | None = None
    timestamp_tolerance: float = 300.0
    # An SMS event is a few KB (Zoom's largest example: 2 KB); a body is held in memory
    # while it arrives, so the default leaves headroom without letting a flood buffer much.
    max_body_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        parse_listen(self.listen, "webhook.listen")
        if any(c in self.path for c in "{}") or not self.path.isprintable():
            # aiohttp reads {name} as a variable part of the route: a wildcard, or an error.
            raise ConfigError(
                f"{self.path!r}: a path without braces or control characters", key="webhook.path"
            )
        if not self.path.startswith("/"):
            raise ConfigError(f"{self.path!r} must start with '/'", key="webhook.path")
        # No "secret_token_file is required" here: the secret may also come from systemd's
        # credential directory or the environment, which only `read_webhook_secret` can see.
        _positive(self.timestamp_tolerance, "webhook.timestamp_tolerance")
        # Zoom's guide refuses events older than 5 minutes; past an hour the check means little.
        _at_most(self.timestamp_tolerance, HOUR, "webhook.timestamp_tolerance", "an hour")
        _positive(self.max_body_bytes, "webhook.max_body_bytes")
        _at_most(self.max_body_bytes, 64 << 20, "webhook.max_body_bytes", "64 MiB")


LOCK_MODES: Final = ("COMPLIANCE", "GOVERNANCE", "none")
# S3's smallest part is 5 MiB; a chunk is one PUT, and S3's single-PUT limit is 5 GiB.
MIN_CHUNK_BYTES: Final = 64 * 1024
MAX_CHUNK_BYTES: Final = 5 * 1024**3


@dataclass(frozen=True)
class ReplicaConfig:
    """`[replica]`: the WORM copy on an S3 bucket with Object Lock (archiver/replica/)."""

    enabled: bool = False
    endpoint_url: str = ""  # "": AWS (https://s3.<region>.amazonaws.com)
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    access_key_id: str = ""
    secret_access_key_file: str | None = None
    lock_mode: str = "COMPLIANCE"
    retention_days: int = 2555
    max_lag: float = 60.0
    chunk_max_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.endpoint_url:
            problem = replica_url_problem(self.endpoint_url)
            if problem:
                raise ConfigError(problem, key="replica.endpoint_url")
        if self.lock_mode not in LOCK_MODES:
            raise ConfigError(
                f"{self.lock_mode!r} is not one of COMPLIANCE, GOVERNANCE, none",
                key="replica.lock_mode",
            )
        _positive(self.retention_days, "replica.retention_days")
        # S3 Object Lock's own ceiling is 100 years.
        _at_most(self.retention_days, 36500, "replica.retention_days", "36500 (100 years)")
        _positive(self.max_lag, "replica.max_lag")
        _at_least(self.max_lag, 0.1, "replica.max_lag", "0.1 s")
        _at_most(self.max_lag, DAY, "replica.max_lag", "a day")
        if not MIN_CHUNK_BYTES <= self.chunk_max_bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(
                f"{_shown(self.chunk_max_bytes)} is outside {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES} "
                "(a chunk is one PUT)",
                key="replica.chunk_max_bytes",
            )
        if self.prefix.startswith("/") or "//" in self.prefix or ".." in self.prefix.split("/"):
            raise ConfigError(
                f"{self.prefix!r}: a key prefix must not start with '/', hold '//' or '..'"
                ' (e.g. "acme/")',
                key="replica.prefix",
            )
        if not self.enabled:
            return
        # Required only when on, so `enabled = false` with placeholders stays valid.
        if not _BUCKET_NAME.fullmatch(self.bucket):
            raise ConfigError(
                f"{self.bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')",
                key="replica.bucket",
            )
        if not self.region:
            raise ConfigError("is required", key="replica.region")
        if not self.access_key_id:
            raise ConfigError(
                "is required when replica.enabled = true", key="replica.access_key_id"
            )


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"

    def __post_init__(self) -> None:
        if self.listen:  # "" turns the endpoint off
            parse_listen(self.listen, "metrics.listen")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"

    def __post_init__(self) -> None:
        if self.level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"{self.level!r} is not one of debug, info, warning, error", key="log.level"
            )
        if self.format not in ("auto", "json", "console"):
            raise ConfigError(
                f"{self.format!r} is not one of auto, json, console", key="log.format"
            )


@dataclass(frozen=True)
class Config:
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    downloads: DownloadConfig = field(default_factory=DownloadConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = field(default="<defaults>", compare=False)

    @property
    def root(self) -> Path:
        return Path(self.archive.root)


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if (
        not sep
        or not host
        or not (port_text.isascii() and port_text.isdigit())
        or not 0 <= int(port_text) <= 65535
    ):
        raise ConfigError(f"{value!r} is not host:port", key=key)
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(
                f"{value!r}: host must be an IP address or localhost", key=key
            ) from None
    return host, int(port_text)


def zoom_url_problem(url: str) -> str | None:
    """Why `url` cannot be a Zoom endpoint, or None if it can.

    The client secret goes to `oauth_url` and the bearer token to `api_url`, so both must be
    https; plain http only to a loopback host (the simulator), where nothing leaves the machine.
    """
    # Plain http goes only where both urllib and yarl (which aiohttp sends with) see loopback.
    if ambiguous_url(url):
        return f"{url!r} holds a backslash, a space or a control character"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        client_host = yarl.URL(url).raw_host or ""
    except ValueError:
        return f"{url!r} is not a valid URL"
    if parts.scheme not in ("https", "http"):
        return f"{url!r} is not an http(s) URL"
    if not host:
        return f"{url!r} has no host"
    if parts.scheme == "http" and not (
        _is_loopback_host(host) and _is_loopback_host(client_host.split("%")[0])
    ):
        return (
            f"{url!r} is plain http to a host that is not loopback: the client secret and "
            "tokens must travel over https (http only to 127.0.0.0/8, ::1 or localhost)"
        )
    return None


def ambiguous_url(url: str) -> bool:
    """True when urllib and yarl (which aiohttp sends with) may read the URL's host
    differently: it holds a backslash, a space or a control character
    ("http://evil.com\\@127.0.0.1/" is loopback to urllib, evil.com to yarl)."""
    return any(c == "\\" or c.isspace() or not c.isprintable() for c in url)


def replica_url_problem(url: str) -> str | None:
    """Why `url` cannot be an S3 endpoint, or None if it can: https, or plain http only to a
    loopback host (the tests' server), like the Zoom URLs; no path, query or credentials."""
    problem = zoom_url_problem(url)
    if problem:
        return problem.replace("the client secret and tokens", "S3 requests")
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{url!r}: an endpoint is scheme://host[:port] only (the bucket is replica.bucket)"
    if parts.username or parts.password:
        return (
            "an endpoint must not carry credentials (use replica.access_key_id and the secret file)"
        )
    return None


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(value: float, key: str) -> None:
    if value <= 0:
        raise ConfigError(f"{_shown(value)} must be greater than 0", key=key)


MINUTE: Final = 60
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR


def _at_least(value: float, limit: float, key: str, what: str) -> None:
    """A floor where a tiny positive value would spin (a checkpoint per line) or stall."""
    if value < limit:
        raise ConfigError(f"{_shown(value)} is less than {what}", key=key)


def _at_most(value: float, limit: float, key: str, what: str) -> None:
    """Every number has a ceiling: a huge finite value is as wrong as inf (a lookback of 1e11 s
    overflows date arithmetic; a tolerance of 1e300 s turns replay protection off)."""
    if value > limit:
        raise ConfigError(f"{_shown(value)} is more than {what}", key=key)


def _shown(value: float) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"a number of {len(text)} digits"


def _non_negative(value: float, key: str) -> None:
    if value < 0:
        raise ConfigError(f"{_shown(value)} must not be negative", key=key)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file. Relative paths inside are relative to the file."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=source) from None
    except PermissionError:
        raise ConfigError("permission denied reading the file", file=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML file", file=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not valid TOML: the file is not UTF-8", file=source) from None
    except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit; nesting
        raise ConfigError(f"not valid TOML: {type(exc).__name__}", file=source) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot be read: {exc.strerror or type(exc).__name__}", file=source
        ) from None
    try:
        config = config_from_mapping(raw)
    except ConfigError as exc:
        raise ConfigError(exc.problem, file=source, key=exc.key) from None
    base = path.resolve().parent
    return dataclasses.replace(
        config,
        source=source,
        archive=dataclasses.replace(
            config.archive,
            root=str(base / config.archive.root),
            signing_key_file=_relative_to(base, config.archive.signing_key_file),
        ),
        zoom=dataclasses.replace(
            config.zoom,
            client_secret_file=_relative_to(base, config.zoom.client_secret_file),
        ),
        webhook=dataclasses.replace(
            config.webhook,
            secret_token_file=_relative_to(base, config.webhook.secret_token_file),
        ),
        replica=dataclasses.replace(
            config.replica,
            secret_access_key_file=_relative_to(base, config.replica.secret_access_key_file),
        ),
    )


def _relative_to(base: Path, value: str | None) -> str | None:
    return None if value is None else str(base / value)


def config_from_mapping(raw: Mapping[str, Any]) -> Config:
    """Build a Config from parsed TOML; every key checked for name and type."""
    config: Config = _build(Config, raw, prefix="")
    return config


def _build(cls: type[Any], raw: Mapping[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name != "source"}
    for key in raw:
        if key not in known:
            dotted = f"{prefix}{key}"
            raise ConfigError(
                f"unknown key; known keys here: {', '.join(sorted(known))}", key=dotted
            )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _convert(value, hints[name], f"{prefix}{name}")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=exc.key or prefix.rstrip(".")) from None


def _convert(value: Any, hint: Any, key: str) -> Any:  # noqa: PLR0911, PLR0912 - a branch per type
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"must be a table ([{key}]), not {_tname(value)}", key=key)
        return _build(hint, value, prefix=f"{key}.")
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return _convert(value, options[0], key)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"must be a list of strings, not {_tname(value)}", key=key)
        return tuple(value)
    if origin is Mapping:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"must be a table of strings, not {_tname(value)}", key=key)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, not {_tname(value)}", key=key)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, not {_tname(value)}", key=key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"must be a number, not {_tname(value)}", key=key)
        # TOML allows nan and inf: nan passes every `<=` range check (a nan staleness tolerance
        # would turn the webhook's replay protection off) and inf breaks date arithmetic. An
        # integer literal beyond a float's range is refused here too (float() overflows).
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{_shown(value)} is too large", key=key) from None
        if not math.isfinite(number):
            raise ConfigError(f"{value} is not a finite number", key=key)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, not {_tname(value)}", key=key)
        return value
    raise AssertionError(f"unsupported config type {hint!r} for {key}")  # pragma: no cover


def _tname(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --- secrets ---------------------------------------------------------------------------------


def read_secret_file(path: str | os.PathLike[str], key: str) -> Secret:
    """Read a secret file, refusing one that group or others can read."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist", key=key) from None
    except PermissionError:
        raise ConfigError(f"secret file {path} is not readable by this user", key=key) from None
    except (OSError, ValueError) as exc:  # a path through a file, a loop, too long, a NUL
        raise ConfigError(
            f"secret file {str(path)[:200]!r} cannot be opened: {type(exc).__name__}", key=key
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"secret file {path} is not a regular file", key=key)
    if st.st_mode & 0o077:
        raise ConfigError(
            f"secret file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix with: chmod 600 {path}",
            key=key,
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"secret file {path} cannot be read: {type(exc).__name__}", key=key
        ) from None
    if not value:
        raise ConfigError(f"secret file {path} is empty", key=key)
    return Secret(value)


def _resolve_secret(
    config: Config,
    environ: Mapping[str, str] | None,
    *,
    file: str | None,
    key: str,
    credential: str,
    variable: str,
    missing: str,
) -> Secret:
    """A secret from (in order) the configured file, systemd's `$CREDENTIALS_DIRECTORY/
    <credential>` (LoadCredential= makes it private to the service), or an environment
    variable. Files must not be readable by group or others."""
    env = os.environ if environ is None else environ
    try:
        if file:
            return read_secret_file(file, key)
        credentials = env.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / credential).exists():
            return read_secret_file(Path(credentials) / credential, key)
        if env.get(variable):
            return Secret(env[variable])
    except ConfigError as exc:
        raise ConfigError(exc.problem, file=config.source, key=exc.key) from None
    raise ConfigError(
        f"{missing}: set {key}, use systemd LoadCredential={credential}:..., or set the "
        f"{variable} environment variable",
        file=config.source,
        key=key,
    )


def read_client_secret(config: Config, environ: Mapping[str, str] | None = None) -> Secret:
    """The client secret, from `zoom.client_secret_file`, `$CREDENTIALS_DIRECTORY/
    client_secret`, or `ZOOM_CLIENT_SECRET`."""
    return _resolve_secret(
        config,
        environ,
        file=config.zoom.client_secret_file,
        key="zoom.client_secret_file",
        credential="client_secret",
        variable="ZOOM_CLIENT_SECRET",
        missing="no client secret",
    )


def read_webhook_secret(config: Config, environ: Mapping[str, str] | None = None) -> Secret:
    """The webhook secret token, from `webhook.secret_token_file`, `$CREDENTIALS_DIRECTORY/
    webhook_secret`, or `ZOOM_WEBHOOK_SECRET_TOKEN`."""
    return _resolve_secret(
        config,
        environ,
        file=config.webhook.secret_token_file,
        key="webhook.secret_token_file",
        credential="webhook_secret",
        variable="ZOOM_WEBHOOK_SECRET_TOKEN",
        missing="no webhook secret token (required when webhook.enabled = true)",
    )


def read_s3_secret(config: Config, environ: Mapping[str, str] | None = None) -> Secret:
    """The S3 secret access key, from `replica.secret_access_key_file`,
    `$CREDENTIALS_DIRECTORY/s3_secret_access_key`, or `AWS_SECRET_ACCESS_KEY`."""
    return _resolve_secret(
        config,
        environ,
        file=config.replica.secret_access_key_file,
        key="replica.secret_access_key_file",
        credential="s3_secret_access_key",
        variable="AWS_SECRET_ACCESS_KEY",
        missing="no S3 secret access key (required when replica.enabled = true)",
    )


def read_signing_key(config: Config, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The checkpoint signing key (PEM text), from `archive.signing_key_file` or
    `$CREDENTIALS_DIRECTORY/signing_key`; None when neither is set: no checkpoints. Refused,
    like every secret file, when group or others can read it. No environment variable: a
    private key does not belong in a process's environment."""
    env = os.environ if environ is None else environ
    key = "archive.signing_key_file"
    try:
        if config.archive.signing_key_file:
            return read_secret_file(config.archive.signing_key_file, key)
        credentials = env.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / "signing_key").exists():
            return read_secret_file(Path(credentials) / "signing_key", key)
    except ConfigError as exc:
        raise ConfigError(exc.problem, file=config.source, key=exc.key) from None
    return None


def validate_for_run(config: Config, environ: Mapping[str, str] | None = None) -> None:
    """Checks that only matter when talking to Zoom (status/verify do not need them)."""
    env = os.environ if environ is None else environ
    for key in ("account_id", "client_id"):
        if not getattr(config.zoom, key):
            raise ConfigError("is required", file=config.source, key=f"zoom.{key}")
    # Under systemd's sandbox only the StateDirectory is writable: a root elsewhere would fail
    # later with an obscure read-only-filesystem error, so name the real problem now.
    state_dirs = [Path(p) for p in env.get("STATE_DIRECTORY", "").split(":") if p]
    root = Path(config.archive.root).resolve()
    if state_dirs and not any(root.is_relative_to(d.resolve()) for d in state_dirs):
        raise ConfigError(
            f"{root} is outside the service's StateDirectory "
            f"({', '.join(map(str, state_dirs))}), the only place it may write; "
            "set archive.root inside it",
            file=config.source,
            key="archive.root",
        )
