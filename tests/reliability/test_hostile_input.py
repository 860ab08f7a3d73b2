"""Hostile input through the whole daemon: every refusal recorded, nothing outside ROOT.

The real `run --once` against `hostile_zoom` (a stand-in for what the simulator will not
send). tests/downloads/test_fetch.py holds the fetcher-level cases; here each one must end
as an `attachment_failed` line with its reason (or, for the gzip bomb, as the bytes exactly
as sent), and ids and names full of separators and control characters must never become
paths: not under ROOT, not anywhere.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from archiver.store.layout import blob_relpath
from archiver.store.manifest import sha256_hex
from archiver.store.verify import verify_archive
from tests.helpers import write_config
from tests.reliability.audit import read_manifest
from tests.reliability.harness import finish, launch, tail
from tests.reliability.hostile_zoom import BOMB, FILE_BYTES, dumps, hostile_zoom, message


def files_outside(top: Path, root: Path, *ignored: Path) -> dict[str, int]:
    """Every file under `top` but outside ROOT, with its size."""
    found = {}
    for directory, _dirs, files in os.walk(top):
        for name in files:
            path = Path(directory) / name
            if path.is_relative_to(root) or path in ignored:
                continue
            found[str(path)] = path.stat().st_size
    return found


def layout_problems(root: Path) -> list[str]:
    """Anything under ROOT that the archive format does not name."""
    allowed_top = {"manifest", "blobs", "tmp", "state.sqlite3", "LOCK"}
    allowed_top |= {"state.sqlite3-wal", "state.sqlite3-shm"}
    problems = [f"unexpected {p.name}" for p in root.iterdir() if p.name not in allowed_top]
    problems += [f"tmp/{p.name} left" for p in (root / "tmp").iterdir()]
    for path in (root / "manifest").iterdir():
        if not (path.name.endswith(".jsonl") and path.name[:6].isdigit()):
            problems.append(f"manifest/{path.name}")
    for directory, dirs, files in os.walk(root / "blobs"):
        for name in files:
            rel = (Path(directory) / name).relative_to(root).as_posix()
            if rel != blob_relpath(name) if len(name) == 64 else True:
                problems.append(rel)
        for name in dirs:
            rel = (Path(directory) / name).relative_to(root).as_posix()
            if rel not in ("blobs/sha256",) and not (
                rel.startswith("blobs/sha256/") and len(name) == 2
            ):
                problems.append(rel)
    return problems


def final_lines(root: Path) -> dict[str, dict[str, Any]]:
    """attachment_id -> its attachment or attachment_failed line."""
    return {
        line["attachment_id"]: line
        for line in read_manifest(root).lines
        if line["kind"] in ("attachment", "attachment_failed")
    }


def set_downloads(config: Path, lines: str) -> None:
    """Put `lines` into the [downloads] table of a `write_config` file, replacing the keys
    they name (TOML refuses a key given twice)."""
    new = {line.split("=", 1)[0].strip(): line for line in lines.splitlines() if "=" in line}
    out, section = [], ""
    for line in config.read_text().splitlines():
        section = line.strip() if line.startswith("[") else section
        if section == "[downloads]" and line.split("=", 1)[0].strip() in new:
            continue
        out.append(line)
        if line.strip() == "[downloads]":
            out.extend(new.values())
    config.write_text("\n".join(out) + "\n")


async def run_daemon(tmp_path: Path, zoom: Any, downloads: str) -> tuple[int, Path, Path]:
    """`run --once` against `zoom`, with `downloads` lines in the config."""
    config = write_config(tmp_path, zoom.info())
    set_downloads(config, downloads)
    log = tmp_path / "daemon.log"
    proc = await launch(config, log, "--once")
    return await finish(proc, 120.0), tmp_path / "archive", log


async def test_every_unsafe_download_is_refused_and_recorded(tmp_path: Path) -> None:
    async with hostile_zoom(tmp_path) as zoom:
        cases = {
            "a-ok": (zoom.url("ok"), None),
            "a-foreign": (
                "https://evil.example.com/file/x?jwt=e30",
                "host 'evil.example.com' is not in downloads.allowed_hosts",
            ),
            "a-redirect": (
                zoom.url("redirect-foreign"),
                "host 'evil.example.com' is not in downloads.allowed_hosts",
            ),
            "a-big": (zoom.url("big"), "Content-Length 524288 exceeds downloads.max_bytes"),
            "a-big-chunked": (zoom.url("big-chunked"), "body exceeds downloads.max_bytes"),
            "a-bomb": (zoom.url("bomb"), None),
            "a-self-signed": (zoom.url("ok", scheme="https"), "TLS verification failed"),
        }
        zoom.sessions["s-downloads"] = [
            message(f"m-{aid}", (aid, f"{aid}.png", url)) for aid, (url, _) in cases.items()
        ]
        code, root, log = await run_daemon(tmp_path, zoom, "max_bytes = 262144")
        assert code == 0, tail(log)
        lines = final_lines(root)
        for aid, (_, reason) in cases.items():
            line = lines[aid]
            if reason is None:
                assert line["kind"] == "attachment", line
            else:
                assert line["kind"] == "attachment_failed", line
                assert reason in line["reason"], line
        # The bomb is archived exactly as sent, never inflated: 64 KiB, not 64 MiB.
        assert lines["a-bomb"]["sha256"] == sha256_hex(BOMB)
        assert lines["a-bomb"]["size"] == len(BOMB)
        assert lines["a-ok"]["sha256"] == sha256_hex(FILE_BYTES)
        ours = (log, tmp_path / "config.toml", tmp_path / "client_secret")
        assert (
            files_outside(tmp_path, root, *ours, tmp_path / "cert.pem", tmp_path / "key.pem") == {}
        )
        assert layout_problems(root) == []
        assert verify_archive(root).ok


async def test_private_addresses_and_plain_http_are_refused_under_the_default_policy(
    tmp_path: Path,
) -> None:
    async with hostile_zoom(tmp_path) as zoom:
        cases = {
            "a-http": (zoom.url("ok"), "scheme 'http' is not allowed"),
            "a-loopback": (
                zoom.url("ok", scheme="https"),
                "address 127.0.0.1 is private, loopback or link-local",
            ),
            "a-private": (
                "https://10.0.0.1/file/ok?jwt=e30",
                "address 10.0.0.1 is private, loopback or link-local",
            ),
            "a-link-local": (
                "https://169.254.169.254/latest/meta-data?jwt=e30",
                "address 169.254.169.254 is private, loopback or link-local",
            ),
            "a-ipv6-loopback": (
                f"https://[::1]:{zoom.https_port}/file/ok?jwt=e30",
                "address ::1 is private, loopback or link-local",
            ),
            "a-name-to-loopback": (
                zoom.url("ok", scheme="https", host="localhost"),
                "localhost resolves only to private, loopback or link-local addresses",
            ),
        }
        zoom.sessions["s-private"] = [
            message(f"m-{aid}", (aid, f"{aid}.png", url)) for aid, (url, _) in cases.items()
        ]
        policy = (
            'allowed_schemes = ["https"]\nallow_private_addresses = false\n'
            'allowed_hosts = ["127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "::1"]'
        )
        code, root, log = await run_daemon(tmp_path, zoom, policy)
        assert code == 0, tail(log)
        lines = final_lines(root)
        for aid, (_, reason) in cases.items():
            assert lines[aid]["kind"] == "attachment_failed", lines[aid]
            assert reason in lines[aid]["reason"], lines[aid]
            # Refused by policy: at once, not after a round of retries.
            assert lines[aid]["attempts"] <= 1, lines[aid]
        assert not list((root / "blobs" / "sha256").iterdir())


def traces_of(tag: str, *places: Path) -> list[str]:
    """Files or folders anywhere under `places` whose name carries `tag`."""
    found = []
    for place in places:
        for directory, dirs, files in os.walk(place):
            found += [os.path.join(directory, n) for n in dirs + files if tag in n]
            if directory.count(os.sep) > 12:
                dirs.clear()
    return found


async def test_hostile_ids_and_names_never_become_paths(tmp_path: Path) -> None:
    tag = f"zsa-canary-{uuid.uuid4().hex[:8]}"
    escape = f"../../../../../../tmp/{tag}"
    names = [escape, f"/tmp/{tag}-abs", f"..\\..\\{tag}", f"{tag}\x00.png", "..", ".", ""]
    names += [f"a\nb\r\x1b[31m{tag}", "CON", f"\u202e{tag}gnp.exe"]
    session_ids = [escape, f"a/b\\{tag}", f"s\x00{tag}", "..", ".", f"line\n{tag}\t\x07"]
    message_ids = [escape, f"/etc/{tag}", "..", f"m\x00{tag}", f"%2e%2e%2f{tag}"]
    async with hostile_zoom(tmp_path) as zoom:
        for s_index, sid in enumerate(session_ids):
            zoom.sessions[sid] = [
                message(
                    mid,
                    (
                        f"{escape}-{s_index}-{m_index}",
                        names[(s_index + m_index) % len(names)],
                        zoom.url("ok"),
                    ),
                )
                for m_index, mid in enumerate(message_ids)
            ]
        code, root, log = await run_daemon(tmp_path, zoom, "")
        assert code == 0, tail(log)
        lines = read_manifest(root).lines
        archived = {(x["session_id"], x["message_id"]) for x in lines if x["kind"] == "message"}
        assert archived == {(sid, mid) for sid in session_ids for mid in message_ids}
        done = [x for x in lines if x["kind"] == "attachment"]
        assert len(done) == len(session_ids) * len(message_ids)
        assert {x["name"] for x in done} <= set(names)
        # The "." and ".." sessions were asked for at their own path, not at a neighbour's.
        assert all(p.startswith("/v2/phone/sms/sessions") for p in zoom.requests)
        assert "/v2/phone/sms/sessions/%2E%2E/sync?" in " ".join(
            p[:40] + "?" for p in zoom.requests
        ) or any(p.startswith("/v2/phone/sms/sessions/%2E%2E/sync") for p in zoom.requests)
    assert layout_problems(root) == []
    assert verify_archive(root).ok
    project = Path(__file__).resolve().parents[2]
    assert traces_of(tag, Path("/tmp"), tmp_path.parent, root) == []
    assert [p for p in os.listdir(project) if tag in p] == []
    assert [p for p in os.listdir("/") if tag in p] == []


async def test_hostile_bodies_fail_their_session_loudly_and_nothing_else(tmp_path: Path) -> None:
    """A body the client cannot take fails that session, named in the log and the exit code;
    the others are archived; nothing of a refused page is written (never half a page), and
    the archive opens again afterwards."""
    async with hostile_zoom(tmp_path) as zoom:
        zoom.sessions["s-good"] = [message("m-1"), message("m-2")]
        hostile: dict[str, bytes] = {
            "s-deep": b'{"sms_histories":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            "s-nan": b'{"sms_histories":[{"message_id":"m1","x":NaN}],"sync_token":"t"}',
            "s-huge-number": b'{"sms_histories":[{"message_id":"m1","x":1e999}],"sync_token":"t"}',
            "s-surrogate-id": b'{"sms_histories":[{"message_id":"m\\ud800"}],"sync_token":"t"}',
            "s-invalid-utf8": b'{"sms_histories":[{"message_id":"\xff\xfe"}],"sync_token":"t"}',
            "s-wrong-type": dumps({"sms_histories": "nope", "sync_token": 7}),
            "s-html": b"<html><body>502 Bad Gateway</body></html>",
            "s-half-page": dumps({"sms_histories": [{"message_id": "ok"}, {"id": "no-id"}]}),
        }
        zoom.sessions.update(hostile)
        # Accepted, but its attachment's advertised size is beyond any integer SQLite holds.
        huge = message("m-size", ("a-size", "x.png", zoom.url("ok")))
        huge["attachments"][0]["size"] = 10**30
        zoom.sessions["s-huge-size"] = [huge]
        for attempt in range(2):  # the second run proves the archive still opens
            code, root, log = await run_daemon(tmp_path, zoom, "")
            text = tail(log, 200_000)
            assert code == 1, text[-3000:]
            assert "Traceback" not in text, text[-3000:]
            incomplete = [json.loads(x) for x in text.splitlines() if "session_incomplete" in x]
            assert {x["session_id"] for x in incomplete} == set(hostile), incomplete
            lines = read_manifest(root).lines
            sessions = {x["session_id"] for x in lines if x["kind"] == "message"}
            assert sessions == {"s-good", "s-huge-size"}, attempt
            failed = [x for x in lines if x["kind"] == "attachment_failed"]
            assert [x["attachment_id"] for x in failed] == ["a-size"]
            assert "exceeds downloads.max_bytes" in failed[0]["reason"]
            assert verify_archive(root).ok
