"""Export for reviewers and auditors: HTML transcripts, CSV and filtered, verifiable JSONL.

    filters   ExportFilter, date parsing, does a record match (pure)
    text      visible control characters, HTML escaping, CSV formula guard (pure)
    view      one message as the outputs show it (pure)
    html      page fragments (pure)      csvout    CSV columns and rows
    reader    manifest streaming with the hash chain checked; lines read back by position
    index     the temporary SQLite index: selection, latest versions, order
    files     hashed output files, attachment copies re-checked against their SHA-256
    run       the two passes and export.json          cli   argparse front end

The output layout and columns are documented in docs/EXPORT.md.
"""

from archiver.export.filters import ExportFilter, ExportUsageError
from archiver.export.run import ExportResult, export_archive

__all__ = ["ExportFilter", "ExportResult", "ExportUsageError", "export_archive"]
