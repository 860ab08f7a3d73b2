"""Issue 15, the hostile review: the holes it found, each against archives the real daemon
wrote (`daemon.open_archive`, with its key), and the crash windows that must never make a
start refuse."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archiver import daemon
from archiver.cli import main
from archiver.config import ArchiveConfig, Config, ZoomConfig
from archiver.errors import ConfigError, ManifestCorruptError
from archiver.store import checkpoint
from archiver.store.checkpointer import Checkpointer, load_signer
from archiver.store.layout import prepare_root
from archiver.store.manifest import canonical, line_hash, record_digest
from archiver.store.recovery import check_startup
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message

ACCOUNT = "acct-1"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return checkpoint.generate_keypair(tmp_path_factory.mktemp("keys"))


def config(root: Path, key: Path | None) -> Config:
    return Config(
        zoom=ZoomConfig(account_id=ACCOUNT),
        archive=ArchiveConfig(
            root=str(root), signing_key_file=str(key) if key else None, checkpoint_interval=3600
        ),
    )


async def one_run(cfg: Config, texts: list[str]) -> None:
    async with daemon.open_archive(cfg) as (_state, writer):
        n = len(list((cfg.root / "manifest").glob("*.jsonl")))
        await writer.append_messages(
            "s", [message(100 * n + i, t) for i, t in enumerate(texts)], "sync"
        )


@pytest.fixture(scope="module")
def daemon_archive(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    """Two clean runs of the daemon with its key: start (signed), messages, stop (signed)."""
    root = tmp_path_factory.mktemp("daemon") / "archive"
    asyncio.run(one_run(config(root, keys[0]), ["a", "b", "c"]))
    asyncio.run(one_run(config(root, keys[0]), ["d", "e"]))
    return root


@pytest.fixture
def archive(daemon_archive: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(daemon_archive, root, symlinks=True)
    return root


def segment(root: Path) -> Path:
    (only,) = sorted((root / "manifest").glob("*.jsonl"))
    return only


def lines(root: Path) -> list[bytes]:
    return segment(root).read_bytes().splitlines()


def write(root: Path, kept: list[bytes]) -> None:
    segment(root).write_bytes(b"".join(raw + b"\n" for raw in kept))


def append_chained(root: Path, entry: dict[str, Any]) -> dict[str, Any]:
    last = lines(root)[-1]
    obj = {**entry, "seq": json.loads(last)["seq"] + 1, "prev": line_hash(last)}
    obj.setdefault("at", json.loads(last)["at"])
    with segment(root).open("ab") as out:
        out.write(canonical(obj) + b"\n")
    return obj


def forged_message(n: int) -> dict[str, Any]:
    record = message(n, text="I never sent this")
    return {
        "kind": "message",
        "session_id": "s",
        "message_id": f"msg-{n}",
        "record": record,
        "digest": record_digest(record),
        "source": "sync",
    }


def events(root: Path) -> list[str]:
    return [json.loads(raw).get("event", json.loads(raw)["kind"]) for raw in lines(root)]


def pub(keys: tuple[Path, Path]) -> Any:
    return checkpoint.load_public_key(keys[1].read_bytes())


def start(root: Path, key: Path | None) -> None:
    asyncio.run(one_run(config(root, key), []))


# --- 1: lines appended after a clean stop ------------------------------------------------------


def test_the_daemon_signs_its_start_line_and_its_stop(archive: Path) -> None:
    by_seq = {json.loads(raw)["seq"]: json.loads(raw) for raw in lines(archive)}
    signed = [by_seq[seq].get("event") for seq, _path in checkpoint.list_checkpoints(archive)]
    assert signed == ["start", "stop", "start", "stop"]


@pytest.mark.parametrize("with_key", [True, False])
def test_a_line_forged_after_a_clean_stop_stops_the_start(
    archive: Path, keys: tuple[Path, Path], with_key: bool
) -> None:
    """Fails before the fix: the daemon replayed the line as its own and signed over it."""
    forged = append_chained(archive, forged_message(77))
    if not with_key:  # the state's record of the clean stop alone
        shutil.rmtree(archive / "checkpoints")
    before = segment(archive).read_bytes()
    with pytest.raises(
        ManifestCorruptError, match=rf"\(seq {forged['seq']}\): a message line after"
    ):
        start(archive, keys[0] if with_key else None)
    assert segment(archive).read_bytes() == before


def test_a_line_forged_after_a_signed_stop_with_the_state_removed(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    append_chained(archive, forged_message(77))
    (archive / "state.sqlite3").unlink()
    with pytest.raises(ManifestCorruptError, match=r"after the clean stop that checkpoints/"):
        check_startup(archive, pub(keys), checkpoint.origin_for(ACCOUNT))


def test_verify_refuses_a_line_after_a_checkpointed_stop(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    assert verify_archive(archive, trust=[pub(keys)], complete=True).ok
    forged = append_chained(archive, forged_message(77))
    report = verify_archive(archive, trust=[pub(keys)], complete=True)
    assert [(p.kind, p.seq) for p in report.problems] == [("after_stop", forged["seq"])]
    # Without a key the rule is weaker (a forger can write a `start` line first), but a line
    # right after a stop is still no daemon's.
    assert [p.kind for p in verify_archive(archive).problems] == ["after_stop"]


def test_a_forged_start_line_does_not_help_with_trust(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    append_chained(archive, {"kind": "event", "event": "start"})
    forged = append_chained(archive, forged_message(78))
    assert verify_archive(archive).ok  # no key: a start line is a start line
    report = verify_archive(archive, trust=[pub(keys)])
    assert [(p.kind, p.seq) for p in report.problems] == [("after_stop", forged["seq"])]
    with pytest.raises(ManifestCorruptError, match="a message line after the clean stop"):
        start(archive, keys[0])


def test_crashes_right_after_start_never_make_a_start_refuse(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """A crash between the start line and its checkpoint, twice, then a torn write: the
    next start goes on, and the archive verifies."""
    append_chained(archive, {"kind": "event", "event": "start", "version": "x"})
    append_chained(archive, {"kind": "event", "event": "start", "version": "x"})
    with segment(archive).open("ab") as out:
        out.write(b'{"at":"2026-01-01T00:00:00Z","kind":"eve')  # torn
    start(archive, keys[0])
    assert events(archive)[-6:] == ["stop", "start", "start", "torn_tail_repaired", "start", "stop"]
    report = verify_archive(archive, trust=[pub(keys)], complete=True)
    assert report.ok, report.problems


def test_a_crash_after_the_stop_line_before_its_checkpoint(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """The stop line is there, its note is not (or the state never recorded it)."""
    newest = checkpoint.list_checkpoints(archive)[-1][1]
    newest.unlink()
    with sqlite3.connect(archive / "state.sqlite3") as db:
        db.execute("DELETE FROM meta WHERE key = 'manifest_clean_stop'")
    start(archive, keys[0])
    assert verify_archive(archive, trust=[pub(keys)]).ok


# --- 2: truncation hidden by the state, and notes never overwritten ------------------------------


def test_truncation_with_the_state_edited_to_match_stops_the_start(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """Fails before the fix: the start went on and the stop note replaced the old one."""
    notes = {p.name: p.read_bytes() for _s, p in checkpoint.list_checkpoints(archive)}
    kept = lines(archive)[:-2]
    write(archive, kept)
    with sqlite3.connect(archive / "state.sqlite3") as db:
        db.execute(
            "UPDATE manifest_index SET seq = ?, head = ?",
            (json.loads(kept[-1])["seq"], line_hash(kept[-1])),
        )
        db.execute("DELETE FROM meta WHERE key = 'manifest_clean_stop'")
    with pytest.raises(ManifestCorruptError, match=r"signed with this daemon's key, says seq"):
        start(archive, keys[0])
    assert {p.name: p.read_bytes() for _s, p in checkpoint.list_checkpoints(archive)} == notes


def test_a_note_is_never_overwritten(archive: Path, keys: tuple[Path, Path]) -> None:
    key = checkpoint.load_private_key(keys[0].read_bytes())
    seq, path = checkpoint.list_checkpoints(archive)[-1]
    old = checkpoint.parse(path.read_bytes())
    again = checkpoint.sign(key, old.origin, seq, old.head, "2030-01-01T00:00:00Z")
    assert checkpoint.write_note(archive, seq, again) == path  # same head: kept as it was
    other = checkpoint.sign(key, old.origin, seq, "cd" * 32, old.time)
    with pytest.raises(checkpoint.CheckpointConflict, match="never overwritten"):
        checkpoint.write_note(archive, seq, other)
    assert checkpoint.parse(path.read_bytes()) == old
    assert not list((archive / "tmp").iterdir())


def test_a_knowing_rebuild_over_lost_lines_stays_visible(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """Remove the state after a truncation, as the refusal allows: the start goes on, the
    notes beyond the end are set aside in recovered/ (not overwritten), and verify reports
    the loss for good."""
    newest_seq, newest = checkpoint.list_checkpoints(archive)[-1]
    old_note = newest.read_bytes()
    write(archive, lines(archive)[:-3])
    (archive / "state.sqlite3").unlink()
    start(archive, keys[0])
    rebuilt = next(json.loads(r) for r in lines(archive) if b'"state_rebuilt"' in r)
    assert (rebuilt["old_seq"], rebuilt["new_seq"]) == (newest_seq, newest_seq - 3)
    (aside,) = [x for x in rebuilt["checkpoints_set_aside"] if x["name"] == newest.name]
    assert (archive / aside["path"]).read_bytes() == old_note
    report = verify_archive(archive, trust=[pub(keys)])
    assert [p.kind for p in report.problems] == ["lines_lost"], report.problems
    assert f"old_seq {newest_seq}" in report.problems[0].detail


def test_a_rebuild_whose_old_head_is_not_in_the_chain(archive: Path) -> None:
    raw = lines(archive)
    entry = {
        "kind": "event", "event": "state_rebuilt", "old_seq": 3, "old_head": "ab" * 32,
        "new_seq": len(raw), "new_head": line_hash(raw[-1]),
    }  # fmt: skip
    append_chained(archive, entry)
    report = verify_archive(archive)
    assert [(p.kind, p.seq) for p in report.problems] == [("lines_lost", len(raw) + 1)]
    assert "seq 3" in report.problems[0].detail


# --- 3: start-up reads closed segments too -------------------------------------------------------


def test_an_edit_in_a_closed_segment_stops_the_start(tmp_path: Path) -> None:
    """Fails before the fix: only the segment holding the state's position was read."""
    root = tmp_path / "multi"

    async def build() -> None:
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state, segment_max_bytes=1500)
        for n in range(12):
            await writer.append_messages("s", [message(n, "x" * 200)], "sync")
        await writer.close()
        state.close()

    asyncio.run(build())
    first, *rest = sorted((root / "manifest").glob("*.jsonl"))
    assert len(rest) >= 2
    raw = first.read_bytes().splitlines()
    obj = json.loads(raw[0])
    obj["record"]["message"] = "FORGED"
    obj["digest"] = record_digest(obj["record"])
    first.write_bytes(b"".join(r + b"\n" for r in [canonical(obj), *raw[1:]]))
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:2 \(seq 2\): prev"):
        check_startup(root)
    # and every line of it but the last removed: a gap in seq at its first line
    first.write_bytes(raw[-1] + b"\n")
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:1 \(seq 1\): seq \d+ where 1"):
        check_startup(root)


# --- 5: a link planted in tmp/ -----------------------------------------------------------------


def test_a_link_planted_for_the_note_tmp_file_is_not_followed(
    archive: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    victim = tmp_path / "outside"
    victim.write_bytes(b"precious")
    key = checkpoint.load_private_key(keys[0].read_bytes())
    seq = 99

    class Head:
        position = (seq, "ab" * 32)

    os.symlink(victim, archive / "tmp" / f"{checkpoint.note_name(seq)}.{os.getpid()}.tmp")
    asyncio.run(Checkpointer(archive, key, checkpoint.origin_for(ACCOUNT), Head()).write())
    assert victim.read_bytes() == b"precious"
    note = archive / "checkpoints" / checkpoint.note_name(seq)
    assert note.is_file() and not note.is_symlink()


def test_verify_reports_a_link_in_checkpoints(archive: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", archive / "checkpoints" / checkpoint.note_name(999))
    report = verify_archive(archive)
    assert [(p.kind, p.where) for p in report.problems] == [
        ("checkpoint_not_file", f"checkpoints/{checkpoint.note_name(999)}")
    ]


# --- 8: an encrypted key -----------------------------------------------------------------------


def test_an_encrypted_key_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "enc.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:x",
         "-out", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not an unencrypted Ed25519 private key") as err:
        load_signer(config(tmp_path / "root", path))
    assert "password" not in str(err.value).lower()


# --- 9: verify writes nothing into ROOT ---------------------------------------------------------


def test_verify_leaves_root_as_it_found_it(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.relative_to(archive) for p in archive.rglob("*"))
    assert main(["verify", str(archive)]) == 0
    capsys.readouterr()
    assert sorted(p.relative_to(archive) for p in archive.rglob("*")) == before


# --- 6: the evidence start-up keeps in recovered/ ------------------------------------------------


def test_verify_checks_the_kept_torn_tail(archive: Path, keys: tuple[Path, Path]) -> None:
    with segment(archive).open("ab") as out:
        out.write(b'{"at":"2026-01-01T00:00:00Z","kind":"mess')  # a torn write
    start(archive, keys[0])
    (kept,) = (archive / "recovered").iterdir()
    assert verify_archive(archive, trust=[pub(keys)]).ok
    kept.chmod(0o600)
    kept.write_bytes(b"something else")
    report = verify_archive(archive)
    assert [(p.kind, p.where) for p in report.problems] == [
        ("evidence_altered", f"recovered/{kept.name}")
    ]
    kept.unlink()
    assert [p.kind for p in verify_archive(archive).problems] == ["evidence_missing"]


# --- 7: one origin per archive ----------------------------------------------------------------


def test_notes_under_another_origin(archive: Path, keys: tuple[Path, Path]) -> None:
    key = checkpoint.load_private_key(keys[0].read_bytes())
    other = checkpoint.origin_for("some-other-account")
    report = verify_archive(archive, trust=[pub(keys)], account=ACCOUNT)
    assert report.ok and report.origins == [checkpoint.origin_for(ACCOUNT)]
    paths = [path for _seq, path in checkpoint.list_checkpoints(archive)]
    note = checkpoint.parse(paths[0].read_bytes())
    paths[0].write_bytes(checkpoint.sign(key, other, note.seq, note.head, note.time))
    report = verify_archive(archive, trust=[pub(keys)])
    assert {p.kind for p in report.problems} == {"checkpoint_origin"}
    assert report.origins == sorted([checkpoint.origin_for(ACCOUNT), other])
    for path in paths:  # all re-signed for the other account: one origin, but not ours
        note = checkpoint.parse(path.read_bytes())
        path.write_bytes(checkpoint.sign(key, other, note.seq, note.head, note.time))
    assert verify_archive(archive, trust=[pub(keys)]).ok
    report = verify_archive(archive, trust=[pub(keys)], account=ACCOUNT)
    assert [(p.kind, p.where) for p in report.problems] == [
        ("checkpoint_origin", f"checkpoints/{paths[0].name}")
    ]


# --- 10: notes kept elsewhere ------------------------------------------------------------------


def test_verify_checks_notes_kept_elsewhere(
    archive: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "journal-notes"
    shutil.copytree(archive / "checkpoints", elsewhere)
    shutil.rmtree(archive / "checkpoints")
    write(archive, lines(archive)[:-1])  # the last stop, gone with the notes in ROOT
    (archive / "state.sqlite3").unlink()
    args = ["verify", str(archive), "--json", "--trust", str(keys[1])]
    assert main([*args[:3]]) == 0  # no key, no notes: nothing to see
    capsys.readouterr()
    assert main([*args, "--checkpoints", str(elsewhere)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in report["problems"]] == ["head_missing"]
    assert report["problems"][0]["where"].startswith(str(elsewhere))
    assert main(["verify", str(archive), "--checkpoints", str(elsewhere)]) == 2


def test_a_stop_after_a_stop_is_not_the_daemons(archive: Path, keys: tuple[Path, Path]) -> None:
    """The daemon writes one `stop` per run, after its `start`: a second `stop` with no
    `start` between (a forged append, which the start-up check refuses) fails verify too,
    with and without --trust."""
    assert json.loads(lines(archive)[-1])["event"] == "stop"
    forged = append_chained(archive, {"kind": "event", "event": "stop"})
    for trust in ([], [pub(keys)]):
        report = verify_archive(archive, trust=trust)
        assert [(p.kind, p.seq) for p in report.problems] == [("after_stop", forged["seq"])]


def test_an_unsigned_stop_does_not_undo_a_signed_one(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """Fails before the fix: an unsigned `stop` reset the checkpointed stop's rule, so a
    forged start, stop, start let any line after them pass `verify --trust`. Only a `start`
    a trusted note vouches for ends that rule; the start-up check refuses the same lines."""
    added = [append_chained(archive, {"kind": "event", "event": e}) for e in ("start", "stop")]
    append_chained(archive, {"kind": "event", "event": "start"})
    append_chained(archive, forged_message(79))
    assert verify_archive(archive).ok  # without a key a start line is a start line
    report = verify_archive(archive, trust=[pub(keys)])
    assert [(p.kind, p.seq) for p in report.problems] == [("after_stop", added[1]["seq"])]
    assert "after the checkpointed stop" in report.problems[0].detail
    with pytest.raises(ManifestCorruptError, match=r"a stop line after the clean stop that chec"):
        check_startup(archive, pub(keys), checkpoint.origin_for(ACCOUNT))


def test_a_start_without_the_key_at_a_checkpointed_stop_refuses(
    archive: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """Fails before the fix: a run without the key (a boot where the credential was missing
    logged `checkpoints_disabled` only) wrote lines after the checkpointed stop that no note
    vouches for, and every later start with the key refused them for good. Now that start
    refuses (a configuration error, exit 2) and leaves ROOT as it was; with the key, or a
    new key (rotation: both public keys to --trust), the archive goes on."""
    before = segment(archive).read_bytes()
    with pytest.raises(ConfigError, match=r"this archive is checkpointed \(checkpoints/0"):
        start(archive, None)
    assert segment(archive).read_bytes() == before
    new_key, new_pub = checkpoint.generate_keypair(tmp_path / "new")
    start(archive, new_key)
    trusted = [pub(keys), checkpoint.load_public_key(new_pub.read_bytes())]
    assert verify_archive(archive, trust=trusted, complete=True).ok
    # The old key again would see lines after its own newest note, a stop: no going back.
    with pytest.raises(ManifestCorruptError, match="a stop line after the clean stop"):
        start(archive, keys[0])


def test_a_start_without_the_key_after_an_unclean_end_goes_on(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """The newest note is not at a stop (the last run did not stop cleanly): nothing a
    keyless run writes breaks a signed-stop rule, so it may start."""
    stop = json.loads(lines(archive)[-1])
    assert stop["event"] == "stop"
    note = archive / "checkpoints" / f"{stop['seq']:012d}.note"
    note.unlink()  # as if the run crashed before its closing note (and before the stop)
    write(archive, lines(archive)[:-1])
    (archive / "state.sqlite3").unlink()
    start(archive, None)
    assert verify_archive(archive, trust=[pub(keys)]).ok


# --- 7: a crash before a start's own start-up events are durable --------------------------------


CHILD = """
import asyncio, sys
from pathlib import Path
from tests.store.test_tamper_review import config, one_run
asyncio.run(one_run(config(Path(sys.argv[1]), Path(sys.argv[2])), ["z"]))
"""


def crash_start(root: Path, key: Path, crash_at: str | None) -> int:
    """The daemon's start (open_archive with the key, one message) in a subprocess, killed
    at `crash_at`."""
    env = {k: v for k, v in os.environ.items() if k != "ARCHIVER_CRASH_AT"}
    if crash_at:
        env["ARCHIVER_CRASH_AT"] = crash_at
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(key)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return child.returncode


def test_a_crash_before_state_rebuilt_still_records_the_rebuild(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """Fails before the fix: the replay had committed the state and the notes were moved
    aside, so the next start was an ordinary one and no line ever said the state was rebuilt
    over lost lines (verify --trust passed). Now what the start owes is kept in the state
    until its line is durable."""
    newest_seq, newest = checkpoint.list_checkpoints(archive)[-1]
    write(archive, lines(archive)[:-2])
    (archive / "state.sqlite3").unlink()
    assert crash_start(archive, keys[0], "manifest_before_write") == -signal.SIGKILL
    assert "state_rebuilt" not in events(archive)
    assert crash_start(archive, keys[0], None) == 0
    (rebuilt,) = [json.loads(r) for r in lines(archive) if b'"state_rebuilt"' in r]
    assert (rebuilt["old_seq"], rebuilt["new_seq"]) == (newest_seq, newest_seq - 2)
    assert newest.name in {x["name"] for x in rebuilt["checkpoints_set_aside"]}
    report = verify_archive(archive, trust=[pub(keys)])
    assert [p.kind for p in report.problems] == ["lines_lost"], report.problems


def test_a_crash_before_torn_tail_repaired_still_records_the_cut(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """Fails before the fix: the torn bytes were cut and kept, and no line ever named them."""
    with segment(archive).open("ab") as out:
        out.write(b'{"at":"2026-')
    assert crash_start(archive, keys[0], "manifest_before_write") == -signal.SIGKILL
    assert crash_start(archive, keys[0], None) == 0
    (repaired,) = [json.loads(r) for r in lines(archive) if b'"torn_tail_repaired"' in r]
    assert (archive / repaired["recovered"]).read_bytes() == b'{"at":"2026-'
    assert len(list((archive / "recovered").glob("*.tail"))) == 1
    assert verify_archive(archive, trust=[pub(keys)]).ok


def test_lines_forged_after_a_stop_are_one_problem_that_names_the_stop(
    archive: Path, keys: tuple[Path, Path]
) -> None:
    """One problem per intrusion, at its first line, naming the stop it follows: the lines
    after it are the same intrusion, not as many problems."""
    stop = json.loads(lines(archive)[-1])
    assert stop["event"] == "stop"
    forged = [append_chained(archive, forged_message(80 + n)) for n in range(3)]
    for trust in ([], [pub(keys)]):
        report = verify_archive(archive, trust=trust)
        assert [(p.kind, p.seq) for p in report.problems] == [("after_stop", forged[0]["seq"])]
        wanted = (
            rf"a message line after the stop at seq {stop['seq']} \(\d{{6}}\.jsonl:\d+\) "
            r"and no `start` line between: not written by the daemon"
        )
        assert re.fullmatch(wanted, report.problems[0].detail), report.problems[0].detail
