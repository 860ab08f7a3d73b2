"""Shared test helpers: archiver configs pointing at a simulator, manifest readers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archiver.config import Config, load_config

SYNC_DEFAULTS = 'history_start = "2024-01-01"\npoll_interval = 1\nworkers = 4'


def write_config(
    directory: Path,
    sim: Any,
    *,
    root: Path | None = None,
    extra: str = "",
    sync: str = "",
    rate_limits: str = 'plan = "unlimited"',
    downloads: str = "",
    metrics_listen: str = "",
) -> Path:
    """A config file for `run` against simulator `sim` (an archiver.simulator.Simulator or a
    dict with its printed URLs and credentials)."""
    info = (
        sim
        if isinstance(sim, dict)
        else {
            "api_url": sim.api_url,
            "oauth_url": sim.oauth_url,
            "account_id": sim.account_id,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "client_secret"
    secret.write_text(info["client_secret"])
    secret.chmod(0o600)
    root = root or directory / "archive"
    path = directory / "config.toml"
    path.write_text(
        f"""
[zoom]
account_id = "{info["account_id"]}"
client_id = "{info["client_id"]}"
client_secret_file = "{secret}"
api_url = "{info["api_url"]}"
oauth_url = "{info["oauth_url"]}"

[archive]
root = "{root}"

[sync]
{_merge_lines(SYNC_DEFAULTS, sync)}

[rate_limits]
{rate_limits}

[downloads]
allowed_hosts = ["127.0.0.1", "localhost"]
allowed_schemes = ["http", "https"]
allow_private_addresses = true
{downloads}

[metrics]
listen = "{metrics_listen}"

[log]
level = "warning"
format = "json"
{extra}
""",
        encoding="utf-8",
    )
    return path


def _merge_lines(defaults: str, overrides: str) -> str:
    """`key = value` lines: overrides replace defaults with the same key (TOML forbids twice)."""
    merged: dict[str, str] = {}
    for line in [*defaults.splitlines(), *overrides.splitlines()]:
        if line.strip():
            merged[line.split("=", 1)[0].strip()] = line
    return "\n".join(merged.values())


def load(path: Path) -> Config:
    return load_config(path)


def manifest_lines(root: Path) -> Iterator[dict[str, Any]]:
    for segment in sorted((root / "manifest").glob("*.jsonl")):
        with segment.open("rb") as fh:
            for line in fh:
                yield json.loads(line)


def archived_messages(root: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(session_id, message_id) -> every message line for it, in manifest order."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in manifest_lines(root):
        if line["kind"] == "message":
            out.setdefault((line["session_id"], line["message_id"]), []).append(line)
    return out


def truth_messages(sim: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (item["session_id"], item["message_id"]): item["record"]
        for item in sim.ground_truth()
        if item["kind"] == "message" and not item.get("deleted")
    }


def assert_matches_truth(root: Path, sim: Any) -> None:
    """Every message of the simulator is archived exactly once per distinct content."""
    archived = archived_messages(root)
    truth = truth_messages(sim)
    missing = sorted(set(truth) - set(archived))
    assert not missing, f"{len(missing)} messages missing, e.g. {missing[:3]}"
    for key, lines in archived.items():
        digests = [line["digest"] for line in lines]
        assert len(digests) == len(set(digests)), f"duplicate line for {key}"
        if key in truth:
            assert lines[-1]["record"] == truth[key], f"content differs for {key}"
