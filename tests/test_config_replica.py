"""`[replica]`: every key validated like the rest; the secret follows the client secret's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.config import Config, load_config, read_s3_secret, replica_url_problem
from archiver.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ON = 'enabled = true\nbucket = "zsa-archive"\naccess_key_id = "AKIAEXAMPLE"\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "zsa.toml"
    path.write_text(f"[replica]\n{body}", encoding="utf-8")
    return path


def test_example_documents_the_defaults() -> None:
    assert load_config(REPO / "config.example.toml").replica == Config().replica


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        ('endpoint_url = "http://s3.example.com"\n', "replica.endpoint_url", "not loopback"),
        ('endpoint_url = "ftp://127.0.0.1"\n', "replica.endpoint_url", "not an http(s) URL"),
        ('endpoint_url = "https://s3.example.com/bucket"\n', "replica.endpoint_url", "host[:port]"),
        ('endpoint_url = "https://k:s@s3.example.com"\n', "replica.endpoint_url", "credentials"),
        ('lock_mode = "compliance"\n', "replica.lock_mode", "not one of COMPLIANCE"),
        ('lock_mode = "NONE"\n', "replica.lock_mode", "not one of"),
        ("retention_days = 0\n", "replica.retention_days", "greater than 0"),
        ("retention_days = 1.5\n", "replica.retention_days", "must be an integer"),
        ("max_lag = 0\n", "replica.max_lag", "greater than 0"),
        ("max_lag = nan\n", "replica.max_lag", "not a finite number"),
        ("max_lag = inf\n", "replica.max_lag", "not a finite number"),
        ("max_lag = -inf\n", "replica.max_lag", "not a finite number"),
        ("chunk_max_bytes = 100\n", "replica.chunk_max_bytes", "outside"),
        ("chunk_max_bytes = 6000000000\n", "replica.chunk_max_bytes", "outside"),
        ('prefix = "/acme/"\n', "replica.prefix", "must not start with '/'"),
        ('prefix = "acme/../other/"\n', "replica.prefix", "'..'"),
        ('prefix = "a//b/"\n', "replica.prefix", "'//'"),
        ("enabled = 1\n", "replica.enabled", "true or false"),
        ("colour = 1\n", "replica.colour", "unknown key"),
        ('enabled = true\naccess_key_id = "AK"\n', "replica.bucket", "not an S3 bucket name"),
        (
            'enabled = true\nbucket = "Upper_Case"\naccess_key_id = "AK"\n',
            "replica.bucket",
            "not an S3 bucket name",
        ),
        ('enabled = true\nbucket = "zsa-archive"\n', "replica.access_key_id", "is required"),
        (ON + 'region = ""\n', "replica.region", "is required"),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, body: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://s3.eu-central-1.wasabisys.com", True),
        ("https://s3.us-west-002.backblazeb2.com/", True),
        ("http://127.0.0.1:9000", True),
        ("http://[::1]:9000", True),
        ("http://localhost:9000", True),
        ("http://10.0.0.5:9000", False),
        ("https://", False),
        ("https://h?x=1", False),
    ],
)
def test_endpoint_urls(url: str, ok: bool) -> None:
    assert (replica_url_problem(url) is None) is ok


def test_disabled_replica_needs_nothing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'bucket = ""\n'))
    assert config.replica.enabled is False


def test_secret_file_relative_to_config_and_refused_when_readable(tmp_path: Path) -> None:
    secret = tmp_path / "s3_secret"
    secret.write_text("wJalrXUtnFEMI-very-secret\n")
    secret.chmod(0o644)
    config = load_config(write(tmp_path, ON + 'secret_access_key_file = "s3_secret"\n'))
    assert config.replica.secret_access_key_file == str(tmp_path.resolve() / "s3_secret")
    with pytest.raises(ConfigError) as info:
        read_s3_secret(config, environ={})
    message = str(info.value)
    assert "replica.secret_access_key_file" in message and "chmod 600" in message
    assert "wJalr" not in message
    secret.chmod(0o600)
    value = read_s3_secret(config, environ={"AWS_SECRET_ACCESS_KEY": "from-env"})
    assert value.reveal() == "wJalrXUtnFEMI-very-secret"
    assert "wJalr" not in repr(value) and "wJalr" not in repr(config)


def test_secret_sources_in_order(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ON))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "s3_secret_access_key").write_text("from-systemd")
    (creds / "s3_secret_access_key").chmod(0o600)
    env = {"CREDENTIALS_DIRECTORY": str(creds), "AWS_SECRET_ACCESS_KEY": "from-env"}
    assert read_s3_secret(config, environ=env).reveal() == "from-systemd"
    assert read_s3_secret(config, environ={"AWS_SECRET_ACCESS_KEY": "e"}).reveal() == "e"
    with pytest.raises(ConfigError) as info:
        read_s3_secret(config, environ={})
    assert "AWS_SECRET_ACCESS_KEY" in str(info.value)
    assert "s3_secret_access_key" in str(info.value)
