"""The real archiver against the model: one case, pass by pass, every invariant checked.

Wired as `archiver/daemon.py` wires a run: `open_archive` (lock, torn-tail repair, State,
ManifestWriter), a real `ZoomClient` (its retries, error mapping and parsing are under test),
the real `SessionSync` and `Supervisor`. Only what cannot be had is replaced: the transport
(`ZoomClient._send` answers from the model), the token provider (a stub with the interface of
`zoom/auth.py`: token(), invalidate(), api_base) and the rate budgets (pacing is not under
test). The harness reads only what daemon.py reads (plus `Supervisor.incomplete()`) and the
archive's files.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from archiver.config import (
    ArchiveConfig,
    Config,
    MetricsConfig,
    RateLimitConfig,
    SyncConfig,
)
from archiver.daemon import open_archive
from archiver.store.verify import verify_archive
from archiver.sync.session import SessionSync
from archiver.sync.supervisor import Supervisor
from archiver.zoom.client import RetryPolicy, ZoomClient
from tests.model.behaviour import Disconnected
from tests.model.scenario import Case
from tests.model.zoom_model import HISTORY_START, ZoomModel

CONVERGE_PASSES = 10  # after the faults stop, a pass must report complete within this many
CONVERGE_ADVANCE = 5  # virtual seconds before each of them (past the same-second margin)
PASS_TIMEOUT = 60.0  # real seconds: only a hang reaches it (no case sleeps)
STATE_FILES = ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm")


class ModelTokens:
    """The token provider's interface (zoom/auth.py), over the model's token endpoint:
    a token is kept until `invalidate`d, so a client that never renews stays refused."""

    api_base = "https://api.model.invalid/v2"

    def __init__(self, model: ZoomModel) -> None:
        self._model = model
        self._token: str | None = None

    async def token(self) -> str:
        if self._token is None:
            self._token = self._model.issue_access_token()
        return self._token

    async def invalidate(self, rejected: str) -> None:
        if self._token == rejected:
            self._token = None


class OpenBudgets:
    """`Budgets` that never wait: pacing is tested elsewhere."""

    def label_for(self, endpoint: str) -> str:
        return "medium"

    async def acquire(self, label: str, **_: Any) -> float:
        return 0.0

    def on_response(self, *_: Any, **__: Any) -> None:
        return None


@dataclass(frozen=True)
class Finding:
    invariant: str
    session_id: str | None
    detail: str


@dataclass
class PassRecord:
    number: int
    phase: str  # scenario | converge
    stop_after: int
    requests: int = 0
    interrupted: bool = False  # stopped by the scenario (the SIGTERM path)
    over_cap: bool = False  # the harness stopped a pass that would not end
    error: str | None = None
    incomplete: dict[str, str] = field(default_factory=dict)

    @property
    def claimed_complete(self) -> bool:
        ended = not (self.interrupted or self.over_cap or self.error)
        return ended and not self.incomplete

    def summary(self) -> str:
        if self.error:
            outcome = f"raised {self.error}"
        elif self.over_cap:
            outcome = "did not end (request cap)"
        elif self.interrupted:
            outcome = "stopped"
        elif self.incomplete:
            first = list(self.incomplete.items())[:2]
            outcome = f"incomplete {len(self.incomplete)}: {first}"
        else:
            outcome = "complete"
        return f"#{self.number} {self.phase} {self.requests} req: {outcome}"


@dataclass
class Archive:
    """The manifest's message lines, read back from the files."""

    lines: dict[tuple[str, str], list[dict[str, Any]]]

    @classmethod
    def read(cls, root: Path) -> Archive:
        lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for segment in sorted((root / "manifest").glob("*.jsonl")):
            for raw in segment.read_bytes().splitlines():
                line = json.loads(raw)
                if line.get("kind") == "message":
                    key = (line["session_id"], line["message_id"])
                    lines.setdefault(key, []).append(line)
        return cls(lines)


class CaseRun:
    def __init__(self, case: Case, directory: Path) -> None:
        self.case = case
        self.root = directory / "archive"
        self.model = ZoomModel(case.seed, case.behaviour)
        self.model.populate(case.sessions, case.messages)
        self.config = Config(
            archive=ArchiveConfig(root=str(self.root)),
            sync=SyncConfig(
                history_start=HISTORY_START.date().isoformat(),
                count=case.count,
                workers=case.workers,
                lookback=float(case.lookback),
                shutdown_grace=1.0,
            ),
            rate_limits=RateLimitConfig(plan="unlimited", share=1.0),
            metrics=MetricsConfig(listen=""),
        )
        self.passes: list[PassRecord] = []
        self.findings: list[Finding] = []

    # --- the case ----------------------------------------------------------------------------

    async def run(self) -> list[Finding]:
        for name, arg in self.case.steps:
            if name == "pass":
                await self.run_pass("scenario", arg)
            elif name in ("burst", "burst_one"):
                self.model.burst(arg, one_session=name == "burst_one")
            elif name == "advance":
                self.model.advance(arg)
            elif name == "drop_state":
                for state_file in STATE_FILES:  # a cache: deleting it must lose nothing
                    (self.root / state_file).unlink(missing_ok=True)
            elif name == "delete":
                self.model.delete_session()
            if self.findings:
                return self.findings
        self.model.faults_on = False
        for _ in range(CONVERGE_PASSES):
            self.model.advance(CONVERGE_ADVANCE)
            record = await self.run_pass("converge", 0)
            if self.findings:
                return self.findings
            if record.claimed_complete:
                break
        else:
            last = self.passes[-1]
            self._find(
                "converges", _first_session(last.incomplete), f"no complete pass: {last.summary()}"
            )
            return self.findings
        self._check_final()
        return self.findings

    def _find(self, invariant: str, session_id: str | None, detail: str) -> None:
        self.findings.append(Finding(invariant, session_id, detail))

    # --- one pass ------------------------------------------------------------------------------

    async def run_pass(self, phase: str, stop_after: int) -> PassRecord:
        record = PassRecord(len(self.passes) + 1, phase, stop_after)
        self.passes.append(record)
        # What Zoom shows as the pass begins.
        expected = self.model.truth(include_deleted=False, visible=True)
        cap = 200 + 25 * (len(self.model.truth(include_deleted=True)) + len(self.model.sessions))
        stop = asyncio.Event()
        model = self.model
        before = Counter(model.requests_by)

        async def send(
            path: str, params: Mapping[str, str], token: str
        ) -> tuple[int, Mapping[str, str], bytes]:
            record.requests += 1
            if stop_after and record.requests >= stop_after and not stop.is_set():
                record.interrupted = True
                stop.set()
            if record.requests > cap:
                record.over_cap = True
                stop.set()
            if record.requests > 2 * cap:
                # A loop that ignores the stop: the transport goes away so the step fails.
                raise aiohttp.ClientConnectionError("model: transport closed after the cap")
            try:
                return model.handle(path, dict(params), token)
            except Disconnected as exc:
                raise aiohttp.ServerDisconnectedError(str(exc)) from exc

        try:
            await asyncio.wait_for(self._supervise(record, send, stop), PASS_TIMEOUT)
        except TimeoutError:
            record.over_cap = True
        except Exception as exc:  # every error of a pass is a finding, not a test crash
            record.error = _describe(exc)
        if record.error:
            self._find("no pass raises", None, f"pass {record.summary()}")
        if record.over_cap:
            busiest, asked = ((model.requests_by - before).most_common(1) or [("list", 0)])[0]
            self._find(
                "every pass ends",
                None if busiest == "list" else busiest,
                f"pass #{record.number} ({phase}) still busy after {cap} requests "
                f"(or {PASS_TIMEOUT}s), {asked} of them for {busiest}: a walk that never ends",
            )
        for violation in model.violations:
            self._find("requests follow Zoom's documented rules", None, violation)
        model.violations.clear()
        archive = Archive.read(self.root)
        self._check_lines(archive)
        if record.claimed_complete:
            self._check_claim(record, expected, archive)
        return record

    async def _supervise(self, record: PassRecord, send: Any, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http, open_archive(self.config) as (state, writer):
            auth = ModelTokens(self.model)
            await auth.token()
            client = ZoomClient(
                http,
                auth,  # type: ignore[arg-type]
                OpenBudgets(),  # type: ignore[arg-type]
                policy=RetryPolicy(backoff_base=0.0),
                rng=random.Random(self.case.seed),
                **_taken(ZoomClient, clock=self.our_clock),
            )
            client._send = send  # type: ignore[method-assign]
            session_sync = SessionSync(
                client,
                writer,
                state,
                count=self.config.sync.count,
                **_no_waiting(SessionSync, "pause"),
            )
            supervisor = Supervisor(
                self.config,
                client,
                state,
                session_sync,
                once=True,
                now=self.our_clock,
                **_no_waiting(Supervisor, "backoff"),
                **_taken(Supervisor, delay=self._wait_virtual),
            )
            try:
                await supervisor.run(stop)
            finally:
                record.incomplete = _incomplete(supervisor)

    def our_clock(self) -> datetime:
        """The archiver's clock: Zoom's (the model's) minus the case's skew."""
        return self.model.now() - timedelta(seconds=self.case.behaviour.clock_skew)

    def _wait_virtual(self, seconds: float) -> float:
        """A wait on the clock: the virtual clock moves on at once (no case sleeps)."""
        self.model.advance(math.ceil(seconds))
        return 0.0

    # --- invariants ----------------------------------------------------------------------------

    def _check_lines(self, archive: Archive) -> None:
        """Every pass: no message Zoom never sent, no content twice, records as sent."""
        ever = self.model.truth(include_deleted=True)
        for (session_id, message_id), lines in archive.lines.items():
            record = ever.get((session_id, message_id))
            if record is None:
                self._find("nothing Zoom never sent", session_id, f"message {message_id}")
                continue
            digests = [line["digest"] for line in lines]
            if len(set(digests)) != len(digests):
                self._find("no content twice", session_id, f"{message_id}: {len(digests)} lines")
            if lines[0]["record"] != record:
                self._find(
                    "records kept as Zoom sent them",
                    session_id,
                    f"{message_id}: {lines[0]['record']} != {record}",
                )
            if len(lines) > 1:
                self._find(
                    "one line per message Zoom never changed",
                    session_id,
                    f"{message_id}: {len(lines)} lines",
                )

    def _check_claim(
        self, record: PassRecord, expected: dict[tuple[str, str], Any], archive: Archive
    ) -> None:
        """A pass that says it is complete held everything Zoom held when it began."""
        missing = sorted(key for key in expected if key not in archive.lines)
        if not missing:
            return
        session_id = missing[0][0]
        of_it = [mid for sid, mid in missing if sid == session_id]
        held = sum(1 for sid, _ in expected if sid == session_id)
        self._find(
            "a pass that reports complete is complete",
            session_id,
            f"pass #{record.number} ({record.phase}) reported complete; "
            f"{len(missing)} messages missing in all, {len(of_it)} of this session's "
            f"{held} (e.g. {of_it[:3]})",
        )

    def _check_final(self) -> None:
        archive = Archive.read(self.root)
        alive = self.model.truth(include_deleted=False)
        missing = sorted(key for key in alive if key not in archive.lines)
        if missing:
            session_id = missing[0][0]
            self._find(
                "the archive holds every message",
                session_id,
                f"{len(missing)} missing after convergence, e.g. {missing[:3]}",
            )
        report = verify_archive(self.root)
        if not report.ok:
            problems = [f"{p.kind} at {p.where}: {p.detail}" for p in report.problems[:3]]
            self._find("the chain verifies", None, "; ".join(problems))


def _first_session(incomplete: dict[str, str]) -> str | None:
    return next(iter(incomplete), None)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _no_waiting(cls: type[Any], *names: str) -> dict[str, Any]:
    """Zero schedules for the waits `cls` lets its caller set (`backoff`, `pause`): no case
    sleeps. One the constructor does not take is left out, so the same test also runs on
    the commit before this session's work (it sleeps there, 0.5 s * attempt)."""
    taken = inspect.signature(cls).parameters
    return {name: (lambda attempt: 0.0) for name in names if name in taken}


def _taken(cls: type[Any], **arguments: Any) -> dict[str, Any]:
    """The keyword arguments `cls` takes (the same test runs on the commit before them)."""
    taken = inspect.signature(cls).parameters
    return {name: value for name, value in arguments.items() if name in taken}


def _incomplete(supervisor: Supervisor) -> dict[str, str]:
    report = getattr(supervisor, "incomplete", None)  # absent before this session's work
    found = dict(report()) if report is not None else {}
    found.update(supervisor.failed_sessions)
    return found
