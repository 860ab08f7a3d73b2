"""Signed checkpoints: the C2SP signed-note format, keys, openssl interop, the config rule."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.config import ArchiveConfig, Config, ConfigError, read_signing_key
from archiver.store import checkpoint

HEAD = "ab" * 32
TIME = "2026-12-02T10:00:00Z"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    # RFC 8032's first test key: the note below is then fixed, byte for byte.
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    return Ed25519PrivateKey.from_private_bytes(secret)


def test_note_layout_follows_the_spec(key: Ed25519PrivateKey) -> None:
    origin = checkpoint.origin_for("acct-1")
    note = checkpoint.sign(key, origin, 42, HEAD, TIME)
    text, _, sig_line = note.decode().rpartition("\n\n")
    assert text + "\n" == f"zoom-sms-archiver/acct-1\n42\n{HEAD}\n{TIME}\n"
    dash, name, b64 = sig_line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", origin)
    blob = base64.b64decode(b64)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    # key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]
    assert blob[:4] == hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
    key.public_key().verify(blob[4:], (text + "\n").encode())  # raises if it does not verify
    parsed = checkpoint.parse(note)
    assert (parsed.origin, parsed.seq, parsed.head, parsed.time) == (origin, 42, HEAD, TIME)
    assert checkpoint.verify(parsed, [key.public_key()]) is None


@pytest.mark.parametrize(
    ("account", "origin"),
    [
        ("acct-1", "zoom-sms-archiver/acct-1"),
        ("a b+c", "zoom-sms-archiver/a%20b%2Bc"),  # a key name has no space and no plus
        ("x/y", "zoom-sms-archiver/x%2Fy"),
    ],
)
def test_origin_is_a_valid_key_name(account: str, origin: str) -> None:
    assert checkpoint.origin_for(account) == origin


def good(key: Ed25519PrivateKey) -> bytes:
    return checkpoint.sign(key, "zoom-sms-archiver/a", 7, HEAD, TIME)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda note: note.replace(b"\n\n", b"\n"), "no blank line"),
        (lambda note: note[:-1], "no final newline"),
        (lambda note: note.replace(b"\n7\n", b"\n07\n"), "malformed"),
        (lambda note: note.replace(b"\n7\n", b"\n7\n\x01\n"), "control"),
        (lambda note: note.replace(HEAD.encode(), b"AB" * 32), "malformed"),
        (lambda note: note.replace(b"zoom-sms-archiver/a\n", b"other/a\n"), "origin"),
        (lambda note: note.replace("\u2014".encode(), b"-"), "signature line"),
        (lambda note: note.rstrip(b"\n") + b"!!\n", "not base64"),
        (lambda note: b"\xff" + note, "UTF-8"),
    ],
)
def test_malformed_notes(key: Ed25519PrivateKey, change: object, error: str) -> None:
    assert callable(change)
    with pytest.raises(ValueError, match=error):
        checkpoint.parse(change(good(key)))


def test_verify_rules(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    note = checkpoint.parse(good(key))
    assert checkpoint.verify(note, [other.public_key()]) == "not signed by any trusted key"
    assert checkpoint.verify(note, [other.public_key(), key.public_key()]) is None
    # Another key's signature line alongside: unknown keys are ignored, as the spec says.
    extra = checkpoint.sign(other, "zoom-sms-archiver/a", 7, HEAD, TIME).rsplit(b"\n\n", 1)[1]
    both = checkpoint.parse(good(key) + extra)
    assert checkpoint.verify(both, [key.public_key()]) is None
    # A known key whose signature fails rejects the note.
    altered = checkpoint.parse(good(key).replace(b"\n7\n", b"\n8\n"))
    assert "does not verify" in (checkpoint.verify(altered, [key.public_key()]) or "")


def test_openssl_verifies_a_checkpoint(tmp_path: Path) -> None:
    """The auditor's recipe: openssl alone, with the public key from `keygen`."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to check the auditor's recipe")
    key_path, pub_path = checkpoint.generate_keypair(tmp_path / "keys")
    key = checkpoint.load_private_key(key_path.read_bytes())
    note = checkpoint.sign(key, "zoom-sms-archiver/a", 9, HEAD, TIME)
    text, _, sig_line = note.rpartition(b"\n\n")
    (tmp_path / "text").write_bytes(text + b"\n")
    (tmp_path / "sig").write_bytes(base64.b64decode(sig_line.split(b" ")[-1])[4:])
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub_path), "-rawin"]
    command += ["-in", str(tmp_path / "text"), "-sigfile", str(tmp_path / "sig")]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    (tmp_path / "text").write_bytes(text.replace(b"\n9\n", b"\n10\n") + b"\n")
    assert subprocess.run(command, capture_output=True, check=False).returncode != 0


def test_keygen_files(tmp_path: Path) -> None:
    key_path, pub_path = checkpoint.generate_keypair(tmp_path)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SPKI
    key = checkpoint.load_private_key(key_path.read_bytes())
    public = checkpoint.load_public_key(pub_path.read_bytes())
    assert checkpoint.verify(checkpoint.parse(good(key)), [public]) is None
    with pytest.raises(FileExistsError):
        checkpoint.generate_keypair(tmp_path)  # never over a key in use


def test_note_files_are_written_atomically_by_seq(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "tmp").mkdir()
    path = checkpoint.write_note(tmp_path, 12, good(key))
    assert path == tmp_path / "checkpoints" / "000000000012.note"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert checkpoint.list_checkpoints(tmp_path) == [(12, path)]
    newest = checkpoint.newest_checkpoint(tmp_path)
    assert newest is not None and newest.seq == 7  # the note's own seq, as parsed


def test_signing_key_is_a_secret_file(tmp_path: Path) -> None:
    key_path, _ = checkpoint.generate_keypair(tmp_path / "keys")
    config = Config()
    assert read_signing_key(config, environ={}) is None
    configured = Config(archive=ArchiveConfig(signing_key_file=str(key_path)))
    assert read_signing_key(configured, environ={}) is not None
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(key_path, credentials / "signing_key")
    (credentials / "signing_key").chmod(0o600)
    found = read_signing_key(config, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert found is not None and "PRIVATE KEY" in found.reveal()
    key_path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others") as refused:
        read_signing_key(configured, environ={})
    assert refused.value.key == "archive.signing_key_file"
    assert "PRIVATE" not in str(refused.value)
