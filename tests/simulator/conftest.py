"""Fixtures for the simulator tests: a small simulator, an HTTP client, Zoom's schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from archiver.simulator import Simulator, SimulatorConfig

# Small enough to start in milliseconds; the first four sessions still cover every session
# type, conversation kind and message type (see generate.py).
SMALL = {"sessions": 6, "mean_messages": 20.0, "busy_fraction": 0.0, "max_messages": 300}


def small_config(**changes: Any) -> SimulatorConfig:
    return SimulatorConfig(**{**SMALL, **changes})


@asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[Simulator]:
    async with Simulator(small_config(**changes)) as sim:
        yield sim


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Zoom:
    """A thin client for one simulator: real sockets, no retries, no cleverness."""

    def __init__(self, sim: Simulator, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.http = http
        self.token: str | None = None

    async def fetch_token(self, **params: str) -> Answer:
        query = {"grant_type": "account_credentials", "account_id": self.sim.account_id}
        query.update(params)
        auth = aiohttp.encode_basic_auth(self.sim.client_id, self.sim.client_secret)
        return await self.request("POST", self.sim.oauth_url, params=query, auth=auth)

    async def login(self) -> str:
        answer = await self.fetch_token()
        assert answer.status == 200, answer.body
        self.token = str(answer.json()["access_token"])
        return self.token

    async def get(self, path: str, **params: Any) -> Answer:
        if self.token is None:
            await self.login()
        query = {k: str(v) for k, v in params.items() if v is not None}
        return await self.request(
            "GET", self.sim.api_url + path, params=query, auth=f"Bearer {self.token}"
        )

    async def sync(self, session_id: str, sync_type: str, count: int = 250, **more: Any) -> Answer:
        return await self.get(
            f"/phone/sms/sessions/{session_id}/sync", sync_type=sync_type, count=count, **more
        )

    async def request(
        self, method: str, url: str, *, params: Any = None, auth: str | None = None
    ) -> Answer:
        headers = {"Authorization": auth} if auth else {}
        async with self.http.request(method, url, params=params, headers=headers) as response:
            body = await response.read()
            return Answer(response.status, dict(response.headers), body)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with running() as simulator:
        yield simulator


@pytest.fixture
def zoom(sim: Simulator, http: aiohttp.ClientSession) -> Zoom:
    return Zoom(sim, http)


def truth_by_session(sim: Simulator) -> dict[str, list[dict[str, Any]]]:
    """Ground-truth message lines per session, oldest first."""
    sessions: dict[str, list[dict[str, Any]]] = {}
    for line in sim.ground_truth():
        if line["kind"] == "message":
            sessions.setdefault(line["session_id"], []).append(line)
    return sessions


def strip_jwt(record: dict[str, Any]) -> dict[str, Any]:
    """What the truth holds for an API message: URLs without their query string."""
    copy = json.loads(json.dumps(record))
    for attachment in copy.get("attachments", []):
        attachment["download_url"] = attachment["download_url"].split("?", 1)[0]
    return copy


# --- Zoom's OpenAPI -------------------------------------------------------------------------


def _openapi_path() -> Path:
    # Vendored in the repository (tests/data/zoom/README.md says whence): a clone needs nothing
    # beside it.
    return Path(__file__).resolve().parents[1] / "data" / "zoom" / "phone-sms-openapi.json"


@cache
def response_schema(path: str) -> dict[str, Any]:
    spec = json.loads(_openapi_path().read_text(encoding="utf-8"))
    operation = spec["paths"][path]["get"]
    return dict(operation["responses"]["200"]["content"]["application/json"]["schema"])


def assert_matches_schema(path: str, value: Any) -> None:
    jsonschema.Draft7Validator(response_schema(path)).validate(value)
