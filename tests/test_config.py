"""The configuration loader: every documented key, every error names file, key and problem."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from archiver.config import (
    Config,
    Secret,
    config_from_mapping,
    load_config,
    read_client_secret,
    read_secret_file,
    zoom_url_problem,
)
from archiver.errors import ConfigError
from archiver.ops.demo import write_demo_config
from archiver.simulator import Simulator, SimulatorConfig
from bench.harness import write_config as write_bench_config
from tests.helpers import write_config as write_test_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zsa.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_and_matches_defaults() -> None:
    config = load_config(REPO / "config.example.toml")
    defaults = Config()
    # The example documents every key with its default (bar credentials and absolute paths).
    assert config.sync == defaults.sync
    assert config.rate_limits == defaults.rate_limits
    assert config.downloads == defaults.downloads
    assert config.metrics == defaults.metrics
    assert config.log == defaults.log
    assert config.zoom.api_url == "https://api.zoom.us/v2"
    assert config.zoom.oauth_url == "https://zoom.us/oauth/token"
    assert config.archive.root == "/var/lib/zoom-sms-archiver"
    assert config.webhook.enabled is False


def test_example_config_names_every_key() -> None:
    text = (REPO / "config.example.toml").read_text()
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        assert f"[{section.name}]" in text
        for key in dataclasses.fields(getattr(Config(), section.name)):
            assert f"{key.name} =" in text or f"[{section.name}.{key.name}]" in text, key.name


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ("[sync]\ncount = 300\n", "sync.count", "300 is above Zoom's maximum of 250"),
        ("[sync]\ncount = 0\n", "sync.count", "below Zoom's minimum of 1"),
        ('[sync]\ncount = "ten"\n', "sync.count", "must be an integer, not a string"),
        ("[sync]\nworkers = 0\n", "sync.workers", "greater than 0"),
        ("[downloads]\nworkers = 65\n", "downloads.workers", "more than 64"),
        ('[sync]\nhistory_start = "last year"\n', "sync.history_start", "not a date"),
        ('[sync]\nsession_type = "everyone"\n', "sync.session_type", "not one of"),
        ("[sync]\ncolour = 1\n", "sync.colour", "unknown key"),
        ("[syncc]\ncount = 1\n", "syncc", "unknown key"),
        ("sync = 3\n", "sync", "must be a table"),
        ('[rate_limits]\nplan = "enterprise"\n', "rate_limits.plan", "not one of"),
        ("[rate_limits]\nshare = 1.5\n", "rate_limits.share", "outside [0.01, 1]"),
        # a millionth of the budget made --once wait for hours without a word
        ("[rate_limits]\nshare = 1e-6\n", "rate_limits.share", "outside [0.01, 1]"),
        # a checkpoint per manifest line, and an idle daemon spinning on the checkpointer
        ("[archive]\ncheckpoint_interval = 1e-300\n", "archive.checkpoint_interval", "less than"),
        ("[sync]\npoll_interval = 1e-300\n", "sync.poll_interval", "less than"),
        ("[replica]\nmax_lag = 1e-9\n", "replica.max_lag", "less than"),
        # aiohttp reads {name} as a variable route part: a wildcard, or a crash at start
        ('[webhook]\npath = "/{x}"\n', "webhook.path", "without braces"),
        ('[webhook]\npath = "/{x:[}"\n', "webhook.path", "without braces"),
        ('[metrics]\nlisten = "127.0.0.1:\u00b2"\n', "metrics.listen", ""),
        ('[rate_limits.labels]\nsync = "extreme"\n', "rate_limits.labels.sync", "not one of"),
        ('[rate_limits.labels]\nfoo = "heavy"\n', "rate_limits.labels.foo", "unknown endpoint"),
        ('[downloads]\nallowed_schemes = ["ftp"]\n', "downloads.allowed_schemes", "ftp"),
        ('[downloads]\nallowed_hosts = "zoom.us"\n', "downloads.allowed_hosts", "list of strings"),
        (
            "[downloads]\nallow_private_addresses = 1\n",
            "downloads.allow_private_addresses",
            "true or false",
        ),
        ('[metrics]\nlisten = "nowhere"\n', "metrics.listen", "host:port"),
        ('[log]\nlevel = "loud"\n', "log.level", "not one of"),
        ('[zoom]\napi_url = "ftp://x"\n', "zoom.api_url", "not an http(s) URL"),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, toml: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[sync\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[archive]\nroot = "arch"\n[zoom]\nclient_secret_file = "s"\n')
    config = load_config(path)
    assert config.archive.root == str(tmp_path.resolve() / "arch")
    assert config.zoom.client_secret_file == str(tmp_path.resolve() / "s")


def test_integers_accepted_for_float_keys() -> None:
    config = config_from_mapping({"sync": {"poll_interval": 5}})
    assert config.sync.poll_interval == 5.0


def test_secret_file_permissions(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2-very-secret\n")
    secret.chmod(0o640)
    with pytest.raises(ConfigError) as info:
        read_secret_file(secret, "zoom.client_secret_file")
    assert "chmod 600" in str(info.value)
    assert "hunter2" not in str(info.value)
    secret.chmod(0o600)
    value = read_secret_file(secret, "zoom.client_secret_file")
    assert value.reveal() == "hunter2-very-secret"
    assert "hunter2" not in repr(value) and "hunter2" not in str(value)
    assert "hunter2" not in repr(Config())


def test_secret_sources_in_order(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "client_secret").write_text("from-systemd")
    (creds / "client_secret").chmod(0o600)
    config = load_config(write(tmp_path, ""))
    env = {"CREDENTIALS_DIRECTORY": str(creds), "ZOOM_CLIENT_SECRET": "from-env"}
    assert read_client_secret(config, env) == Secret("from-systemd")
    assert read_client_secret(config, {"ZOOM_CLIENT_SECRET": "from-env"}) == Secret("from-env")
    file_secret = tmp_path / "file_secret"
    file_secret.write_text("from-file")
    file_secret.chmod(0o600)
    config = load_config(write(tmp_path, f'[zoom]\nclient_secret_file = "{file_secret}"\n'))
    assert read_client_secret(config, env) == Secret("from-file")
    with pytest.raises(ConfigError, match="no client secret"):
        read_client_secret(load_config(write(tmp_path, "")), {})


def test_cli_exits_2_with_the_key_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\ncount = 300\n")
    proc = subprocess.run(
        [sys.executable, "-m", "archiver", "run", "--config", str(path), "--once"],
        capture_output=True,
        text=True,
        env={**os.environ, "ZOOM_CLIENT_SECRET": "x"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{path}: sync.count: 300 is above Zoom's maximum of 250" in proc.stderr


def test_archive_root_must_be_inside_systemd_state_directory(tmp_path: Path) -> None:
    from archiver.config import validate_for_run

    path = write(tmp_path, '[zoom]\naccount_id = "a"\nclient_id = "c"\n[archive]\nroot = "arch"\n')
    config = load_config(path)
    validate_for_run(config, {})
    validate_for_run(config, {"STATE_DIRECTORY": str(tmp_path)})
    with pytest.raises(ConfigError, match="outside the service's StateDirectory") as info:
        validate_for_run(config, {"STATE_DIRECTORY": "/var/lib/elsewhere"})
    assert info.value.key == "archive.root"


# --- floats are finite --------------------------------------------------------------------


def keys_of(wanted: tuple[type, ...], cls: type[Any] = Config, prefix: str = "") -> list[str]:
    """Every key whose type is one of `wanted`, found from the dataclasses' hints, so a new key
    cannot escape the tables below (bool is not an int here: its hint is bool)."""
    keys = []
    for name, hint in get_type_hints(cls).items():
        if name == "source":
            continue
        options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys += keys_of(wanted, hint, f"{prefix}{name}.")
        elif any(option in wanted for option in options):
            keys.append(f"{prefix}{name}")
    return keys


def refusal(tmp_path: Path, key: str, value: str) -> str:
    """The error `key = value` gets, which must name the file and the key first."""
    path = write(tmp_path, f"{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    return message


FLOAT_KEYS = keys_of((float,))
NON_FINITE = ("nan", "+nan", "-nan", "inf", "+inf", "-inf")


def test_the_float_key_walk_finds_the_keys_it_must() -> None:
    # A walk that found nothing would make the table below vacuous.
    assert {"sync.lookback", "sync.poll_interval", "webhook.timestamp_tolerance"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_float_keys_refuse_nan_and_infinity(tmp_path: Path, key: str, value: str) -> None:
    assert "not a finite number" in refusal(tmp_path, key, value)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_float_keys_take_finite_numbers(tmp_path: Path, key: str) -> None:
    section, name = key.rsplit(".", 1)
    value = 1.5 if key == "archive.checkpoint_interval" else 0.75  # above each floor
    config = load_config(write(tmp_path, f"{key} = {value}\n"))
    assert getattr(getattr(config, section), name) == value


NUMBER_KEYS = keys_of((int, float))
HUGE_INTEGER = "9" * 400  # beyond a float's range: float() overflows


def test_the_number_key_walk_finds_ints_and_floats() -> None:
    assert {"sync.workers", "sync.lookback", "replica.retention_days"} <= set(NUMBER_KEYS)


@pytest.mark.parametrize("value", ["1e300", "1e11", HUGE_INTEGER])
@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_every_number_key_has_a_ceiling(tmp_path: Path, key: str, value: str) -> None:
    # A huge finite number is as wrong as inf: a lookback of 1e11 s overflowed discovery's
    # date arithmetic, a timestamp tolerance of 1e300 s turned replay protection off.
    message = refusal(tmp_path, key, value)
    assert HUGE_INTEGER not in message  # named by its size, not printed
    assert len(message) < len(str(tmp_path / "zsa.toml")) + 200, message


@pytest.mark.parametrize(
    ("key", "largest"),
    [
        ("archive.checkpoint_interval", 7 * 86400),
        ("sync.poll_interval", 86400),
        ("sync.workers", 256),
        ("sync.lookback", 366 * 86400),
        ("sync.shutdown_grace", 3600),
        ("downloads.max_bytes", 1 << 40),
        ("downloads.refresh_margin", 86400),
        ("downloads.min_rate", 1 << 30),
        ("webhook.timestamp_tolerance", 3600),
        ("webhook.max_body_bytes", 64 << 20),
        ("replica.retention_days", 36500),
        ("replica.max_lag", 86400),
    ],
)
def test_each_ceiling_is_where_config_example_says(tmp_path: Path, key: str, largest: int) -> None:
    section, name = key.rsplit(".", 1)
    config = load_config(write(tmp_path, f"{key} = {largest}\n"))
    assert getattr(getattr(config, section), name) == largest
    with pytest.raises(ConfigError, match=r"is more than"):
        load_config(write(tmp_path, f"{key} = {largest + 1}\n"))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        # Before the finite check, inf reached discovery's date arithmetic and crashed it;
        # before the ceiling, 1e11 passed the check and the second pass crashed there.
        ("inf", "inf is not a finite number"),
        ("1e11", "100000000000.0 is more than 366 days"),
    ],
)
def test_cli_exits_2_on_a_lookback_dates_cannot_hold(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = write(
        tmp_path, f'[zoom]\naccount_id = "a"\nclient_id = "c"\n[sync]\nlookback = {value}\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "archiver", "run", "--config", str(path), "--once"],
        capture_output=True,
        text=True,
        env={**os.environ, "ZOOM_CLIENT_SECRET": "x"},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}: sync.lookback: {problem}" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- Zoom URLs: https, or http to loopback only -------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://api.zoom.us/v2", None),
        ("https://zoom.us/oauth/token", None),
        ("HTTPS://API-EU.ZOOM.US/v2", None),
        ("https://10.1.2.3:8443/v2", None),
        ("http://127.0.0.1:8080/v2", None),
        ("http://127.255.255.254/oauth/token", None),
        ("http://[::1]:9000/v2", None),
        ("http://localhost:9000/oauth/token", None),
        ("http://LOCALHOST/v2", None),
        ("http://api.zoom.us/v2", "plain http"),
        ("http://zoom.us/oauth/token", "plain http"),
        ("http://10.0.0.1/v2", "plain http"),
        ("http://0.0.0.0:8080/v2", "plain http"),
        ("http://128.0.0.1/v2", "plain http"),
        ("http://[::2]/v2", "plain http"),
        ("http://localhost.example.com/v2", "plain http"),
        ("http://127.0.0.1.example.com/v2", "plain http"),
        ("http://127.0.0.1@example.com/v2", "plain http"),
        ("http://user:pw@10.0.0.1/v2", "plain http"),
        ("ftp://zoom.us/v2", "not an http(s) URL"),
        ("api.zoom.us/v2", "not an http(s) URL"),
        ("", "not an http(s) URL"),
        ("https://", "has no host"),
        ("http:///v2", "has no host"),
        ("http://[::1/v2", "not a valid URL"),
        # urllib sees 127.0.0.1 here, yarl (aiohttp) sees evil.com: refused before either.
        ("http://evil.com\\@127.0.0.1:9/oauth/token", "backslash"),
        ("https://zoom.us/oauth/token\\x", "backslash"),
        ("http://127.0.0.1 /v2", "a space"),
        ("http://127.0.0.1/v2\t", "a space"),
        ("http://127.0.0.1/v2\x00", "control character"),
        ("http://[::1%25eth0]:80/v2", None),
    ],
)
def test_zoom_url_rule(url: str, fragment: str | None) -> None:
    problem = zoom_url_problem(url)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


@pytest.mark.parametrize("key", ["api_url", "oauth_url"])
@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://zoom.us/v2", True),
        ("http://192.168.1.10:8080/v2", True),
        ("https://zoom.us/v2", False),
        ("http://127.0.0.1:8080/v2", False),
        ("http://[::1]:8080/v2", False),
    ],
)
def test_zoom_urls_are_https_unless_loopback(
    tmp_path: Path, key: str, url: str, refused: bool
) -> None:
    path = write(tmp_path, f'[zoom]\n{key} = "{url}"\n')
    if refused:
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}: zoom.{key}: "), info.value
        assert "plain http" in str(info.value)
    else:
        assert getattr(load_config(path).zoom, key) == url


async def test_simulator_configs_of_tests_demo_and_bench_still_load(tmp_path: Path) -> None:
    # The simulator serves plain http on loopback: each writer's config must pass the URL rule.
    async with Simulator(SimulatorConfig(sessions=1)) as sim:
        info = {
            "api_url": sim.api_url,
            "oauth_url": sim.oauth_url,
            "account_id": sim.account_id,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        }
        assert info["api_url"].startswith("http://127.0.0.1:")
        (tmp_path / "demo").mkdir()
        paths = [
            write_test_config(tmp_path / "tests", sim),
            write_demo_config(tmp_path / "demo", info),
            write_bench_config(tmp_path / "bench", info),
        ]
        for path in paths:
            config = load_config(path)
            assert (config.zoom.api_url, config.zoom.oauth_url) == (sim.api_url, sim.oauth_url)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'[sync]\nsession_type = "\xff"\n', "not UTF-8"),
        (b"[sync]\nworkers = " + b"9" * 5000 + b"\n", "not valid TOML"),  # past int's digit limit
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML"),  # nesting
    ],
)
def test_a_file_toml_cannot_hold_is_a_config_error(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    # Each raised a traceback (exit 1: a restart loop under systemd) instead of exit 2.
    path = tmp_path / "zsa.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


@pytest.mark.parametrize("where", ["through_a_file", "nul", "too_long"])
def test_a_secret_path_that_cannot_be_opened_is_a_config_error(tmp_path: Path, where: str) -> None:
    from archiver.config import read_secret_file

    (tmp_path / "file").write_text("x")
    path = {
        "through_a_file": str(tmp_path / "file" / "secret"),
        "nul": str(tmp_path / "se\0cret"),
        "too_long": str(tmp_path / ("s" * 5000)),
    }[where]
    with pytest.raises(ConfigError, match="cannot be opened") as info:
        read_secret_file(path, "zoom.client_secret_file")
    assert len(str(info.value)) < 400
