"""Command line: `zoom-sms-archiver` / `python -m archiver`.

Exit codes: 0 success; 1 verification found problems or the run failed; 2 bad usage or bad
configuration (the message names the file, the key and what is wrong).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from archiver.replica.hold import HoldOutcome
    from archiver.replica.restore import Restored

from archiver import __version__
from archiver.errors import ArchiverError, ConfigError, ZoomAuthError

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoom-sms-archiver",
        description="Keep a complete, verifiable archive of a Zoom account's SMS/MMS traffic.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the archiving daemon")
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.add_argument("--once", action="store_true", help="one complete pass, then exit 0")

    verify = sub.add_parser("verify", help="check the hash chain and every blob of an archive")
    verify.add_argument("root", help="archive root folder")
    verify.add_argument(
        "--sample",
        type=float,
        default=100.0,
        metavar="PCT",
        help="percentage of blobs to re-hash (default: all)",
    )
    verify.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PUB",
        help="public key (checkpoint.pub from `keygen`) whose signed checkpoints must all "
        "verify and match the manifest; repeatable",
    )
    verify.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="a chain head obtained elsewhere (a checkpoint, the journal): line SEQ must hash "
        "to HASH",
    )
    verify.add_argument(
        "--checkpoints",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of checkpoint notes kept elsewhere (a replica, the journal's copies), "
        "checked with --trust like ROOT/checkpoints; repeatable",
    )
    verify.add_argument(
        "--account",
        metavar="ID",
        help="the Zoom account the archive is for: every note's origin must be its own",
    )
    verify.add_argument(
        "--complete",
        action="store_true",
        help="an attachment still pending download is a problem, not a note",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable report")

    keygen = sub.add_parser("keygen", help="an Ed25519 key pair for signed checkpoints")
    keygen.add_argument(
        "--out", required=True, help="folder for checkpoint.key (0600) and checkpoint.pub"
    )

    status = sub.add_parser("status", help="progress, pending downloads, failures, budget use")
    status.add_argument("--config", required=True, help="TOML configuration file")
    status.add_argument("--json", action="store_true", help="machine-readable report")

    _replica_parsers(sub)

    simulate = sub.add_parser("simulate", help="run the Zoom Phone simulator on loopback")
    from archiver.simulator.cli import add_arguments

    add_arguments(simulate)

    export = sub.add_parser(
        "export", help="HTML transcripts, CSV and verifiable JSONL for reviewers and auditors"
    )
    from archiver.export.cli import add_export_arguments

    add_export_arguments(export)

    demo = sub.add_parser("demo", help="simulator + run --once + verify into a fresh folder")
    demo.add_argument("--dir", default=None, help="archive folder (default: a new temp folder)")
    return parser


def _replica_parsers(sub: Any) -> None:
    replica = sub.add_parser("replica", help="the WORM replica in S3: verify it, legal hold")
    rsub = replica.add_subparsers(dest="replica_command", required=True, metavar="COMMAND")
    check = rsub.add_parser(
        "verify", help="check the bucket alone: chain, blobs, locks, versions, the lag"
    )
    check.add_argument("--config", required=True, help="TOML configuration file")
    check.add_argument(
        "--sample", type=float, default=100.0, metavar="PCT", help="percentage of blobs to re-hash"
    )
    check.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PUB",
        help="public key whose signed checkpoints in the bucket must verify; repeatable",
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    hold = rsub.add_parser("legal-hold", help="set or clear legal hold on every object")
    hold.add_argument("--config", required=True, help="TOML configuration file")
    onoff = hold.add_mutually_exclusive_group(required=True)
    onoff.add_argument("--on", action="store_true", help="set legal hold")
    onoff.add_argument("--off", action="store_true", help="clear legal hold")

    restore = sub.add_parser("restore", help="rebuild a complete ROOT from the replica bucket")
    restore.add_argument("--config", required=True, help="TOML configuration file")
    restore.add_argument("--to", required=True, metavar="DIR", help="an empty or absent folder")
    restore.add_argument(
        "--upto",
        type=int,
        metavar="SEQ",
        help="restore lines 1..SEQ only (a prefix); later checkpoints go to recovered/",
    )
    restore.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PUB",
        help="public key whose signed checkpoints must verify, in the bucket and in the "
        "restored ROOT; repeatable",
    )
    restore.add_argument(
        "--oldest-versions",
        action="store_true",
        help="a key with several versions or a delete marker: take its oldest version (the "
        "WORM original) instead of refusing",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"zoom-sms-archiver: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ZoomAuthError as exc:
        # Refused credentials are a configuration problem: restarting will not fix them
        # (systemd's RestartPreventExitStatus=2 stops the restart loop).
        print(f"zoom-sms-archiver: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ArchiverError as exc:
        print(f"zoom-sms-archiver: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    commands = {
        "simulate": _simulate,
        "run": _run,
        "verify": _verify,
        "export": _export,
        "status": _status,
        "demo": _demo,
        "keygen": _keygen,
        "replica": _replica,
        "restore": _restore,
    }
    return commands[args.command](args)


def _simulate(args: argparse.Namespace) -> int:
    from archiver.simulator.cli import run_simulate

    return run_simulate(args)


def _export(args: argparse.Namespace) -> int:
    from archiver.export.cli import run_export

    return run_export(args)


def _demo(args: argparse.Namespace) -> int:
    from archiver.ops.demo import run_demo

    return run_demo(args.dir)


def _run(args: argparse.Namespace) -> int:
    from archiver.config import load_config
    from archiver.daemon import run_command
    from archiver.ops.logs import configure_logging

    config = load_config(args.config)
    configure_logging(config.log.level, config.log.format)
    return run_command(config, once=args.once)


def _status(args: argparse.Namespace) -> int:
    from archiver.config import load_config
    from archiver.ops.status import read_status, render, report_json

    report = read_status(load_config(args.config))
    print(report_json(report) if args.json else render(report))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    import json

    from archiver.store.verify import render_report, report_to_json, verify_archive

    root = Path(args.root)
    if not (root / "manifest").is_dir():
        print(f"zoom-sms-archiver: {root} is not an archive (no manifest/ folder)", file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= args.sample <= 100:
        # 0 re-hashes no blob; sizes, the chain and every other rule are still checked.
        print("zoom-sms-archiver: --sample must be in [0, 100]", file=sys.stderr)
        return EXIT_USAGE
    try:
        trust = [_public_key(path) for path in args.trust]
        expect = _expect_head(args.expect_head) if args.expect_head else None
        elsewhere = [_notes_dir(path, trust) for path in args.checkpoints]
    except ValueError as exc:
        print(f"zoom-sms-archiver: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = verify_archive(
        root,
        sample_pct=args.sample,
        trust=trust,
        expect_head=expect,
        complete=args.complete,
        account=args.account,
        checkpoint_dirs=elsewhere,
    )
    if args.json:
        print(json.dumps(report_to_json(report), indent=2, sort_keys=True))
    else:
        print(render_report(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def _public_key(path: str) -> Ed25519PublicKey:
    from archiver.store.checkpoint import load_public_key

    try:
        return load_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"--trust {path}: cannot be read ({exc.strerror})") from None
    except ValueError:
        raise ValueError(f"--trust {path}: not an Ed25519 public key in PEM") from None


def _notes_dir(path: str, trust: list[Ed25519PublicKey]) -> Path:
    if not trust:
        raise ValueError(f"--checkpoints {path}: give --trust PUB too, to check the notes")
    if not Path(path).is_dir():
        raise ValueError(f"--checkpoints {path}: not a folder (give the folder of .note files)")
    return Path(path)


def _expect_head(value: str) -> tuple[int, str]:
    from archiver.store.manifest import is_hex_digest

    seq, _, head = value.partition(":")
    if not seq.isdigit() or int(seq) < 1 or not is_hex_digest(head):
        raise ValueError(f"--expect-head {value!r}: give SEQ:HASH, e.g. 42:<64 lowercase hex>")
    return int(seq), head


def _replica(args: argparse.Namespace) -> int:
    import asyncio

    from archiver.config import load_config

    config = load_config(args.config)
    if args.replica_command == "verify":
        import dataclasses
        import json

        from archiver.replica.audit import render, run_audit

        if not 0 <= args.sample <= 100:
            print("zoom-sms-archiver: --sample must be in [0, 100]", file=sys.stderr)
            return EXIT_USAGE
        try:
            trust = [_public_key(path) for path in args.trust]
        except ValueError as exc:
            print(f"zoom-sms-archiver: {exc}", file=sys.stderr)
            return EXIT_USAGE
        report = _bucket_call(
            "replica verify",
            lambda: asyncio.run(run_audit(config, sample_pct=args.sample, trust=trust)),
        )
        if report is None:
            return EXIT_FAILED
        if args.json:
            print(json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True))
        else:
            print(render(report))
        return EXIT_OK if report.ok else EXIT_FAILED
    from archiver.replica.audit import connect
    from archiver.replica.hold import set_legal_hold

    async def hold() -> HoldOutcome:
        async with connect(config) as s3:
            return await set_legal_hold(s3, config, on=args.on)

    outcome = _bucket_call("replica legal-hold", lambda: asyncio.run(hold()))
    if outcome is None:
        return EXIT_FAILED
    print(
        f"legal hold {outcome.status} on {outcome.versions} object versions under "
        f"{config.replica.prefix!r}: {outcome.changed} changed, {outcome.already} already "
        f"{outcome.status}"
    )
    return EXIT_OK


def _restore(args: argparse.Namespace) -> int:
    import asyncio

    from archiver.config import load_config
    from archiver.replica.audit import connect
    from archiver.replica.restore import check_target, restore
    from archiver.store.verify import render_report, verify_archive

    config = load_config(args.config)
    target = Path(args.to)
    if args.upto is not None and args.upto < 1:
        print("zoom-sms-archiver: --upto must be a seq, 1 or more", file=sys.stderr)
        return EXIT_USAGE
    check_target(target)
    try:
        trust = [_public_key(path) for path in args.trust]
    except ValueError as exc:
        print(f"zoom-sms-archiver: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def go() -> Restored:
        async with connect(config, locked=False) as s3:
            return await restore(
                s3,
                config,
                target,
                upto=args.upto,
                trust=trust,
                oldest_versions=args.oldest_versions,
            )

    done = _bucket_call("restore", lambda: asyncio.run(go()), partial=target)
    if done is None:
        return EXIT_FAILED
    print(
        f"restored {done.lines} lines (seq 1..{done.last_seq}) in {done.segments} segments, "
        f"{done.blobs} blobs, {done.checkpoints} checkpoints into {target}"
    )
    for note in done.notes:
        print(f"zoom-sms-archiver: restore: {note}", file=sys.stderr)
    for problem in done.problems:
        print(f"zoom-sms-archiver: restore: {problem}", file=sys.stderr)
    report = verify_archive(target, trust=trust)
    print(render_report(report))
    return EXIT_OK if report.ok and not done.problems else EXIT_FAILED


def _bucket_call(what: str, call: Callable[[], T], partial: Path | None = None) -> T | None:
    """Run a replica command; a bucket that fails mid-way is one line (exit 1), never a
    traceback. Refusals at the start are ReplicaBucketError (exit 2, by main). `partial`:
    the folder a failed restore leaves half-written (the message says to delete it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from archiver.replica.bucket import describe

    try:
        return call()
    except (ClientError, BotoCoreError, OSError) as exc:
        again = "run again"
        if partial is not None and partial.exists():
            again = f"delete {partial} (a partial restore, not an archive) and run again"
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
            print(
                f"zoom-sms-archiver: {what}: {exc.strerror or type(exc).__name__}"
                f"{f' ({exc.filename})' if exc.filename else ''}: free space or fix the "
                f"permissions, then {again}",
                file=sys.stderr,
            )
            return None
        if partial is not None:
            print(
                f"zoom-sms-archiver: {what}: the bucket failed mid-way ({describe(exc)}): "
                f"check the bucket, then {again}",
                file=sys.stderr,
            )
            return None
        print(
            f"zoom-sms-archiver: {what}: the bucket failed mid-way ({describe(exc)}); nothing "
            "was changed that a second run does not finish: check the bucket and run again",
            file=sys.stderr,
        )
        return None


def _keygen(args: argparse.Namespace) -> int:
    from archiver.store.checkpoint import generate_keypair

    try:
        key, pub = generate_keypair(Path(args.out))
    except OSError as exc:
        print(f"zoom-sms-archiver: keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"private key {key} (mode 0600): set [archive] signing_key_file to it")
    print(f"public key  {pub}: give it to auditors for `verify --trust`")
    return EXIT_OK
