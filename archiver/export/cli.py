"""`zoom-sms-archiver export ROOT --out DIR [filters]`: the command-line front end.

`add_export_arguments` and `run_export` are what archiver/cli.py wires into its `export`
sub-command; `python -m archiver.export.cli` runs the very same parser on its own.

Exit codes (as for every command): 0 exported; 1 the archive failed a check (a broken chain, a
blob that is missing or does not match its hash); 2 bad usage (dates, formats, folders).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from archiver.errors import ArchiverError
from archiver.export.filters import (
    DIRECTIONS,
    FORMATS,
    ExportFilter,
    ExportUsageError,
    parse_when,
)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
_SHOWN_PROBLEMS: Final = 20


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The `export` arguments, added to a (sub)parser."""
    parser.add_argument("root", help="archive root folder (holds manifest/ and blobs/)")
    parser.add_argument("--out", required=True, help="new or empty folder for the export")
    parser.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="ID",
        help="only this session (repeatable)",
    )
    parser.add_argument(
        "--phone",
        action="append",
        default=[],
        metavar="NUMBER",
        help="only messages this number sent or received (repeatable; digits are compared)",
    )
    parser.add_argument(
        "--from", dest="start", metavar="DATE", help="from this UTC date or time, inclusive"
    )
    parser.add_argument(
        "--to", dest="end", metavar="DATE", help="to this UTC date or time, inclusive"
    )
    parser.add_argument("--direction", choices=DIRECTIONS, help="only incoming or outgoing")
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        help="html, csv or jsonl (repeatable; default: all three)",
    )
    parser.add_argument(
        "--all-versions", action="store_true", help="every archived version of changed messages"
    )
    parser.add_argument(
        "--csv-bom", action="store_true", help="start the CSV with a UTF-8 BOM (for Excel)"
    )


def filter_from_args(args: argparse.Namespace) -> ExportFilter:
    """The ExportFilter the arguments ask for; ExportUsageError when they do not make one."""
    return ExportFilter(
        sessions=tuple(args.session),
        phones=tuple(args.phone),
        start=parse_when(args.start, end_of_day=False) if args.start else None,
        end=parse_when(args.end, end_of_day=True) if args.end else None,
        direction=args.direction,
        all_versions=args.all_versions,
        # dict.fromkeys: `--format csv --format csv` is one CSV, in the order first asked.
        formats=tuple(dict.fromkeys(args.formats)) if args.formats else FORMATS,
        csv_bom=args.csv_bom,
    )


def run_export(args: argparse.Namespace) -> int:
    """Run the export for parsed arguments; prints a summary, returns the exit code."""
    from archiver.export.run import export_archive

    try:
        flt = filter_from_args(args)
        result = export_archive(Path(args.root), Path(args.out), flt)
    except ExportUsageError as exc:
        _say(f"zoom-sms-archiver export: {exc}", err=True)
        return EXIT_USAGE
    except (ArchiverError, OSError) as exc:
        _say(f"zoom-sms-archiver export: failed: {exc}", err=True)
        return EXIT_FAILED
    counts = result.counts
    _say(
        f"exported {counts['messages']} message(s) ({counts['message_lines']} line(s)) in "
        f"{counts['sessions']} session(s) to {args.out}; archive seq {result.last_seq}, "
        f"chain head {result.head}"
    )
    if counts["problems"]:
        for problem in result.problems[:_SHOWN_PROBLEMS]:
            _say(f"zoom-sms-archiver export: problem: {problem}", err=True)
        _say(
            f"zoom-sms-archiver export: {counts['problems']} problem(s), listed in export.json",
            err=True,
        )
        return EXIT_FAILED
    return EXIT_OK


def _say(text: str, *, err: bool = False) -> None:
    # Written, not printed: a command-line front end talks to the terminal on purpose, and
    # this keeps the T201 lint (no stray prints in the package) meaningful everywhere else.
    (sys.stderr if err else sys.stdout).write(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoom-sms-archiver export",
        description="Export archived messages as HTML transcripts, CSV and verifiable JSONL.",
    )
    add_export_arguments(parser)
    return run_export(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
