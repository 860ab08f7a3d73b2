"""The start-up check skims the lines the state vouches for (recovery.skim_link) instead of
parsing them: it must refuse exactly what parsing every line refuses, with the same words,
and agree with `verify` on whether an archive is damaged. Archives are the real writer's
(several runs with a key, a clean stop each, small segments), damaged at random."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver.downloads.blobs import commit_blob
from archiver.errors import ManifestCorruptError
from archiver.store import checkpoint, recovery, verify
from archiver.store.checkpointer import Checkpointer
from archiver.store.layout import prepare_root
from archiver.store.manifest import (
    ZERO_HASH,
    canonical,
    encode_line,
    encode_message_line,
    line_hash,
    record_digest,
)
from archiver.store.recovery import Tail, check_startup, skim_link
from archiver.store.state import State
from archiver.store.stateview import META_CLEAN_STOP
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message

ORIGIN = checkpoint.origin_for("acct-1")
CASES = 200  # in `make test`; `make soak` runs 2,000 more (another seed)
# Ids the skim must not be fooled by: the very bytes it looks for, escaped inside strings.
ODD_SESSION = 's},"seq":7,"x'
ODD_MESSAGE = 'm","prev":"' + "0" * 64 + '"\\'


# --- skim_link, line by line ---------------------------------------------------------------


def writer_line(seq: int, *, supersedes: int | None = None, **ids: str) -> bytes:
    record = message(seq, text='héllo \u2713 "quoted" \\ },"seq":1')
    entry: dict[str, Any] = {
        "kind": "message",
        "session_id": ids.get("session_id", "s"),
        "message_id": ids.get("message_id", f"msg-{seq}"),
        "record": record,
        "digest": record_digest(record),
        "source": "webhook",
    }
    if supersedes is not None:
        entry["supersedes"] = supersedes
    prev = hashlib.sha256(str(seq).encode()).hexdigest()
    fast = encode_message_line(entry, seq, prev, "2026-12-03T07:00:00.123456Z", canonical(record))
    assert fast == encode_line(entry, seq, prev, "2026-12-03T07:00:00.123456Z")
    return fast + b"\n"


@pytest.mark.parametrize(
    "line",
    [
        writer_line(1),
        writer_line(12345678901, supersedes=3),
        writer_line(5, session_id=ODD_SESSION, message_id=ODD_MESSAGE),
        writer_line(6, session_id="\u00e9\u2713", message_id='"'),
    ],
)
def test_skim_reads_what_parsing_reads(line: bytes) -> None:
    obj = json.loads(line)
    assert skim_link(line, obj["seq"], obj["prev"]) is True
    assert skim_link(line, obj["seq"] + 1, obj["prev"]) is False
    assert skim_link(line, obj["seq"] * 10, obj["prev"]) is False
    assert skim_link(line, obj["seq"], ZERO_HASH) is False
    assert skim_link(line, obj["seq"], obj["prev"][:-1] + "x") is False


def test_skim_leaves_every_other_line_to_the_parser() -> None:
    event = encode_line({"kind": "event", "event": "start"}, 1, ZERO_HASH, "2026-12-03T07:00:00Z")
    line = writer_line(3)
    for other in [
        event + b"\n",
        line[:-1],  # no newline
        line.replace(b'"at":"2026-12-03T07:00:00.123456Z"', b'"at":"2026-12-03T07:00:00Z"'),
        line.replace(b'"kind":"message"', b'"kind":"massage"'),
        line.replace(b'"prev":"', b'"prev" :"'),
        b"\n",
        b"",
    ]:
        assert skim_link(other, 3, hashlib.sha256(b"3").hexdigest()) is None, other
    for seq in (b"-3", b"3.0", b"03", b"3 "):  # a message line, not line 3: a doubt
        other = line.replace(b',"seq":3,', b',"seq":' + seq + b",")
        assert skim_link(other, 3, hashlib.sha256(b"3").hexdigest()) is False, other


# --- archives of the real writer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return checkpoint.generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def public(keys: tuple[Path, Path]) -> Ed25519PublicKey:
    return checkpoint.load_public_key(keys[1].read_bytes())


async def one_run(root: Path, key: Any, run: int) -> None:
    """What daemon.open_archive does, with small segments: start (signed), lines, stop
    (signed), the clean stop recorded."""
    state = State.open(root)
    writer = await ManifestWriter.open(root, state, segment_max_bytes=2500)
    signer = Checkpointer(root, key, ORIGIN, writer)
    await writer.append_event("start", version="test")
    state.delete_meta(META_CLEAN_STOP)
    await signer.write()
    await writer.append_messages(
        "s", [message(10 * run + i, text=f"run {run}") for i in range(4)], "sync"
    )
    await writer.append_messages(
        ODD_SESSION, [{**message(10 * run), "message_id": ODD_MESSAGE}], "webhook"
    )
    if run == 1:
        await writer.append_messages("s", [message(10, text="edited upstream")], "sync")
        data = b"attachment bytes"
        tmp = root / "tmp" / "a0"
        tmp.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        rel = await commit_blob(root, tmp, sha)
        await writer.append_entries(
            [
                {
                    "kind": "attachment",
                    "session_id": "s",
                    "message_id": "msg-10",
                    "attachment_id": "a0",
                    "name": "a0.png",
                    "type": "PNG",
                    "size": len(data),
                    "sha256": sha,
                    "blob": rel,
                }
            ]
        )
    stop = await writer.append_event("stop")
    state.set_meta(META_CLEAN_STOP, str(stop))
    await signer.write()
    await writer.close()
    state.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    root = tmp_path_factory.mktemp("skim") / "archive"
    prepare_root(root)
    key = checkpoint.load_private_key(keys[0].read_bytes())
    for run in range(3):
        asyncio.run(one_run(root, key, run))
    assert len(list((root / "manifest").glob("*.jsonl"))) >= 4
    return root


def outcome(root: Path, public: Ed25519PublicKey) -> tuple[str, str | Tail]:
    try:
        return "ok", check_startup(root, public, ORIGIN)
    except ManifestCorruptError as exc:
        return "refused", str(exc)


def parsing_every_line(
    monkeypatch: pytest.MonkeyPatch, root: Path, public: Ed25519PublicKey
) -> tuple[str, str | Tail]:
    """The reference: the same check with no line skimmed, as before the skim existed."""
    with monkeypatch.context() as patch:
        patch.setattr(recovery, "skim_link", lambda raw, seq, prev: None)
        return outcome(root, public)


def test_a_clean_start_parses_only_the_lines_the_guard_reads(
    pristine: Path, public: Ed25519PublicKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real = recovery.parse_line

    def counting(body: bytes) -> dict[str, Any]:
        parsed.append(body)
        return real(body)

    monkeypatch.setattr(recovery, "parse_line", counting)
    kind, tail = outcome(pristine, public)
    assert kind == "ok" and isinstance(tail, Tail) and tail.checked is not None
    lines = sum(len(p.read_bytes().splitlines()) for p in (pristine / "manifest").iterdir())
    assert tail.seq == lines
    # The last stop (the clean stop and the newest note) and the lines that are not
    # messages (events, the attachment); the messages are skimmed.
    assert all(b'"kind":"message"' not in body for body in parsed)
    assert any(b'"event":"stop"' in body for body in parsed)
    assert parsing_every_line(monkeypatch, pristine, public) == (kind, tail)


def rechain(lines: list[bytes], start: int) -> None:
    """Set every `prev` from `start` on to the hash of the line before: a consistent rewrite
    (lines that are not JSON objects stay as they are)."""
    for i in range(max(start, 0), len(lines)):
        try:
            obj = json.loads(lines[i])
        except ValueError:
            continue
        if isinstance(obj, dict):
            obj["prev"] = line_hash(lines[i - 1]) if i else ZERO_HASH
            lines[i] = canonical(obj)


def damage(root: Path, rng: random.Random) -> str:
    """One random damage of the kinds someone with write access (or a bad disk, or a crash)
    does."""
    paths = sorted((root / "manifest").glob("*.jsonl"))
    kinds = ["none", "flip", "flip", "cut", "insert", "swap", "delete", "edit", "append"]
    kind = rng.choice([*kinds, "segment", "torn"])
    path = rng.choice(paths)
    data = bytearray(path.read_bytes())
    if kind == "flip":
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(data)
        return f"flip {path.name}@{at}"
    if kind == "cut":  # the end of a segment, or a stretch of bytes inside it
        at = rng.randrange(len(data))
        rest = data[rng.randrange(at, len(data)) :] if rng.random() < 0.5 else b""
        path.write_bytes(data[:at] + rest)
        return f"cut {path.name}@{at}"
    if kind == "segment":
        path.unlink()
        return f"remove {path.name}"
    if kind == "torn":  # a crash mid-write after the last line: cut at the next start
        last = paths[-1]
        tail = last.read_bytes().splitlines()[-1]
        line = encode_line(
            {"kind": "event", "event": "start"},
            json.loads(tail)["seq"] + 1,
            line_hash(tail),
            "2026-12-03T07:00:00.000000Z",
        )
        torn = rng.choice([line[: rng.randrange(1, len(line))], b"\0" * 40, b"\0" * 40 + b"\n"])
        with last.open("ab") as stream:
            stream.write(torn)
        return f"torn {len(torn)} bytes"
    # Line-wise, across the segments: (segment, bytes) pairs.
    lines = [(p, raw) for p in paths for raw in p.read_bytes().splitlines()]
    texts = [raw for _p, raw in lines]
    i = rng.randrange(len(lines))
    what = kind
    if kind == "insert":
        texts.insert(i, rng.choice([texts[rng.randrange(len(texts))], b"", b"{}", os.urandom(8)]))
        lines.insert(i, (lines[i][0], b""))
    elif kind == "swap":
        j = min(i + 1, len(lines) - 1) if rng.random() < 0.5 else rng.randrange(len(lines))
        texts[i], texts[j] = texts[j], texts[i]
        what = f"swap {i} {j}"
    elif kind == "delete":
        del texts[i], lines[i]
        if rng.random() < 0.5:
            rechain(texts, i)
            what = "delete and re-chain"
    elif kind == "edit":
        obj = json.loads(texts[i])
        if obj["kind"] == "message" and rng.random() < 0.6:
            obj["record"]["message"] = "forged"
            if rng.random() < 0.7:
                obj["digest"] = record_digest(obj["record"])
        else:
            obj["at"] = "2020-01-01T00:00:00.000000Z"
        texts[i] = canonical(obj)
        if rng.random() < 0.7:
            rechain(texts, i + 1)
            what = "edit and re-chain"
    elif kind == "append":
        last = json.loads(texts[-1])
        entry = (
            {"kind": "event", "event": rng.choice(["start", "stop", "noise"])}
            if rng.random() < 0.5
            else {
                "kind": "message",
                "session_id": "s",
                "message_id": "forged",
                "record": {"message_id": "forged"},
                "digest": record_digest({"message_id": "forged"}),
                "source": "sync",
            }
        )
        added = [entry]
        if rng.random() < 0.3:  # unsigned start, stop, start first: a signed stop still holds
            added = [{"kind": "event", "event": e} for e in ("start", "stop", "start")] + added
        for one in added:
            last = json.loads(texts[-1])
            texts.append(encode_line(one, last["seq"] + 1, line_hash(texts[-1]), last["at"]))
            lines.append((lines[-1][0], b""))
        what = f"append {'start stop start ' * (len(added) > 1)}{entry.get('event', 'message')}"
    else:
        return "none"
    out: dict[Path, list[bytes]] = {p: [] for p in paths}
    for (p, _raw), text in zip(lines, texts, strict=True):
        out[p].append(text)
    for p, chunk in out.items():
        p.write_bytes(b"".join(text + b"\n" for text in chunk))
    return f"{what} at line {i}"


@pytest.mark.parametrize(
    ("seed", "cases"),
    [(20261203, CASES), pytest.param(20261204, 2000, marks=pytest.mark.slow)],
)
def test_random_damage_skim_and_parse_agree_and_verify_agrees(
    pristine: Path,
    public: Ed25519PublicKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    cases: int,
) -> None:
    monkeypatch.setattr(verify, "TAIL_WAIT", 0.0)  # a cut last line is final here
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    for case in range(cases):
        root = tmp_path / f"case-{case}"
        shutil.copytree(pristine, root, symlinks=True)
        what = damage(root, rng)
        fast = outcome(root, public)
        assert fast == parsing_every_line(monkeypatch, root, public), (case, what)
        report = verify_archive(root, trust=[public])
        damaged = fast[0] == "refused" or (isinstance(fast[1], Tail) and fast[1].bytes_removed > 0)
        assert damaged == (not report.ok), (case, what, fast, report.problems)
        seen[fast[0]] = seen.get(fast[0], 0) + 1
        shutil.rmtree(root)
        if fast[0] == "ok" and isinstance(fast[1], Tail) and fast[1].bytes_removed:
            seen["torn tail cut"] = seen.get("torn tail cut", 0) + 1
    assert seen["refused"] > cases // 2 and seen["ok"] > cases // 20, seen
    assert seen["torn tail cut"] > cases // 40, seen


# --- one read per start: the writer goes on from where the check found the state -------------


def manifest_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in (root / "manifest").glob("*.jsonl"))


async def open_and_close(root: Path, **kwargs: Any) -> tuple[Tail, list[tuple[int, int]]]:
    """ManifestWriter.open as open_archive calls it: (what it found, what its scan read)."""
    reads: list[tuple[int, int]] = []
    state = State.open(root)
    stop = state.get_meta(META_CLEAN_STOP)
    seen: list[Tail] = []
    real = recovery.recover

    def recording(*args: Any, **kw: Any) -> Tail:
        seen.append(real(*args, **kw))
        return seen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("archiver.store.writer.recover", recording)
        writer = await ManifestWriter.open(
            root, state, progress=lambda done, total: reads.append((done, total)), **kwargs
        )
    assert (writer.seq, writer.head) == (seen[0].seq, seen[0].head)
    await writer.close()
    if stop is not None:
        state.set_meta(META_CLEAN_STOP, stop)
    state.close()
    return seen[0], reads


def test_progress_goes_from_nothing_to_everything(pristine: Path) -> None:
    reads: list[tuple[int, int]] = []
    check_startup(pristine, progress=lambda done, total: reads.append((done, total)))
    total = manifest_bytes(pristine)
    assert reads[0] == (0, total) and reads[-1] == (total, total)
    assert [done for done, _ in reads] == sorted(done for done, _ in reads)


async def test_the_writer_reads_only_what_the_check_has_not(
    pristine: Path, public: Ed25519PublicKey, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    shutil.copytree(pristine, full, symlinks=True)
    resumed = tmp_path / "resumed"
    shutil.copytree(pristine, resumed, symlinks=True)
    everything, full_reads = await open_and_close(full)
    assert full_reads[0] == (0, manifest_bytes(full))  # no `checked`: it reads it all again
    tail = check_startup(resumed, public, ORIGIN)
    assert tail.checked is not None
    found, reads = await open_and_close(resumed, checked=tail.checked)
    assert reads == [(0, 0)]  # the state had seen every line: nothing left to read
    assert found == everything == tail  # the same Tail, field by field


async def test_lines_after_the_state_are_read_and_replayed_from_there(
    pristine: Path, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    shutil.copytree(pristine, root, symlinks=True)
    last = sorted((root / "manifest").glob("*.jsonl"))[-1]
    lines = last.read_bytes().splitlines()
    stop = json.loads(lines[-1])
    # A start-up event the state has not seen yet (a crash right after it was written).
    extra = encode_line(
        {"kind": "event", "event": "start"}, stop["seq"] + 1, line_hash(lines[-1]), stop["at"]
    )
    with last.open("ab") as stream:
        stream.write(extra + b"\n")
    tail = check_startup(root)
    assert tail.checked is not None and tail.seq == stop["seq"] + 1
    found, reads = await open_and_close(root, checked=tail.checked)
    assert reads[0] == (0, len(extra) + 1)
    assert found.replayed == 1 and (found.seq, found.head) == (tail.seq, line_hash(extra))


async def test_a_segment_changed_after_the_check_is_read_again(
    pristine: Path, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    shutil.copytree(pristine, root, symlinks=True)
    tail = check_startup(root)
    assert tail.checked is not None
    first = root / "manifest" / "000001.jsonl"
    info = first.stat()
    os.utime(first, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    found, reads = await open_and_close(root, checked=tail.checked)
    assert reads[0] == (0, manifest_bytes(root))  # everything, checked again
    assert found == tail
