"""The configuration loader: every documented key, every error names file, key and problem."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.config import (
    Config,
    Secret,
    config_from_mapping,
    load_config,
    read_client_secret,
    read_secret_file,
)
from archiver.errors import ConfigError

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
        ('[sync]\nhistory_start = "last year"\n', "sync.history_start", "not a date"),
        ('[sync]\nsession_type = "everyone"\n', "sync.session_type", "not one of"),
        ("[sync]\ncolour = 1\n", "sync.colour", "unknown key"),
        ("[syncc]\ncount = 1\n", "syncc", "unknown key"),
        ("sync = 3\n", "sync", "must be a table"),
        ('[rate_limits]\nplan = "enterprise"\n', "rate_limits.plan", "not one of"),
        ("[rate_limits]\nshare = 1.5\n", "rate_limits.share", "outside (0, 1]"),
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
