"""`zoom-sms-archiver simulate`: the simulator as a process, until SIGINT/SIGTERM (exit 0).

Every `SimulatorConfig` field is a flag of the same name (`file_port` -> `--file-port`,
booleans also as `--no-...`), documented by the field's `doc`; `labels` is `--label
ENDPOINT=LABEL`, repeatable. With `--json` the addresses and credentials are printed as one
JSON line (keys api_url, oauth_url, file_url, control_url, account_id, client_id,
client_secret) for programs to parse; otherwise for people.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
from typing import Any, get_type_hints

from archiver.errors import ConfigError
from archiver.simulator.config import SimulatorConfig
from archiver.simulator.server import Simulator

_TYPES: dict[Any, type] = {int: int, float: float, str: str, int | None: int, float | None: float}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    hints = get_type_hints(SimulatorConfig)
    defaults = SimulatorConfig()
    for f in dataclasses.fields(SimulatorConfig):
        doc = f.metadata["doc"]
        if f.name == "labels":
            parser.add_argument(
                "--label",
                action="append",
                default=[],
                metavar="ENDPOINT=LABEL",
                help=f"{doc}; default medium for all",
            )
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{doc} (default: {getattr(defaults, f.name)})".replace("%", "%%")
        if hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = _TYPES[hints[f.name]]
            metavar = {str: "TEXT", int: "N", float: "NUM"}[kind]
            parser.add_argument(flag, type=kind, metavar=metavar, help=help_text)
    parser.add_argument(
        "--json", action="store_true", help="print the addresses as one JSON line, for programs"
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SimulatorConfig):
        value = getattr(args, f.name, None)
        if f.name != "labels" and value is not None:
            values[f.name] = value
    labels: dict[str, str] = {}
    for item in getattr(args, "label", []):
        endpoint, sep, label = item.partition("=")
        if not sep:
            raise ConfigError(f"{item!r} is not ENDPOINT=LABEL", key="--label")
        labels[endpoint] = label
    return SimulatorConfig(**values, labels=labels)


def run_simulate(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(config_from_args(args), as_json=args.json))


async def _serve(config: SimulatorConfig, as_json: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Simulator(config) as sim:
        info = {
            "api_url": sim.api_url,
            "oauth_url": sim.oauth_url,
            "file_url": sim.file_url,
            "control_url": sim.control_url,
            "account_id": sim.account_id,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        }
        if as_json:
            print(json.dumps(info), flush=True)
        else:
            print(
                f"Zoom Phone SMS simulator: seed {config.seed}, "
                f"{len(sim.session_ids)} sessions. Ctrl-C to stop.",
            )
            for key, value in info.items():
                print(f"  {key:<14} {value}")
            print(flush=True)
        await stop.wait()
    return 0
