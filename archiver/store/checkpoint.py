"""Signed checkpoints: the chain head, signed with Ed25519, as a C2SP signed note.

A hash chain shows any edit inside it, but not a consistent rewrite of the whole chain nor
lines removed from its end: nothing outside the manifest says what its head was. A checkpoint
is that outside statement. Kept somewhere the archive's writer cannot reach (a replica with
Object Lock, the journal, an auditor's mailbox), it pins the manifest up to its seq.

Format (https://github.com/C2SP/C2SP/blob/main/signed-note.md, rules followed exactly):

    zoom-sms-archiver/<account_id>       origin, also the key name
    <seq>                                decimal
    <head>                               64 hex: SHA-256 of line <seq> without its newline
    <time>                               RFC 3339 UTC, when the note was signed
                                         (blank line)
    — zoom-sms-archiver/<account_id> <base64(key id || Ed25519 signature of the text)>

The text is the four lines with their newlines; the key id is the first 4 bytes of
SHA-256(key name || 0x0A || 0x01 || 32-byte public key). The account id is percent-encoded
where a key name may not carry it (spaces, `+`, controls).

Pure functions plus the one atomic file write; the crypto is `cryptography`'s, none of ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from archiver.store.layout import CHECKPOINTS_DIR, TMP_DIR, fsync_dir, open_waiting
from archiver.store.manifest import is_hex_digest

ORIGIN_PREFIX: Final = "zoom-sms-archiver/"
ED25519_TYPE: Final = b"\x01"
DASH: Final = "\u2014"
KEY_FILE: Final = "checkpoint.key"
PUB_FILE: Final = "checkpoint.pub"
MAX_SIGNATURES: Final = 16  # the spec asks verifiers to accept at least 16
_NOTE_NAME = re.compile(r"(\d{12,})\.note")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_SEQ = re.compile(r"[1-9]\d*")


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    seq: int
    head: str
    time: str
    text: bytes  # the signed text: the four body lines, newlines included
    signatures: tuple[Signature, ...]


def origin_for(account_id: str) -> str:
    """The note's origin and key name: no space, `+` or control character may appear."""
    return ORIGIN_PREFIX + quote(account_id, safe="-._~@:")


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + raw).digest()[:4]


def note_text(origin: str, seq: int, head: str, time: str) -> bytes:
    if seq < 1 or not is_hex_digest(head) or _TIME.fullmatch(time) is None:
        raise ValueError("a checkpoint needs a seq >= 1, a SHA-256 hex head and an RFC 3339 time")
    return f"{origin}\n{seq}\n{head}\n{time}\n".encode()


def sign(key: Ed25519PrivateKey, origin: str, seq: int, head: str, time: str) -> bytes:
    """The whole note: text, blank line, one signature line by `key` named `origin`."""
    text = note_text(origin, seq, head, time)
    blob = key_id(origin, key.public_key()) + key.sign(text)
    return text + b"\n" + f"{DASH} {origin} {base64.b64encode(blob).decode()}\n".encode()


def signature_of(note: bytes) -> str:
    """The base64 of the first signature line (for the `checkpoint` log event)."""
    return note.rstrip(b"\n").rsplit(b" ", 1)[-1].decode()


def parse(data: bytes) -> Checkpoint:
    """Parse a note; ValueError names what does not fit. Nothing is verified here."""
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("a signed note must be UTF-8") from exc
    if any(ch < " " and ch != "\n" for ch in whole):
        raise ValueError("a signed note must not contain control characters but newline")
    split = whole.rfind("\n\n")
    if split < 0 or not whole.endswith("\n"):
        raise ValueError("no blank line before the signatures, or no final newline")
    text, sig_lines = whole[: split + 1], whole[split + 2 :].splitlines()
    if not 1 <= len(sig_lines) <= MAX_SIGNATURES:
        raise ValueError(f"{len(sig_lines)} signature lines (1 to {MAX_SIGNATURES} accepted)")
    body = text.splitlines()
    if len(body) != 4:
        raise ValueError(f"the text has {len(body)} lines, not 4 (origin, seq, head, time)")
    origin, seq, head, time = body
    if not origin.startswith(ORIGIN_PREFIX) or " " in origin or "+" in origin:
        raise ValueError(f"origin {origin[:80]!r} is not zoom-sms-archiver/<account>")
    if _SEQ.fullmatch(seq) is None or not is_hex_digest(head) or _TIME.fullmatch(time) is None:
        raise ValueError("seq, head or time is malformed")
    return Checkpoint(origin, int(seq), head, time, text.encode(), _signatures(sig_lines))


def _signatures(lines: list[str]) -> tuple[Signature, ...]:
    out = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or not parts[1] or "+" in parts[1]:
            raise ValueError("a signature line is not '— <key name> <base64>'")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise ValueError("a signature is not base64") from exc
        if len(blob) < 5:
            raise ValueError("a signature is shorter than its key id")
        out.append(Signature(parts[1], blob[:4], blob[4:]))
    return tuple(out)


def verify(note: Checkpoint, trusted: list[Ed25519PublicKey]) -> str | None:
    """None when a trusted key signed the note; else why not. Per the spec: signatures from
    unknown (name, key id) pairs are ignored; one from a known key that fails rejects it."""
    verified = False
    for sig in note.signatures:
        if sig.name != note.origin:
            continue  # another name: not a key of this archive
        for public in trusted:
            if key_id(sig.name, public) != sig.key_id:
                continue
            try:
                public.verify(sig.signature, note.text)
            except InvalidSignature:
                return "the signature of a trusted key does not verify (the note was altered)"
            verified = True
    return None if verified else "not signed by any trusted key"


def note_name(seq: int) -> str:
    return f"{seq:012d}.note"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """ROOT/checkpoints/<seq>.note files, in seq order."""
    directory = root / CHECKPOINTS_DIR
    if not directory.is_dir():
        return []
    found = []
    for entry in os.scandir(directory):
        match = _NOTE_NAME.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            found.append((int(match.group(1)), Path(entry.path)))
    return sorted(found)


def newest_checkpoint(root: Path) -> Checkpoint | None:
    """The latest parseable checkpoint in ROOT (unverified): what the archive last attested."""
    for _seq, path in reversed(list_checkpoints(root)):
        try:
            return parse(path.read_bytes())
        except (OSError, ValueError):
            continue
    return None


class CheckpointConflict(FileExistsError):
    """checkpoints/<seq>.note exists and says another head: evidence, never overwritten."""

    def __init__(self, path: Path, found: str, wanted: str) -> None:
        super().__init__(
            f"{CHECKPOINTS_DIR}/{path.name} exists and says head {found[:16]}..., not "
            f"{wanted[:16]}...: a note is never overwritten"
        )
        self.path, self.found, self.wanted = path, found, wanted


def write_note(root: Path, seq: int, note: bytes) -> Path:
    """ROOT/checkpoints/<seq>.note, atomically and exclusively: a new tmp file (O_EXCL,
    O_NOFOLLOW: a link planted in tmp/ is never followed), fsync, hard-linked into place
    (which fails if the name exists: a note is never replaced), fsync the folder.

    An existing note for the same seq and head is left as it is; one with another head (or
    that is no note) raises CheckpointConflict: it is evidence."""
    directory = root / CHECKPOINTS_DIR
    if not directory.is_dir():
        directory.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(root)
    target = directory / note_name(seq)
    tmp = root / TMP_DIR / f"{note_name(seq)}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = open_waiting(tmp, flags, 0o644)  # out of descriptors: waits (layout.OPEN_WAITS)
    except FileExistsError:
        tmp.unlink()  # ours from a crash, or planted: removes the name, never its target
        fd = open_waiting(tmp, flags, 0o644)
    try:
        try:
            view = memoryview(note)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target, follow_symlinks=False)
        except FileExistsError:
            _same_note(target, note)
            return target
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(directory)
    return target


def _same_note(path: Path, note: bytes) -> None:
    """Raise CheckpointConflict unless `path` is a regular note for the seq and head of
    `note` (a second signature of the same head, at another time, adds nothing)."""
    wanted = parse(note)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as stream:
            found = parse(stream.read(64 * 1024)).head
    except (OSError, ValueError):
        found = "?" * 16  # a link, a folder or not a note: evidence as much as another head
    if found != wanted.head:
        raise CheckpointConflict(path, found, wanted.head)


def utc_seconds(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- keys ----------------------------------------------------------------------------------


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM (unencrypted); ValueError otherwise."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM; ValueError otherwise."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def generate_keypair(out: Path) -> tuple[Path, Path]:
    """DIR/checkpoint.key (PKCS#8 PEM, 0600) and DIR/checkpoint.pub (SPKI PEM). Refuses to
    overwrite either: losing a key in use would orphan every checkpoint it signed."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    for path in (key_path, pub_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; remove it first or choose another folder")
    _write_new(key_path, private, 0o600)
    _write_new(pub_path, public, 0o644)
    return key_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we promise
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
