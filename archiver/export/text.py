"""Making untrusted text safe to show: visible control characters, HTML escaping, CSV cells.

The HTML and CSV outputs are renderings for people; the JSONL output keeps the exact bytes. So
here a character that could hide or disguise content is made visible instead of passed on:
- C0/C1 controls (NUL, ESC, ...), apart from tab, CR and LF in message bodies, become `[U+0000]`:
  a NUL truncates text in some tools and is dropped silently by HTML parsers.
- Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) become
  `[U+202E]`: they can make `gpj.exe` read as `exe.jpg` to a reviewer. Ordinary right-to-left
  text needs none of them and still shows as written (pages use `dir="auto"`).
- Lone surrogates (text cut at a UTF-16 unit upstream) cannot be written as UTF-8 and become
  `[U+D800]`.
Joiners (U+200D, used in emoji sequences) and marks (U+200E/U+200F) are left alone.
"""

from __future__ import annotations

import html
import re
from typing import Final

_HIDDEN = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_HIDDEN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Leading characters that make Excel, LibreOffice or Sheets read a cell as a formula (OWASP
# "CSV injection"), plus the full-width forms some locales accept as the same operators.
_FORMULA_START: Final = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def _marker(match: re.Match[str]) -> str:
    return f"[U+{ord(match.group()):04X}]"


def visible(text: str) -> str:
    """Message body text with hidden characters made visible; newlines and tabs kept."""
    return _HIDDEN.sub(_marker, text)


def visible_name(text: str) -> str:
    """A one-line value (a name, a number, an id): every control, newline too, made visible."""
    return _HIDDEN_NAME.sub(_marker, text)


def _html_marker(match: re.Match[str]) -> str:
    # Boxed, so that a sender who typed the characters "[U+202E]" cannot pass for a control.
    return f'<span class="ctl">U+{ord(match.group()):04X}</span>'


def html_text(text: str) -> str:
    """Body text for an HTML element: escaped (quotes too), hidden characters boxed.

    Escaping first is safe: it leaves control characters alone, and the markers that then
    replace them carry nothing but hex digits.
    """
    return _HIDDEN.sub(_html_marker, html.escape(text, quote=True))


def html_name(text: str) -> str:
    """A one-line value for HTML text; every control, newline too, boxed."""
    return _HIDDEN_NAME.sub(_html_marker, html.escape(text, quote=True))


def html_attr(text: str) -> str:
    """A value for an HTML attribute (no markup possible there): controls as `[U+0000]`."""
    return html.escape(visible_name(text), quote=True)


def csv_cell(text: str) -> str:
    """A CSV cell that spreadsheet tools show as text, never evaluate.

    A leading apostrophe is the convention those tools honour for "this is text"; the JSONL
    export keeps the untouched value for anyone who needs it.
    """
    if text and text[0] in _FORMULA_START:
        return "'" + text
    return text


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut: names can be 300 bytes long."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
