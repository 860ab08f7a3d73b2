"""docs/ARCHIVE-FORMAT.md's recipes, extracted from the document and run as an auditor would:
against an archive the real daemon wrote (with a signing key), and against tampered copies.

The Python recipe runs on a bare interpreter (`-I -S`: no site-packages, so none of our code);
the shell recipes under `sh` with coreutils and openssl.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store import checkpoint
from archiver.store.layout import blob_relpath, prepare_root
from archiver.store.manifest import ZERO_HASH, canonical, line_hash, record_digest
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.helpers import load, write_config
from tests.store.conftest import message

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHIVE-FORMAT.md"
RECIPE = re.compile(r"<!-- recipe: (\S+) -->\n```\w+\n(.*?)\n```", re.DOTALL)


def recipes() -> dict[str, str]:
    return {name: body + "\n" for name, body in RECIPE.findall(DOC.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(archive, checkpoint.pub): one `run --once` of the real daemon, with attachments."""
    base = tmp_path_factory.mktemp("doc")
    key, pub = checkpoint.generate_keypair(base / "keys")
    sim_config = SimulatorConfig(
        seed=3, sessions=4, history_days=30, mean_messages=6, busy_fraction=0.0,
        attachment_probability=0.4, max_attachment_bytes=8192,
    )  # fmt: skip

    async def build() -> None:
        async with Simulator(sim_config) as sim:
            config = write_config(base, sim)
            root = base / "archive"
            text = config.read_text().replace(
                f'root = "{root}"\n', f'root = "{root}"\nsigning_key_file = "{key}"\n'
            )
            config.write_text(text)
            assert (await daemon.run(load(config), once=True)).ok

    asyncio.run(build())
    return base / "archive", pub


@pytest.fixture
def auditor(tmp_path: Path) -> Path:
    """A working folder with the recipes saved and `python3` a bare interpreter."""
    work = tmp_path / "auditor"
    (work / "bin").mkdir(parents=True)
    for name, body in recipes().items():
        (work / name).write_text(body, encoding="utf-8")
    python = work / "bin" / "python3"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    python.chmod(0o755)
    return work


@pytest.fixture
def archive(built: tuple[Path, Path], tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(built[0], root)
    for path in root.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)  # blobs are read-only; tampering is not
    return root


def run(work: Path, recipe: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{work / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    command = ["sh", recipe] if recipe.endswith(".sh") else ["python3", recipe, env.pop("ARGS")]
    if not recipe.endswith(".sh"):
        command += env.pop("MORE", "").split()
    return subprocess.run(
        command, cwd=work, env={"PATH": path, **env}, capture_output=True, text=True, timeout=60
    )


def chain(work: Path, root: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return run(work, "check_chain.py", ARGS=str(root), MORE=" ".join(more))


def test_the_document_has_the_three_recipes_and_python_uses_the_stdlib_only() -> None:
    found = recipes()
    assert sorted(found) == ["check_blobs.sh", "check_chain.py", "check_checkpoint.sh"]
    imported = {
        alias.name
        for node in ast.walk(ast.parse(found["check_chain.py"]))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"hashlib", "json", "os", "sys"}


def segments(root: Path) -> list[Path]:
    return sorted((root / "manifest").glob("*.jsonl"))


def test_chain_recipe_agrees_with_verify(auditor: Path, archive: Path) -> None:
    report = verify_archive(archive)
    assert report.ok and report.attachments > 0
    done = chain(auditor, archive)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{report.last_seq} {report.head}"
    middle = report.last_seq // 2
    line = json.loads(b"".join(p.read_bytes() for p in segments(archive)).splitlines()[middle])
    done = chain(auditor, archive, str(middle + 1))
    assert done.stdout.strip() == f"{middle + 1} {line_hash(canonical(line))}"


def edit_message(root: Path, *, fix_digest: bool) -> None:
    path = segments(root)[0]
    lines = path.read_bytes().splitlines()
    index = next(i for i, raw in enumerate(lines) if b'"kind":"message"' in raw)
    obj = json.loads(lines[index])
    obj["record"]["message"] = "forged"
    if fix_digest:
        obj["digest"] = record_digest(obj["record"])
    lines[index] = canonical(obj)
    path.write_bytes(b"".join(raw + b"\n" for raw in lines))


@pytest.mark.parametrize(
    ("fix_digest", "error"),
    [(False, "digest does not match the record"), (True, "does not follow line seq")],
)
def test_chain_recipe_finds_an_edit(
    auditor: Path, archive: Path, fix_digest: bool, error: str
) -> None:
    edit_message(archive, fix_digest=fix_digest)
    done = chain(auditor, archive)
    assert done.returncode == 1 and error in done.stderr


def some_blob(root: Path) -> Path:
    for raw in b"".join(p.read_bytes() for p in segments(root)).splitlines():
        obj = json.loads(raw)
        if obj["kind"] == "attachment":
            return root / blob_relpath(obj["sha256"])
    raise AssertionError("no attachment in the archive")


def same_size(path: Path) -> None:
    path.write_bytes(bytes(reversed(path.read_bytes())))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def test_blobs_recipe(auditor: Path, archive: Path) -> None:
    done = run(auditor, "check_blobs.sh", ROOT=str(archive))
    assert done.returncode == 0, done.stdout + done.stderr


def test_blobs_recipe_on_an_archive_without_attachments(auditor: Path, tmp_path: Path) -> None:
    """A good archive with no attachment line: an empty checklist, which `sha256sum
    --strict` alone refuses (the recipe failed a good archive before it tested for one)."""
    root = tmp_path / "no-attachments"

    async def build() -> None:
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state)
        await writer.append_event("start")
        await writer.append_messages("s", [message(n) for n in range(3)], "sync")
        await writer.append_event("stop")
        await writer.close()
        state.close()

    asyncio.run(build())
    assert verify_archive(root).ok
    assert chain(auditor, root).returncode == 0
    done = run(auditor, "check_blobs.sh", ROOT=str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no blob to check" in done.stdout


@pytest.mark.parametrize("damage", [same_size, truncated, Path.unlink])
def test_blobs_recipe_finds_damage(
    auditor: Path, archive: Path, damage: Callable[[Path], None]
) -> None:
    blob = some_blob(archive)
    if damage is same_size and blob.read_bytes() == bytes(reversed(blob.read_bytes())):
        pytest.fail("a palindrome blob cannot be reversed into other bytes")
    damage(blob)
    done = run(auditor, "check_blobs.sh", ROOT=str(archive))
    assert done.returncode != 0


def last_note(root: Path) -> Path:
    return checkpoint.list_checkpoints(root)[-1][1]


def check_note(
    auditor: Path, archive: Path, pub: Path, note: Path
) -> subprocess.CompletedProcess[str]:
    return run(auditor, "check_checkpoint.sh", ROOT=str(archive), PUB=str(pub), NOTE=str(note))


def test_checkpoint_recipe(auditor: Path, archive: Path, built: tuple[Path, Path]) -> None:
    done = check_note(auditor, archive, built[1], last_note(archive))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Signature Verified Successfully" in done.stdout


def rewrite_whole_chain(root: Path) -> None:
    edit_message(root, fix_digest=True)
    prev = ZERO_HASH
    for path in segments(root):
        out = []
        for raw in path.read_bytes().splitlines():
            obj = json.loads(raw)
            obj["prev"] = prev
            line = canonical(obj)
            out.append(line)
            prev = line_hash(line)
        path.write_bytes(b"".join(line + b"\n" for line in out))


def forge_note(root: Path) -> None:
    note = checkpoint.parse(last_note(root).read_bytes())
    other = Ed25519PrivateKey.generate()
    forged = checkpoint.sign(other, note.origin, note.seq, note.head, note.time)
    last_note(root).write_bytes(forged)


def alter_note(root: Path) -> None:
    path = last_note(root)
    lines = path.read_bytes().split(b"\n")
    lines[3] = b"2020-01-01T00:00:00Z"  # the time: signed text, so the signature fails
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (rewrite_whole_chain, "does not hash to the signed head"),
        (forge_note, "key id"),
        (alter_note, "Signature Verification Failure"),
    ],
)
def test_checkpoint_recipe_finds_tampering(
    auditor: Path,
    archive: Path,
    built: tuple[Path, Path],
    damage: Callable[[Path], None],
    says: str,
) -> None:
    assert chain(auditor, archive).returncode == 0
    damage(archive)
    done = check_note(auditor, archive, built[1], last_note(archive))
    assert done.returncode != 0
    assert says in done.stdout + done.stderr
