"""The single manifest writer: dedupe, hash chain, group commit, fsync, segment rotation.

One ManifestWriter per archive (ROOT/LOCK keeps other processes out) and every line goes
through it, so the sync path and the webhook path can never race each other into a duplicate.
Callers queue requests; one background task hands everything queued so far to a dedicated
thread, which judges the messages against the dedupe index, encodes the lines, writes them with
one write and one fsync (per segment touched), updates the index, and only then are the callers'
awaits resolved. Many callers, one fsync: that is the group commit.

Usage (the order matters; see layout.prepare_root)::

    with ArchiveLock(root):
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state)
        ...
        await writer.close()

A failed write or fsync (EIO, ENOSPC) stops the writer for good: after a failed fsync the kernel
may have dropped the dirty pages and reports success next time (PostgreSQL's "fsyncgate"), so
retrying could acknowledge lost data. Every waiting and later caller gets StorageError; the
daemon stops, and the next start's torn-tail repair makes the file whole again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from archiver.errors import StorageError
from archiver.ops.logs import get_logger
from archiver.store import schema
from archiver.store.checkpoint import newest_checkpoint
from archiver.store.crash import crash_point
from archiver.store.dedupe import plan_messages
from archiver.store.index import ManifestIndex
from archiver.store.layout import blob_relpath, manifest_dir
from archiver.store.manifest import (
    LINE_KEYS,
    SOURCES,
    ZERO_HASH,
    canonical,
    encode_message_line,
    entry_problems,
    line_hash,
    line_object,
    segment_name,
    utc_now_rfc3339,
)
from archiver.store.recovery import Checked, Progress, Tail, recover, set_aside_notes
from archiver.store.schema import transaction
from archiver.store.segments import SegmentAppender
from archiver.store.state import State
from archiver.store.stateview import META_CLEAN_STOP, META_INDEX_STARTED, META_OWED, parse_owed

SEGMENT_MAX_BYTES: Final = 64 * 1024 * 1024
_ENTRY_KINDS: Final = frozenset({"attachment", "attachment_failed", "event"})


def log() -> Any:
    # Looked up at each use: a logger bound at import time keeps the logging set-up of that
    # moment, and `run` imports this module before it configures logging (JSON for journald).
    return get_logger(component="manifest")


# (session_id, message_id) -> [(digest, seq)] of lines planned earlier in the same batch
_BatchVersions = dict[tuple[str, str], list[tuple[str, int]]]


@dataclass(frozen=True, slots=True)
class AppendResult:
    new: int
    changed: int
    unchanged: int
    seqs: tuple[int, ...]  # of the lines written, in order


@dataclass(eq=False, slots=True)
class _Request:
    future: asyncio.Future[AppendResult]
    entries: list[dict[str, Any]] = field(default_factory=list)  # ready-made (append_entries)
    session_id: str = ""
    records: Sequence[Mapping[str, Any]] = ()  # to judge and wrap (append_messages)
    source: str = ""
    result: AppendResult | None = None
    error: Exception | None = None


class ManifestWriter:
    """Appends manifest lines. Create with `await ManifestWriter.open(...)`."""

    def __init__(self, root: Path, state_path: Path, segment_max_bytes: int) -> None:
        if segment_max_bytes < 1:
            raise ValueError("segment_max_bytes must be positive")
        self._dir = manifest_dir(root)
        self._state_path = state_path
        self._owed: dict[str, Any] = {}  # META_OWED: start-up events not yet durable
        self._max = segment_max_bytes
        # One thread, always the same: the index connection lives in it, and file writes
        # are strictly ordered.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest-writer")
        self._index: ManifestIndex | None = None
        self._segments: SegmentAppender | None = None
        self._seq, self._head = 0, ZERO_HASH
        self._position = (0, ZERO_HASH)  # the same pair in one object, for other threads
        self._queue: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed: BaseException | None = None

    @classmethod
    async def open(
        cls,
        root: Path,
        state: State,
        *,
        segment_max_bytes: int = SEGMENT_MAX_BYTES,
        checked: Checked | None = None,
        progress: Progress | None = None,
    ) -> ManifestWriter:
        """Recover the manifest (repair a torn tail, replay lines into the index) and start.

        `checked`: check_startup's Tail.checked in the same start, so the scan goes on from
        the state's position instead of reading again what was just checked. `progress`:
        called (bytes read, bytes in all) from the writer's thread while it scans."""
        self = cls(root, state.path, segment_max_bytes)
        loop = asyncio.get_running_loop()
        started = state.get_meta(META_INDEX_STARTED) is not None
        stop = state.get_meta(META_CLEAN_STOP)
        clean_stop = int(stop) if stop is not None and stop.isdigit() else None
        # What a crashed start owed the manifest; and, before a replay into a new index (a
        # rebuild, if the manifest is not empty), what the state_rebuilt line will say of the
        # old head, made durable before the replay commits a position.
        self._owed = parse_owed(state.get_meta(META_OWED))
        if not started and "rebuild" not in self._owed:
            old = newest_checkpoint(root)
            self._owed["rebuild"] = {
                "old_seq": old.seq if old else None,
                "old_head": old.head if old else None,
            }
            _save_owed(state.path, self._owed)
        start = functools.partial(
            self._start, started, clean_stop, checked, progress, "rebuild" in self._owed
        )
        try:
            tail = await loop.run_in_executor(self._executor, start)
            state.set_meta(META_INDEX_STARTED, "1")
        except BaseException:
            await self._shutdown_thread()
            raise
        self._task = asyncio.create_task(self._run(), name="manifest-writer")
        try:
            await self._record_start_up(root, tail)
            if self._owed:  # an empty manifest: no rebuild after all
                self._owed = {}
                _save_owed(state.path, self._owed)
            # From here this writer may append anything: the clean stop is behind it.
            state.delete_meta(META_CLEAN_STOP)
        except BaseException:
            await self.close()
            raise
        return self

    async def _record_start_up(self, root: Path, tail: Tail) -> None:
        """What the start-up scan did goes into the manifest itself, as evidence; with what
        a crashed start owed (META_OWED), each entry cleared once its line is durable."""
        torn = self._owed.get("torn")
        if tail.bytes_removed or isinstance(torn, dict):
            details = (
                dict(torn)
                if not tail.bytes_removed and isinstance(torn, dict)
                else {
                    "segment": segment_name(tail.segment),
                    "bytes_removed": tail.bytes_removed,
                    "sha256": tail.torn_sha256,
                    "recovered": tail.recovered,
                }
            )
            log().warning("manifest_torn_tail_repaired", **details)
            await self.append_event("torn_tail_repaired", **details)
            self._owed.pop("torn", None)
            _save_owed(self._state_path, self._owed)
        if tail.rebuilt:
            # The old head is what this archive last attested, if it kept checkpoints: a
            # state that was removed cannot say what it had seen (read before the replay).
            owed = self._owed.get("rebuild")
            old = owed if isinstance(owed, dict) else {"old_seq": None, "old_head": None}
            rebuilt: dict[str, Any] = {
                "old_seq": old.get("old_seq"),
                "old_head": old.get("old_head"),
                "new_seq": tail.seq,
                "new_head": tail.head,
            }
            # Notes beyond the manifest's end: the chain goes on through their seqs, and a
            # note is never overwritten. Kept in recovered/, named here; `verify` reports the
            # loss (old_seq > new_seq) for good.
            before = self._owed.get("set_aside")
            moved = list(before) if isinstance(before, list) else []
            moved += await asyncio.to_thread(set_aside_notes, root, tail.seq)
            if moved:
                rebuilt["checkpoints_set_aside"] = moved
                self._owed["set_aside"] = moved
                _save_owed(self._state_path, self._owed)
            if tail.contradicted:
                log().error("state_rebuilt_over_signed_checkpoint", detail=tail.contradicted)
            log().warning("state_rebuilt", **rebuilt)
            await self.append_event("state_rebuilt", **rebuilt)
            self._owed.pop("rebuild", None)
            self._owed.pop("set_aside", None)
            _save_owed(self._state_path, self._owed)

    @property
    def seq(self) -> int:
        """Seq of the last durable line (0: empty manifest)."""
        return self._seq

    @property
    def head(self) -> str:
        """Hash of the last durable line: the chain head an auditor can note down."""
        return self._head

    @property
    def position(self) -> tuple[int, str]:
        """(seq, head) of the last durable line, read as one consistent pair."""
        return self._position

    @property
    def failed(self) -> bool:
        return self._failed is not None

    # --- public appends (event-loop side) ---------------------------------------------------

    async def append_messages(
        self, session_id: str, records: Sequence[Mapping[str, Any]], source: str
    ) -> AppendResult:
        """Archive message records as received (jwt stripped here); durable on return.

        Known content gets no line, changed content a `supersedes` line. Raises ValueError
        (nothing written) for a record without a string message_id or that is not JSON.
        Cancelling the await does not withdraw records the writer already took up.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, not {source!r}")
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        for i, record in enumerate(records):
            message_id = record.get("message_id") if isinstance(record, Mapping) else None
            if not isinstance(message_id, str) or not message_id:
                raise ValueError(f"record {i} of session {session_id} has no string message_id")
        if not records:
            return AppendResult(0, 0, 0, ())
        return await self._submit(session_id=session_id, records=records, source=source)

    async def append_entries(self, entries: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append attachment, attachment_failed and event entries; returns their seqs."""
        ready = []
        for i, entry in enumerate(entries):
            kind = entry.get("kind")
            if kind not in _ENTRY_KINDS:
                raise ValueError(f"entry {i}: kind {kind!r} (messages go through append_messages)")
            problems = entry_problems(entry) + [
                f"{key} is the writer's to fill in" for key in LINE_KEYS if key in entry
            ]
            if (
                kind == "attachment"
                and not problems
                and entry["blob"] != blob_relpath(entry["sha256"])
            ):
                problems.append("blob must be blob_relpath(sha256)")
            if problems:
                raise ValueError(f"entry {i} ({kind}): {'; '.join(problems)}")
            canonical(entry)  # ValueError now, rather than failing inside the batch
            ready.append(dict(entry))
        if not ready:
            return []
        return list((await self._submit(entries=ready)).seqs)

    async def append_event(self, name: str, **details: Any) -> int:
        """Append an audit event line, e.g. `append_event("start", version=...)`."""
        if "kind" in details or "event" in details:
            raise ValueError("event details must not be named kind or event")
        (seq,) = await self.append_entries([{**details, "kind": "event", "event": name}])
        return seq

    async def close(self) -> None:
        """Commit what is queued, stop the task and the thread, close the files."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.wait([self._task])
        await self._shutdown_thread()

    async def __aenter__(self) -> ManifestWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _submit(self, **request: Any) -> AppendResult:
        if self._failed is not None:
            raise _stopped(self._failed)
        if self._closing:
            raise RuntimeError("the manifest writer is closed")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(future, **request))
        self._wakeup.set()
        return await future

    # --- background task ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._queue):
            await self._wakeup.wait()
            self._wakeup.clear()
            # A caller cancelled before its turn withdraws its request: nothing was written.
            batch = [request for request in self._queue if not request.future.cancelled()]
            self._queue = []
            if not batch:
                continue
            try:
                await loop.run_in_executor(self._executor, self._commit, batch)
            except BaseException as exc:
                self._failed = exc
                log().error("manifest_writer_failed", error=repr(exc))
                for request in batch + self._queue:
                    if not request.future.done():
                        request.future.set_exception(_stopped(exc))
                self._queue = []
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            for request in batch:
                if request.future.done():
                    continue
                if request.error is not None:
                    request.future.set_exception(request.error)
                else:
                    assert request.result is not None
                    request.future.set_result(request.result)

    # --- writer thread -------------------------------------------------------------------------

    def _start(
        self,
        started: bool,
        clean_stop: int | None,
        checked: Checked | None,
        progress: Progress | None,
        rebuild_owed: bool,
    ) -> Tail:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._index = ManifestIndex(self._state_path)

        def owe_cut(details: dict[str, Any]) -> None:
            self._owed["torn"] = details
            _save_owed(self._state_path, self._owed)

        tail = recover(
            self._dir,
            self._index,
            started=started,
            clean_stop=clean_stop,
            checked=checked,
            progress=progress,
            rebuild_owed=rebuild_owed and started,
            before_cut=owe_cut,
        )
        if tail.replayed:
            log().info("manifest_index_replayed", lines=tail.replayed)
        self._segments = SegmentAppender(self._dir, tail.segment, tail.size, self._max)
        self._seq, self._head = tail.seq, tail.head
        self._position = (tail.seq, tail.head)
        return tail

    def _commit(self, batch: list[_Request]) -> None:
        """Plan, encode, write, fsync, index: one batch. Runs in the writer thread."""
        assert self._index is not None and self._segments is not None
        at = utc_now_rfc3339()
        seq, head = self._seq, self._head
        lines: list[bytes] = []
        objs: list[dict[str, Any]] = []  # the same lines as objects, for the index
        batch_versions: _BatchVersions = {}
        for request in batch:
            start = (len(lines), seq, head)
            try:
                entries, encoded, counts = self._plan(request, batch_versions, seq + 1)
                for entry, record in zip(entries, encoded, strict=True):
                    seq += 1
                    if record is None:  # the caller's entry: checked and encoded in full
                        obj = line_object(entry, seq, head, at)
                        line = canonical(obj)
                    else:  # planned here: a fresh dict of known shape, completed in place
                        line = encode_message_line(entry, seq, head, at, record)
                        obj = entry
                        obj["seq"], obj["prev"], obj["at"] = seq, head, at
                    head = line_hash(line)
                    lines.append(line)
                    objs.append(obj)
            except (ValueError, RecursionError) as exc:
                # Only this request is refused; the rest of the batch goes ahead without it.
                del lines[start[0] :], objs[start[0] :]
                _, seq, head = start
                request.error = exc if isinstance(exc, ValueError) else ValueError(str(exc))
                continue
            request.result = AppendResult(*counts, seqs=tuple(range(start[1] + 1, seq + 1)))
            for obj in objs[start[0] :]:
                if obj["kind"] == "message":
                    key = (obj["session_id"], obj["message_id"])
                    batch_versions.setdefault(key, []).append((obj["digest"], obj["seq"]))
        if not lines:
            return
        self._segments.append(lines)
        crash_point("manifest_after_fsync")
        self._seq, self._head = seq, head
        self._position = (seq, head)
        try:
            self._index.apply(objs, seq, head)
        except Exception as exc:
            text = f"manifest is durable but state.sqlite3 could not be updated: {exc}"
            if isinstance(exc, OSError) and exc.errno is not None:
                raise StorageError(exc.errno, text) from exc
            raise StorageError(f"{text} ({type(exc).__name__})") from exc

    def _plan(
        self, request: _Request, batch_versions: _BatchVersions, first_seq: int
    ) -> tuple[list[dict[str, Any]], list[bytes | None], tuple[int, int, int]]:
        """(entries, encoded records or None, (new, changed, unchanged)) for one request."""
        if not request.records:
            return request.entries, [None] * len(request.entries), (0, 0, 0)
        assert self._index is not None
        sid = request.session_id
        ids = {record["message_id"] for record in request.records}
        known = self._index.versions(sid, ids)
        for mid in ids:  # lines earlier in this batch are not in the index yet
            earlier = batch_versions.get((sid, mid))
            if earlier:
                known.setdefault(mid, []).extend(earlier)
        plan = plan_messages(sid, request.records, request.source, known, first_seq)
        return plan.entries, list(plan.encoded), (plan.new, plan.changed, plan.unchanged)

    def _close_files(self) -> None:
        if self._segments is not None:
            self._segments.close()
        if self._index is not None:
            self._index.close()
            self._index = None

    async def _shutdown_thread(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_files)
        self._executor.shutdown(wait=True)


def _stopped(cause: BaseException) -> StorageError:
    """A fresh error per caller (one shared instance would pile up tracebacks)."""
    text = f"the manifest writer has stopped after: {cause}"
    code = cause.errno if isinstance(cause, OSError) else None
    error = StorageError(text) if code is None else StorageError(code, text)
    error.__cause__ = cause
    return error


def _save_owed(path: Path, owed: Mapping[str, Any]) -> None:
    """Write META_OWED (or remove it when empty) durably: its own connection with
    synchronous=FULL (the state's NORMAL may lose the last commit in a power cut), from
    whichever thread is starting the writer."""
    conn = schema.connect(path)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        with transaction(conn) as tx:
            if owed:
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (META_OWED, json.dumps(owed, sort_keys=True)),
                )
            else:
                tx.execute("DELETE FROM meta WHERE key = ?", (META_OWED,))
    except sqlite3.Error as exc:
        text = f"cannot record the start-up events owed in state.sqlite3: {exc}"
        raise StorageError(text) from exc
    finally:
        conn.close()
