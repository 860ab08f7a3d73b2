"""systemd's notify protocol (sd_notify(3)) and the watchdog pinger, in stdlib only.

The protocol is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET``; a name starting with ``@`` lives in the abstract namespace. That is small
enough to own: the `sdnotify` package is unmaintained since 2017, and `systemd-python` needs
libsystemd headers to build.

- Not under systemd (``$NOTIFY_SOCKET`` unset or empty): every call is a no-op returning False.
- Sending never raises into the daemon and never blocks the event loop: the socket is
  non-blocking, a failure returns False and is logged once (and its recovery once).
- `watchdog_loop` pings from the event loop itself, so a stalled loop stops the pings and
  systemd's ``WatchdogSec=`` restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

from archiver.ops.logs import get_logger

_SANITIZE: Final = str.maketrans({"\n": " ", "\r": " ", "\0": " "})


class Notifier:
    """Tells systemd about the daemon's state. Construct once; read the environment once."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (the archive is open, the first token obtained)."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """A one-line summary for `systemctl status`; line breaks are flattened."""
        return self.send(*_status(text))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun; from here systemd's TimeoutStopSec= applies, not the watchdog."""
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """Keep-alive ping for WatchdogSec=."""
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the current start/stop timeout fires (e.g. while a
        long archive repair runs before READY=1)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None when the watchdog is off for this process
        (no or bad ``$WATCHDOG_USEC``, or ``$WATCHDOG_PID`` names another process).
        Ping at half of it, as sd_watchdog_enabled(3) advises."""
        if self._watchdog_usec is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid is not None:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                return None
            if pid != os.getpid():
                return None
        return usec / 1_000_000

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram. True if the datagram left; never raises."""
        if self._address is None or not assignments:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A full receive queue must cost a lost datagram, never a stalled event loop.
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                get_logger().warning(
                    "sdnotify_send_failed",
                    error=errno.errorcode.get(exc.errno or 0, type(exc).__name__),
                    notify=assignments[0].partition("=")[0],
                )
            return False
        if self._failing:
            self._failing = False
            get_logger().info("sdnotify_send_recovered")
        return True


class StartupProgress:
    """A progress callback, (done, total) bytes, for long work before READY=1 (the start-up
    check of a big manifest): at its first call and then every `every` seconds, one datagram
    asks systemd for `margin` seconds more (EXTEND_TIMEOUT_USEC, which only counts once
    TimeoutStartSec= has passed) and says how far the work got (STATUS). Work that stalls
    stops the datagrams, and systemd's timeout fires `margin` seconds later. Cheap to call
    often, from any one thread at a time (the check runs in a worker thread)."""

    def __init__(
        self,
        notifier: Notifier,
        what: str,
        *,
        every: float = 5.0,
        margin: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= every < margin:
            raise ValueError("the margin must be longer than the time between two reports")
        self._notifier, self._what = notifier, what
        self._every, self._margin, self._clock = every, margin, clock
        self._next: float | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self._notifier.enabled:
            return
        now = self._clock()
        if self._next is not None and now < self._next:
            return
        self._next = now + self._every
        self._notifier.send(
            f"EXTEND_TIMEOUT_USEC={round(self._margin * 1_000_000)}",
            *_status(f"{self._what}: {_amount(done, total)}"),
        )


def _amount(done: int, total: int) -> str:
    """`3.2 of 10.4 GB`, or in MB below a GB (decimal units, as `df -H` and disks count)."""
    unit, scale = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    digits = 1 if unit == "GB" or total < 10e6 else 0
    return f"{done / scale:.{digits}f} of {total / scale:.{digits}f} {unit}"


async def watchdog_loop(notifier: Notifier, stop_event: asyncio.Event) -> None:
    """Ping the watchdog every half interval until `stop_event` is set.

    Runs as a task on the daemon's event loop: when the loop stalls (a blocking call, a
    coroutine that never awaits), the pings stop and systemd aborts and restarts the service.
    Returns at once when the watchdog is off.
    """
    interval = notifier.watchdog_interval()
    if interval is None or not notifier.enabled:
        return
    period = interval / 2
    while not stop_event.is_set():
        notifier.watchdog()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=period)


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Unset, empty, or a transport we do not speak (systemd >= 253 also knows "vsock:").
    return None


def _status(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={text.translate(_SANITIZE)}",)
