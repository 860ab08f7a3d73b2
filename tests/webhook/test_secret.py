"""The webhook secret token: where it is read from, and a daemon that cannot have it."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver import daemon
from archiver.config import Secret, load_config, read_webhook_secret
from archiver.errors import ConfigError
from archiver.simulator import Simulator
from tests.helpers import write_config
from tests.webhook.conftest import sim_config


def config_file(tmp_path: Path, webhook: str) -> Path:
    path = tmp_path / "zsa.toml"
    path.write_text(f"[webhook]\nenabled = true\n{webhook}", encoding="utf-8")
    return path


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_sources_in_order(tmp_path: Path) -> None:
    # Loads without secret_token_file: the secret may come from systemd or the environment.
    config = load_config(config_file(tmp_path, ""))
    creds = tmp_path / "creds"
    creds.mkdir()
    private(creds / "webhook_secret", "from-systemd\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "ZOOM_WEBHOOK_SECRET_TOKEN": "from-env"}
    assert read_webhook_secret(config, env) == Secret("from-systemd")
    assert read_webhook_secret(config, {"ZOOM_WEBHOOK_SECRET_TOKEN": "from-env"}) == Secret(
        "from-env"
    )
    private(tmp_path / "token", "from-file")
    config = load_config(config_file(tmp_path, 'secret_token_file = "token"\n'))
    assert read_webhook_secret(config, env) == Secret("from-file")


def test_no_secret_and_an_open_file_are_refused(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, ""))
    with pytest.raises(ConfigError) as caught:
        read_webhook_secret(config, {})
    assert caught.value.key == "webhook.secret_token_file"
    assert "ZOOM_WEBHOOK_SECRET_TOKEN" in str(caught.value)
    private(tmp_path / "token", "s3cret-token", mode=0o640)
    config = load_config(config_file(tmp_path, 'secret_token_file = "token"\n'))
    with pytest.raises(ConfigError, match="readable by group or others") as caught:
        read_webhook_secret(config, {})
    assert "s3cret-token" not in str(caught.value)


async def test_the_daemon_refuses_to_start_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZOOM_WEBHOOK_SECRET_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    async with Simulator(sim_config()) as sim:
        path = write_config(tmp_path, sim, extra="[webhook]\nenabled = true\n")
        with pytest.raises(ConfigError, match="no webhook secret token"):
            await daemon.run(load_config(path), once=False)
    # Refused before the archive was opened: nothing was written.
    assert not (tmp_path / "archive").exists()
    # --once does not listen for webhooks, so it needs no secret.
    async with Simulator(sim_config()) as sim:
        path = write_config(tmp_path, sim, extra="[webhook]\nenabled = true\n")
        assert (await daemon.run(load_config(path), once=True)).ok
