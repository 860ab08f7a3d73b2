"""Stream one attachment to `ROOT/tmp/`, hashing as it goes, refusing what is not the file.

Checks, in order: every URL (and every redirect hop) against the policy; the resolved address
at connect time (`GuardedResolver`); the HTTP status; `max_bytes` while streaming (abort at the
limit, never after); the advertised size; and an error document (a JSON error body where a
file was expected) — which is never stored as the attachment. Bytes are archived exactly as
sent: no automatic decompression, `Accept-Encoding: identity`.

Every fetch has a total deadline (`fetch_deadline`): a host that drips a byte a minute passes
every per-read timeout, and would hold a worker for ever. Resource exhaustion on our side
(EMFILE, ENFILE, ENOMEM, ENOBUFS while opening a temp file or a socket) is neither a transfer
failure nor a broken disk: `FetchError(resource=True)`, which the manager waits out with
backoff, never counting it against the attachment. Each `FetchError` carries a `code` from the
fixed set `CODES` for metric labels; the `reason` with its detail (hosts, sizes) goes to the
manifest line and the log only.

A refusal (401/403/404/410) is the file host's own word only when its body is JSON (Zoom's
file host answers `{"code": ..., "message": ...}`): then `evidence` is set, as for an error
document or a size other than the advertised one. The same status with an HTML page, an empty
or any other body is a gateway's, which says nothing about the file (zoom/README.md): the
manager waits it out and asks for a fresh URL, never counting it against the attachment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from archiver.config import DownloadConfig
from archiver.downloads.sink import FileSink
from archiver.downloads.urls import UrlPolicy, UrlRefused, address_is_public, check_url
from archiver.errors import StorageError
from archiver.ops.serving import is_resource_exhaustion
from archiver.zoom.policy import BodyKind, body_kind

HEAD = 65536  # the start of the body, kept to tell an error document from a file
REFUSAL_HEAD = 1024  # bytes of a refusal's body read to tell the host's JSON from a gateway page
MAX_REDIRECTS = 5
ERROR_KEYS = frozenset({"code", "message", "error", "errorCode", "errorMessage", "reason"})
DEADLINE_GRACE: Final = 30.0  # seconds every download gets beyond its size over min_rate
# The label values of `zsa_attachments_failed` (and `code` of every FetchError): a fixed set,
# so no host name or size can grow the metric's cardinality. Only the first three, and the
# manager's last three, end a job (manager.py); the others are retried as often as it takes.
CODES: Final = frozenset(
    {
        "too_large",  # advertised, Content-Length or body over downloads.max_bytes
        "url_refused",  # the URL policy or the resolved address refused it
        "tls",  # certificate verification failed
        "transfer",  # reset, timeout, a short body, a 5xx or 429
        "deadline",  # slower than downloads.min_rate
        "http_status",  # another status
        "host_refused",  # 401/403 from the file host (or a gateway's page)
        "not_found",  # 404/410 from the file host (or a gateway's page)
        "error_document",  # an error body where the file was expected
        "size_mismatch",  # not the size Zoom advertised
        "redirects",  # too many, or one without Location
        "resources",  # our descriptors or memory ran out: waited out, never a failure line
        "refreshes_exhausted",  # the manager: the file host itself refused fresh URLs
        "message_gone",  # the manager: Zoom's 12004 for the message
        "attachment_gone",  # the manager: the record no longer lists the attachment
    }
)


def fetch_deadline(
    expected_size: int | None, max_bytes: int, min_rate: int, grace: float = DEADLINE_GRACE
) -> float:
    """Seconds a whole fetch may take: a grace, plus its size (advertised, else the most it
    may be) at `min_rate` bytes a second."""
    size = max_bytes if expected_size is None else min(expected_size, max_bytes)
    return grace + size / min_rate


class FetchError(Exception):
    """A download that did not yield the file. `reason` is short and safe to record."""

    def __init__(
        self,
        reason: str,
        *,
        code: str,
        retryable: bool = False,
        refresh: bool = False,
        status: int | None = None,
        resource: bool = False,
        evidence: bool = False,
    ) -> None:
        if code not in CODES:
            raise ValueError(f"{code!r} is not a failure code")
        self.reason = reason
        self.code = code
        self.retryable = retryable or resource
        self.refresh = refresh  # a fresh URL may succeed (expired/forged JWT)
        self.status = status
        self.resource = resource  # out of descriptors or memory here: wait, not a failure
        # The file host's own word against this URL (its JSON refusal, an error document, a
        # size other than advertised): on a fresh URL it counts against the attachment.
        self.evidence = evidence
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    sha256: str
    size: int


@contextlib.contextmanager
def _local_disk(what: str) -> Iterator[None]:
    """A failure of the local disk (ENOSPC, EIO, EFBIG) is no transfer failure: retrying the
    download would fail the same way and end as a false `attachment_failed` line, lost for
    good once the disk is fixed. StorageError stops the daemon instead (see writer.py).

    Running out of descriptors or memory is neither (`resource`). The sink's thread opens
    the file, so its error may surface at a write or at the fsync: an OSError naming a file
    comes from that open, and says so."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            what = "create a temp file in tmp/"
        detail = f"cannot {what}: {exc.strerror or exc}"
        if is_resource_exhaustion(exc):
            raise FetchError(detail, code="resources", resource=True) from exc
        raise StorageError(exc.errno, detail) from exc


def _raise_if_resources(exc: BaseException | None, what: str) -> None:
    if exc is not None and is_resource_exhaustion(exc):
        detail = f"cannot {what}: {getattr(exc, 'strerror', None) or exc}"
        raise FetchError(detail, code="resources", resource=True) from None


def _total_deadline_passed() -> bool:
    """Inside `fetch`'s asyncio.timeout: has the total deadline (not a read timeout) fired?"""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AddressRefused(OSError):
    """Raised by the resolver: the policy, not the network, refuses this host. aiohttp wraps
    it in ClientConnectorError, where `fetch` tells it from a failure worth retrying."""


class GuardedResolver(AbstractResolver):
    """Resolves names, then refuses private, loopback and link-local results: the check runs
    on the address actually connected to, so DNS tricks cannot reach the internal network."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        public = [r for r in results if address_is_public(r["host"])]
        if not public:
            raise AddressRefused(
                f"{host} resolves only to private, loopback or link-local addresses"
            )
        return public

    async def close(self) -> None:
        await self._inner.close()


def download_session(policy: UrlPolicy, connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy.allow_private_addresses),
        limit=connections,
        ssl=True,  # verify certificates, always
    )
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, trust_env=False, read_bufsize=1 << 20
    )


def looks_like_error_document(head: bytes, content_type: str) -> bool:
    """A small JSON object with error-ish keys, served as JSON: Zoom's error reply, not a file."""
    if "json" not in content_type.lower() and not head.lstrip().startswith(b"{"):
        return False
    try:
        body = json.loads(head)
    except ValueError:
        return False
    return isinstance(body, dict) and bool(ERROR_KEYS & body.keys())


class Fetcher:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        policy: UrlPolicy,
        *,
        tmp_dir: Path,
        max_bytes: int,
        read_timeout: float = 60.0,
        concurrency: int = 8,
        min_rate: int = DownloadConfig.min_rate,
        deadline_grace: float = DEADLINE_GRACE,
    ) -> None:
        """At most `concurrency` fetches at once (downloads.workers): each has a thread of
        this pool that hashes and writes its bytes (`sink.py`). A fetch left without one
        would stall at the sink's high-water mark until another download ended, long enough
        for its socket to time out. `close` waits for every thread."""
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="download-sink"
        )
        self._http = http
        self._policy = policy
        self._tmp = tmp_dir
        self._max_bytes = max_bytes
        self._min_rate = min_rate
        self._grace = deadline_grace
        self._read_timeout = read_timeout

    def close(self) -> None:
        self._executor.shutdown(wait=True)  # every sink has closed (and tidied) its file

    async def fetch(self, url: str, *, expected_size: int | None, dig: str | None) -> Fetched:
        if expected_size is not None and expected_size > self._max_bytes:
            raise FetchError(
                f"advertised size {expected_size} exceeds downloads.max_bytes", code="too_large"
            )
        deadline = fetch_deadline(expected_size, self._max_bytes, self._min_rate, self._grace)
        try:
            async with asyncio.timeout(deadline):
                return await self._fetch(url, expected_size, dig)
        except TimeoutError:
            # Only the total deadline gets here: _fetch turns read timeouts into FetchError.
            raise FetchError(
                f"slower than downloads.min_rate ({self._min_rate} B/s): not done in "
                f"{deadline:.0f} s",
                code="deadline",
                retryable=True,
            ) from None

    async def _fetch(self, url: str, expected_size: int | None, dig: str | None) -> Fetched:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._read_timeout)
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                check_url(url, self._policy)
            except UrlRefused as exc:
                raise FetchError(exc.reason, code="url_refused") from None
            try:
                async with self._http.get(
                    url,
                    allow_redirects=False,
                    headers={"Accept-Encoding": "identity"},
                    timeout=timeout,
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError(
                                "redirect without Location",
                                code="redirects",
                                status=response.status,
                            )
                        url = urljoin(url, location)
                        continue
                    return await self._receive(response, expected_size, dig)
            except (StorageError, FetchError):
                raise  # our disk, not the transfer (StorageError is an OSError too)
            except aiohttp.ClientSSLError as exc:
                raise FetchError(
                    f"TLS verification failed: {type(exc).__name__}", code="tls"
                ) from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, AddressRefused):
                    # Final: retrying would only ask the resolver the same question 6 times.
                    raise FetchError(str(exc.os_error), code="url_refused") from None
                _raise_if_resources(exc.os_error, "open a connection to the file host")
                raise FetchError(
                    f"transfer failed: {type(exc).__name__}", code="transfer", retryable=True
                ) from None
            except (aiohttp.ClientError, OSError) as exc:
                _raise_if_resources(exc, "talk to the file host")
                raise FetchError(
                    f"transfer failed: {type(exc).__name__}", code="transfer", retryable=True
                ) from None
            except TimeoutError as exc:
                if _total_deadline_passed():
                    raise
                raise FetchError(
                    f"transfer failed: {type(exc).__name__}", code="transfer", retryable=True
                ) from None
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", code="redirects")

    async def _receive(
        self, response: aiohttp.ClientResponse, expected_size: int | None, dig: str | None
    ) -> Fetched:
        status = response.status
        if status in (401, 403, 404, 410):
            own = await self._own_word(response)
            page = "" if own else " (a gateway's page, no answer of the file host's)"
            if status in (401, 403):
                raise FetchError(
                    f"file host refused the URL ({status}){page}",
                    code="host_refused",
                    refresh=True,
                    status=status,
                    evidence=own,
                )
            raise FetchError(
                f"file host answered {status}{page}",
                code="not_found",
                refresh=True,
                status=status,
                evidence=own,
            )
        if status == 429 or status >= 500:
            raise FetchError(
                f"file host answered {status}", code="transfer", retryable=True, status=status
            )
        if status != 200:
            raise FetchError(f"file host answered {status}", code="http_status", status=status)
        length = response.content_length
        if length is not None and length > self._max_bytes:
            raise FetchError(
                f"Content-Length {length} exceeds downloads.max_bytes", code="too_large"
            )
        content_type = response.headers.get("Content-Type", "")
        path = self._tmp / f"{secrets.token_hex(16)}.part"
        sink = FileSink(path, self._executor)
        head = b""
        try:
            async for chunk in response.content.iter_any():
                if sink.size + len(chunk) > self._max_bytes:
                    raise FetchError(
                        f"body exceeds downloads.max_bytes ({self._max_bytes})", code="too_large"
                    )
                if len(head) < HEAD:
                    head += chunk[: HEAD - len(head)]
                with _local_disk("write a download to tmp/"):
                    await sink.write(chunk)
            with _local_disk("fsync a download in tmp/"):
                sha = await sink.finish()
        except BaseException:
            sink.abort()
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        size = sink.size
        try:
            self._check_body(
                size=size,
                sha=sha,
                head=head,
                content_type=content_type,
                expected_size=expected_size,
                dig=dig,
            )
        except FetchError:
            path.unlink(missing_ok=True)
            raise
        return Fetched(path=path, sha256=sha, size=size)

    @staticmethod
    async def _own_word(response: aiohttp.ClientResponse) -> bool:
        """Whether a refusal's body is JSON, as the file host's own answers are; an HTML page,
        an empty or any other body is a gateway's. Reads at most REFUSAL_HEAD bytes."""
        try:
            head = await response.content.read(REFUSAL_HEAD)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False  # a refusal cut short proves nothing
        return body_kind(head) is BodyKind.JSON

    @staticmethod
    def _check_body(
        *,
        size: int,
        sha: str,
        head: bytes,
        content_type: str,
        expected_size: int | None,
        dig: str | None,
    ) -> None:
        if dig is not None and dig == sha:
            return  # the JWT vouches for exactly these bytes
        if (
            size < HEAD
            and looks_like_error_document(head, content_type)
            and (expected_size is None or size != expected_size)
        ):
            raise FetchError(
                "file host sent an error document instead of the file",
                code="error_document",
                refresh=True,
                evidence=True,
            )
        if expected_size is not None and size != expected_size:
            raise FetchError(
                f"received {size} bytes, Zoom advertised {expected_size}",
                code="size_mismatch",
                retryable=True,
                evidence=True,
            )
