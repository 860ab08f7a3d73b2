"""Issue 15: tamper evidence against archives written by the real writer.

Each damage is done the way someone with write access to ROOT would do it. Where the manifest
itself is damaged the start refuses and leaves ROOT as it was; `verify` (the CLI, in process)
exits 1 naming the problem; checkpoints catch what a hash chain alone cannot.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.cli import main
from archiver.downloads.blobs import commit_blob
from archiver.errors import ManifestCorruptError
from archiver.store import checkpoint
from archiver.store.checkpointer import Checkpointer
from archiver.store.layout import blob_relpath, prepare_root
from archiver.store.manifest import ZERO_HASH, canonical, line_hash, record_digest
from archiver.store.recovery import check_startup
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message, mms

BLOBS = {"a0": b"first attachment bytes", "a1": b"second attachment", "b0": b"third one"}
ORIGIN = checkpoint.origin_for("acct-1")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return checkpoint.generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    """Three segments or more, blobs, a supersedes line, and two signed checkpoints."""
    root = tmp_path_factory.mktemp("pristine") / "archive"
    key = checkpoint.load_private_key(keys[0].read_bytes())

    async def build() -> None:
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state, segment_max_bytes=1800)
        signer = Checkpointer(root, key, ORIGIN, writer)
        await writer.append_event("start")
        await writer.append_messages("s", [message(n) for n in range(5)], "sync")
        await signer.write()
        await writer.append_messages("s", [mms(10, ["a0", "a1"]), mms(11, ["b0"])], "sync")
        for aid, data in BLOBS.items():
            tmp = root / "tmp" / aid
            tmp.write_bytes(data)
            rel = await commit_blob(root, tmp, sha(data))
            await writer.append_entries(
                [
                    {
                        "kind": "attachment",
                        "session_id": "s",
                        "message_id": "msg-10" if aid.startswith("a") else "msg-11",
                        "attachment_id": aid,
                        "name": f"{aid}.png",
                        "type": "PNG",
                        "size": len(data),
                        "sha256": sha(data),
                        "blob": rel,
                    }
                ]
            )
        await writer.append_messages("s", [message(2, text="edited upstream")], "sync")
        await writer.append_event("stop")
        await signer.write()
        await writer.close()
        state.close()

    asyncio.run(build())
    return root


@pytest.fixture
def archive(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(pristine, root, symlinks=True)
    return root


# --- helpers -----------------------------------------------------------------------------------


def segments(root: Path) -> list[Path]:
    return sorted((root / "manifest").glob("*.jsonl"))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def all_lines(root: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for path in segments(root) for raw in lines_of(path)]


def verify_cli(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(["verify", str(root), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def snapshot(root: Path) -> dict[str, bytes]:
    skip = {"LOCK", "state.sqlite3-wal", "state.sqlite3-shm"}  # the lock; SQLite's own scratch
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def edit_line(path: Path, index: int, change: Callable[[dict[str, Any]], None]) -> None:
    lines = lines_of(path)
    obj = json.loads(lines[index])
    change(obj)
    lines[index] = canonical(obj)
    write_lines(path, lines)


def forge_text(obj: dict[str, Any]) -> None:
    obj["record"]["message"] = "forged"
    obj["digest"] = record_digest(obj["record"])


def first_message_index(path: Path) -> int:
    return next(i for i, raw in enumerate(lines_of(path)) if b'"kind":"message"' in raw)


def rewrite_chain(root: Path, from_seq: int = 1) -> None:
    """Edit a message and recompute every digest and prev after it: a consistent rewrite."""
    prev, edited = ZERO_HASH, False
    for path in segments(root):
        out = []
        for raw in lines_of(path):
            obj = json.loads(raw)
            if obj["seq"] >= from_seq:
                if not edited and obj["kind"] == "message":
                    forge_text(obj)
                    edited = True
                obj["prev"] = prev
                raw = canonical(obj)  # noqa: PLW2901 - the rewritten line replaces it
            out.append(raw)
            prev = line_hash(raw)
        write_lines(path, out)


# --- manifest damage: the start refuses, verify fails ------------------------------------------


def edit_middle_of_last_segment(root: Path) -> None:
    last = segments(root)[-1]
    edit_line(last, len(lines_of(last)) // 2, lambda obj: obj.update(at="2020-01-01T00:00:00Z"))


def edit_next_to_last_line(root: Path) -> None:
    last = segments(root)[-1]
    index = max(i for i, raw in enumerate(lines_of(last)) if b'"kind":"message"' in raw)
    assert index < len(lines_of(last)) - 1
    edit_line(last, index, forge_text)


def append_line_with_wrong_prev(root: Path) -> None:
    last = segments(root)[-1]
    obj = json.loads(lines_of(last)[-1])
    obj.update(seq=obj["seq"] + 1, prev="ab" * 32, event="stop")
    with last.open("ab") as out:
        out.write(canonical(obj) + b"\n")


def truncate_whole_lines(root: Path) -> None:
    last = segments(root)[-1]
    write_lines(last, lines_of(last)[:-2])


def delete_last_segment(root: Path) -> None:
    segments(root)[-1].unlink()


def swap_last_two_segments(root: Path) -> None:
    one, two = segments(root)[-2:]
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)


@pytest.mark.parametrize(
    ("damage", "start_error", "problem"),
    [
        (edit_middle_of_last_segment, r"\(seq \d+\): prev", "chain_broken"),
        (edit_next_to_last_line, r"\(seq \d+\): prev", "chain_broken"),
        (append_line_with_wrong_prev, r"\(seq \d+\): prev", "chain_broken"),
        (truncate_whole_lines, r"state\.sqlite3 has seen up to seq", "head_missing"),
        (delete_last_segment, r"state\.sqlite3 has seen up to seq", "head_missing"),
        (swap_last_two_segments, r"\.jsonl:1 \(seq \d+\): seq \d+ where", "chain_broken"),
        (rewrite_chain, r"state\.sqlite3 saw", "head_mismatch"),
    ],
)
def test_manifest_damage_stops_the_start_and_fails_verify(
    archive: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    start_error: str,
    problem: str,
) -> None:
    damage(archive)
    before = snapshot(archive)
    with pytest.raises(ManifestCorruptError, match=start_error) as refused:
        check_startup(archive)
    assert "verify" in str(refused.value) and "restore" in str(refused.value)
    assert snapshot(archive) == before  # nothing lost, nothing added

    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    kinds = {p["kind"] for p in report["problems"]}
    assert problem in kinds, report["problems"]
    for item in report["problems"]:
        if item["kind"] == "chain_broken":  # a line: its segment, number and seq
            assert item["segment"].endswith(".jsonl") and item["line"] >= 1 and item["seq"] >= 1
    assert snapshot(archive) == before


@pytest.mark.parametrize("damage", [truncate_whole_lines, rewrite_chain])
def test_what_only_checkpoints_show(
    archive: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
) -> None:
    """Without a head kept elsewhere these pass (the README says so and why); with --trust
    or --expect-head they fail."""
    head = all_lines(archive)[-1]
    expected = f"{head['seq']}:{line_hash(canonical(head))}"
    damage(archive)
    code, report = verify_cli(archive, capsys)
    assert code == 0, report["problems"]
    assert report["checkpoints_seen"] == 2 and report["checkpoints_checked"] == 0
    assert [w["kind"] for w in report["warnings"]] == ["checkpoints_not_checked"]
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    assert {p["kind"] for p in report["problems"]} & {"head_missing", "head_mismatch"}
    code, report = verify_cli(archive, capsys, "--expect-head", expected)
    assert code == 1
    assert report["problems"][0]["where"] == "--expect-head"


def test_a_consistent_rewrite_with_the_state_removed_still_fails_with_trust(
    archive: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite_chain(archive, from_seq=3)
    (archive / "state.sqlite3").unlink()
    check_startup(archive)  # nothing left to compare with: the start cannot know
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    mismatches = [p for p in report["problems"] if p["kind"] == "head_mismatch"]
    assert [p["where"] for p in mismatches] == [
        f"checkpoints/{path.name}" for path in checkpoint_files(archive)
    ]
    assert all(p["segment"] and p["line"] and p["seq"] for p in mismatches)


def checkpoint_files(root: Path) -> list[Path]:
    return [path for _seq, path in checkpoint.list_checkpoints(root)]


# --- damage verify finds (the manifest chains, so the start goes on) -----------------------------


def truncate_blob(root: Path) -> None:
    path = root / blob_relpath(sha(BLOBS["a1"]))
    path.chmod(0o600)
    path.write_bytes(BLOBS["a1"][:-3])


def same_size_other_bytes(root: Path) -> None:
    path = root / blob_relpath(sha(BLOBS["b0"]))
    path.chmod(0o600)
    path.write_bytes(bytes(reversed(BLOBS["b0"])))


def append_chained(root: Path, make: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
    """Append a line built from the archive's lines, chained correctly: no crash made it, and
    only the rules across lines can show it. The archive ends in a `stop`, after which the
    daemon writes a `start` first (anything else there is `after_stop`): so does this."""
    lines = all_lines(root)
    last = segments(root)[-1]
    raw_last = lines_of(last)[-1]
    assert lines[-1].get("event") == "stop"
    begin = {"kind": "event", "event": "start", "at": lines[-1]["at"]}
    begin.update(seq=lines[-1]["seq"] + 1, prev=line_hash(raw_last))
    raw_start = canonical(begin)
    obj = {**make(lines), "seq": lines[-1]["seq"] + 2, "prev": line_hash(raw_start)}
    with last.open("ab") as out:
        out.write(raw_start + b"\n" + canonical(obj) + b"\n")


def duplicate_line(root: Path) -> None:
    def make(lines: list[dict[str, Any]]) -> dict[str, Any]:
        first = next(line for line in lines if line["kind"] == "message")
        return {k: v for k, v in first.items() if k not in ("seq", "prev")}

    append_chained(root, make)


def supersedes_another_message(root: Path) -> None:
    def make(lines: list[dict[str, Any]]) -> dict[str, Any]:
        other = next(line for line in lines if line.get("message_id") == "msg-3")
        record = message(4, text="changed")
        return {
            "kind": "message",
            "session_id": "s",
            "message_id": "msg-4",
            "record": record,
            "digest": record_digest(record),
            "source": "sync",
            "supersedes": other["seq"],
            "at": "2026-01-01T00:00:00Z",
        }

    append_chained(root, make)


def attachment_line_removed(root: Path) -> None:
    """Drop the a0 line and re-chain: the chain holds, the attachment has no end."""
    kept = [
        (path, json.loads(raw))
        for path in segments(root)
        for raw in lines_of(path)
        if b'"attachment_id":"a0"' not in raw
    ]
    renumber = {obj["seq"]: seq for seq, (_path, obj) in enumerate(kept, 1)}
    prev, out = ZERO_HASH, {}
    for path, obj in kept:
        obj.update(seq=renumber[obj["seq"]], prev=prev)
        if "supersedes" in obj:
            obj["supersedes"] = renumber[obj["supersedes"]]
        line = canonical(obj)
        out.setdefault(path, []).append(line)
        prev = line_hash(line)
    for path in segments(root):
        write_lines(path, out.get(path, []))
    (root / "state.sqlite3").unlink()  # it would remember the download as done


@pytest.mark.parametrize(
    ("damage", "args", "kind", "where"),
    [
        (truncate_blob, ("--sample", "0"), "blob_size", blob_relpath(sha(BLOBS["a1"]))),
        (same_size_other_bytes, (), "blob_hash_mismatch", blob_relpath(sha(BLOBS["b0"]))),
        (duplicate_line, (), "duplicate_line", ".jsonl:"),
        (supersedes_another_message, (), "bad_supersedes", ".jsonl:"),
        (attachment_line_removed, (), "attachment_missing", "msg-10"),
    ],
)
def test_damage_verify_finds(
    archive: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    args: tuple[str, ...],
    kind: str,
    where: str,
) -> None:
    assert verify_cli(archive, capsys, *args)[0] == 0
    damage(archive)
    code, report = verify_cli(archive, capsys, *args)
    assert code == 1
    found = [(p["kind"], p["where"]) for p in report["problems"]]
    assert [k for k, _ in found] == [kind], found
    assert where in found[0][1]
    if kind in ("blob_size", "blob_hash_mismatch", "duplicate_line", "bad_supersedes"):
        item = report["problems"][0]
        assert item["segment"] and item["line"] and item["seq"]


# --- checkpoints -------------------------------------------------------------------------------


def test_pristine_archive_verifies_with_its_checkpoints(
    archive: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]), "--complete")
    assert code == 0, report["problems"]
    assert (report["checkpoints_seen"], report["checkpoints_checked"]) == (2, 2)
    last = checkpoint.parse(checkpoint_files(archive)[-1].read_bytes())
    assert (last.seq, last.head) == (report["last_seq"], report["head"])
    code, _ = verify_cli(archive, capsys, "--expect-head", f"{last.seq}:{last.head}")
    assert code == 0


def test_a_forged_checkpoint_is_refused(
    archive: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed with another key under the archive's name: it passes for nobody."""
    lines = all_lines(archive)
    seq = lines[-1]["seq"] + 5
    forged = checkpoint.sign(
        Ed25519PrivateKey.generate(), ORIGIN, seq, "cd" * 32, "2026-01-01T00:00:00Z"
    )
    (archive / "checkpoints" / checkpoint.note_name(seq)).write_bytes(forged)
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    assert [(p["kind"], p["where"]) for p in report["problems"]] == [
        ("checkpoint_signature", f"checkpoints/{checkpoint.note_name(seq)}")
    ]


def test_a_signed_checkpoint_whose_head_is_not_in_the_manifest(
    archive: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key = checkpoint.load_private_key(keys[0].read_bytes())
    note = checkpoint.sign(key, ORIGIN, 3, "ef" * 32, "2026-01-01T00:00:00Z")
    (archive / "checkpoints" / checkpoint.note_name(3)).write_bytes(note)
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    problem = report["problems"][0]
    assert (problem["kind"], problem["seq"]) == ("head_mismatch", 3)
    assert len(report["problems"]) == 1


def test_an_altered_checkpoint_is_refused(
    archive: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = checkpoint_files(archive)[0]
    text = path.read_bytes()
    lines = text.split(b"\n")
    lines[2] = b"00" * 32  # another head, same signature
    path.write_bytes(b"\n".join(lines))
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    assert [p["kind"] for p in report["problems"]] == ["checkpoint_signature"]


def test_trust_without_checkpoints_is_a_problem(
    archive: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(archive / "checkpoints")
    code, report = verify_cli(archive, capsys, "--trust", str(keys[1]))
    assert code == 1
    assert [p["kind"] for p in report["problems"]] == ["checkpoint_missing"]
