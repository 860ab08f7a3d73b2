"""The sd_notify protocol against real AF_UNIX datagram sockets (a path and an abstract name)."""

from __future__ import annotations

import asyncio
import os
import selectors
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from archiver import daemon
from archiver.config import ArchiveConfig, Config, ZoomConfig
from archiver.ops.sdnotify import Notifier, StartupProgress, watchdog_loop
from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message

T = TypeVar("T")


class Receiver:
    """What systemd's end of NOTIFY_SOCKET sees."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def notifier(self, **extra: str) -> Notifier:
        return Notifier({"NOTIFY_SOCKET": self.env_value, **extra})

    def recv(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def drain(self) -> list[bytes]:
        """Every datagram queued right now, without waiting."""
        self.sock.setblocking(False)
        out: list[bytes] = []
        while True:
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                return out


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="sdn-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(short_dir / "notify")
        env_value = address
    else:
        name = f"zsa-test-{uuid.uuid4().hex}"
        address = "\0" + name
        env_value = "@" + name
    sock.bind(address)
    with sock:
        yield Receiver(sock, env_value)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.ready(status="archive open"), b"READY=1\nSTATUS=archive open"),
        (lambda n: n.status("12 sessions, 3 downloads"), b"STATUS=12 sessions, 3 downloads"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.stopping(status="draining"), b"STOPPING=1\nSTATUS=draining"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (lambda n: n.extend_timeout(90), b"EXTEND_TIMEOUT_USEC=90000000"),
        (lambda n: n.status("caf\u00e9 \u2713"), "STATUS=caf\u00e9 \u2713".encode()),
    ],
)
def test_messages_arrive(
    receiver: Receiver, call: Callable[[Notifier], bool], expected: bytes
) -> None:
    notifier = receiver.notifier()
    assert notifier.enabled
    assert call(notifier) is True
    assert receiver.recv() == expected


def test_status_cannot_inject_other_assignments(receiver: Receiver) -> None:
    # A line break in a status (e.g. from an error message) must not become READY=1.
    assert receiver.notifier().status("ok\nREADY=1\r\nSTOPPING=1\0x") is True
    assert receiver.recv() == b"STATUS=ok READY=1  STOPPING=1 x"


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/path"])
def test_no_usable_socket_is_a_no_op(value: str | None) -> None:
    notifier = Notifier({} if value is None else {"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.stopping() is False
    assert notifier.watchdog() is False


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.env_value)
    assert Notifier().ready() is True
    assert receiver.recv() == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert Notifier().ready() is False


def test_dead_socket_never_raises_and_logs_once(short_dir: Path) -> None:
    missing = Notifier({"NOTIFY_SOCKET": str(short_dir / "gone")})
    closed_path = short_dir / "closed"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(closed_path))
    closed = Notifier({"NOTIFY_SOCKET": str(closed_path)})  # the file stays, nobody listens
    abstract = Notifier({"NOTIFY_SOCKET": f"@zsa-nobody-{uuid.uuid4().hex}"})
    for notifier in (missing, closed, abstract):
        with capture_logs() as logs:
            assert notifier.ready() is False
            assert notifier.watchdog() is False
            assert notifier.stopping() is False
        assert [entry["event"] for entry in logs] == ["sdnotify_send_failed"]
        assert logs[0]["notify"] == "READY"


def test_recovery_is_logged(short_dir: Path) -> None:
    path = short_dir / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        assert notifier.watchdog() is False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            assert notifier.watchdog() is True
            assert notifier.watchdog() is True
    assert [entry["event"] for entry in logs] == ["sdnotify_send_failed", "sdnotify_send_recovered"]


def test_full_queue_drops_instead_of_blocking(receiver: Receiver) -> None:
    # Nobody reads: the kernel queue fills. A blocking send would never return here, so that
    # all 5000 calls returned is the proof that none blocked; and once the queue is full,
    # every further send fails at once (dropped, not queued, not waited for).
    notifier = receiver.notifier()
    with capture_logs():
        results = [notifier.status("x" * 1000) for _ in range(5000)]
    assert len(results) == 5000
    assert results[0] is True
    first_drop = results.index(False)
    assert not any(results[first_drop:])
    assert len(receiver.drain()) == first_drop  # what was sent is there, the rest was dropped


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("30000000", "SELF", 30.0),
        ("250000", "SELF", 0.25),
        ("30000000", "OTHER", None),  # meant for another process (e.g. our parent)
        ("30000000", "", None),
        ("30000000", "abc", None),
        ("0", None, None),
        ("-5", None, None),
        ("", None, None),
        ("30s", None, None),
    ],
)
def test_watchdog_interval(usec: str | None, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "@x"}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = {"SELF": str(os.getpid()), "OTHER": str(os.getpid() + 1)}.get(
            pid, pid
        )
    assert Notifier(env).watchdog_interval() == expected


class _VirtualSelector(selectors.DefaultSelector):
    """A selector whose idle waits cost no wall time: when nothing is ready, it moves its
    clock on by the wait the loop asked for (to the loop's next timer) and returns."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only I/O can wake the loop, wait for it
            return super().select(None)
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: `loop.time()` starts at 0 and moves only when the loop
    would otherwise sleep, straight to the next timer. `asyncio.sleep`, `wait_for` and
    `timeout` keep their meaning; a test reads exact times, whatever the machine's speed."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


def test_the_virtual_clock_moves_only_while_the_loop_waits() -> None:
    # The tests below rely on it: an hour's sleep is an hour on the loop's clock, at once;
    # work that does not wait leaves the clock where it was.
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time()

    assert run_virtual(main) == (0.0, 3600.0)


def test_watchdog_loop_pings_every_half_interval_until_stopped(receiver: Receiver) -> None:
    # On the virtual clock each ping's time is exact: one at once, then one every
    # WATCHDOG_USEC / 2. Fails on a wrong period (other times, another count), a first ping
    # only after a wait, a ping that does not reach the socket, a ping after `stop`, and a
    # loop that notices `stop` only at its next period (the clock would move on).
    async def main() -> tuple[list[float], list[bytes], float, list[bytes]]:
        loop = asyncio.get_running_loop()
        notifier = receiver.notifier(WATCHDOG_USEC="100000")  # 0.1 s: a ping every 0.05 s
        sent: list[float] = []
        ping = notifier.watchdog

        def watchdog() -> bool:
            sent.append(loop.time())
            return ping()

        notifier.watchdog = watchdog  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(watchdog_loop(notifier, stop))
        await asyncio.sleep(0.325)  # virtual seconds: between the pings of 0.30 and 0.35
        pings = receiver.drain()
        stop.set()
        stopped_at = loop.time()
        await asyncio.wait_for(task, timeout=10)  # a guard against a hang, nothing more
        waited = loop.time() - stopped_at
        await asyncio.sleep(0.15)  # a whole period and more after `stop`
        return sent, pings, waited, receiver.drain()

    sent, pings, waited, after_stop = run_virtual(main)
    assert sent == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
    assert pings == [b"WATCHDOG=1"] * 7
    assert waited == 0.0  # `stop` ended the wait at once, not at the end of a period
    assert after_stop == []


async def test_watchdog_loop_stops_pinging_while_the_loop_is_stuck(receiver: Receiver) -> None:
    notifier = receiver.notifier(WATCHDOG_USEC="100000")
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(notifier, stop))
    await asyncio.sleep(0.12)
    assert receiver.drain()
    time.sleep(0.3)  # a blocking call on the event loop: exactly what the watchdog is for
    assert receiver.drain() == []
    await asyncio.sleep(0.12)
    assert receiver.drain()
    stop.set()
    await task


@pytest.mark.parametrize(
    "env",
    [
        {},  # no notify socket
        {"NOTIFY_SOCKET": "@x"},  # no watchdog configured
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"},
    ],
)
def test_watchdog_loop_returns_at_once_when_off(env: dict[str, str]) -> None:
    # Fails on a loop that, off, waits at all (a first period, a sleep, a wait for `stop`):
    # the virtual clock would move on, or, waiting for ever, the guard's 10 s would raise.
    async def main() -> float:
        await asyncio.wait_for(watchdog_loop(Notifier(env), asyncio.Event()), timeout=10)
        return asyncio.get_running_loop().time()

    assert run_virtual(main) == 0.0


def test_watchdog_loop_with_stop_already_set(receiver: Receiver) -> None:
    # Fails on a loop that pings once before looking at `stop`, or waits a period first.
    async def main() -> float:
        stop = asyncio.Event()
        stop.set()
        notifier = receiver.notifier(WATCHDOG_USEC="100000")
        await asyncio.wait_for(watchdog_loop(notifier, stop), timeout=10)
        return asyncio.get_running_loop().time()

    assert run_virtual(main) == 0.0
    assert receiver.drain() == []


# --- long work before READY=1: the start-up check of a big manifest ---------------------------


def assignments(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_startup_progress_extends_and_says_how_far_then_waits(receiver: Receiver) -> None:
    now = [100.0]
    progress = StartupProgress(
        receiver.notifier(), "checking the manifest", every=5.0, margin=90.0, clock=lambda: now[0]
    )
    progress(0, 10_400_000_000)  # the first call reports at once
    assert assignments(receiver.recv()) == {
        "EXTEND_TIMEOUT_USEC": "90000000",
        "STATUS": "checking the manifest: 0.0 of 10.4 GB",
    }
    now[0] += 4.9
    progress(2_000_000_000, 10_400_000_000)
    assert receiver.drain() == []  # within `every`: nothing sent
    now[0] += 0.1
    progress(3_200_000_000, 10_400_000_000)
    assert assignments(receiver.recv())["STATUS"] == "checking the manifest: 3.2 of 10.4 GB"


@pytest.mark.parametrize(
    ("done", "total", "text"),
    [
        (0, 0, "0.0 of 0.0 MB"),
        (1_234_567, 9_000_000, "1.2 of 9.0 MB"),
        (123_000_000, 640_000_000, "123 of 640 MB"),
        (999_999_999, 1_000_000_000, "1.0 of 1.0 GB"),
    ],
)
def test_startup_progress_amounts(receiver: Receiver, done: int, total: int, text: str) -> None:
    StartupProgress(receiver.notifier(), "x")(done, total)
    assert assignments(receiver.recv())["STATUS"] == f"x: {text}"


def test_startup_progress_is_a_no_op_off_systemd() -> None:
    progress = StartupProgress(Notifier({}), "x", every=0.0)
    progress(1, 2)  # nothing to send to, nothing raised


def test_startup_progress_margin_must_outlast_the_gap(receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="margin"):
        StartupProgress(receiver.notifier(), "x", every=60.0, margin=30.0)


async def test_open_archive_extends_the_start_timeout_while_it_checks(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    # The daemon's own open_archive, on a real archive of several segments, under a
    # NOTIFY_SOCKET: the check's progress reaches systemd as EXTEND_TIMEOUT_USEC + STATUS.
    root = short_dir / "archive"
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state, segment_max_bytes=4096)
    for n in range(4):
        await writer.append_messages("s", [message(10 * n + i) for i in range(8)], "sync")
    await writer.close()
    state.close()
    size = sum(path.stat().st_size for path in (root / "manifest").iterdir())
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.env_value)
    config = Config(zoom=ZoomConfig(account_id="acct-1"), archive=ArchiveConfig(root=str(root)))
    async with daemon.open_archive(config) as (_state, opened):
        assert opened.seq > 32
    sent = [assignments(datagram) for datagram in receiver.drain()]
    assert sent, "nothing reached the notify socket"
    assert sent[0] == {
        "EXTEND_TIMEOUT_USEC": "90000000",
        "STATUS": f"checking the manifest: 0.0 of {size / 1e6:.1f} MB",
    }
