"""The HTML in a real browser: headless Chromium (Debian's `chromium` package; CI installs it).

A missing browser fails the test rather than skipping it: a skipped render check looks green
while nobody has seen a page.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from archiver.export.files import session_file
from tests.export.archive import Archive, attachment_ref, png
from tests.export.helpers import export

HOSTILE = '<script>document.title="pwned"</script>'


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is missing: run `sudo scripts/system-deps` (make test does, as root)")
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, channels, raw pixel bytes) of an 8-bit, non-interlaced RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    pixels, previous = bytearray(), bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        pixels += line
        previous = line
    return width, height, channels, bytes(pixels)


def test_page_renders_escaped_and_with_its_image(archive: Archive, tmp_path: Path) -> None:
    archive.message(
        "S",
        "m",
        text=f"{HOSTILE} café ☕ 👍 \u202egpj.exe",
        attachments=(attachment_ref("a"),),
        message_type=2,
    )
    archive.attachment("S", "m", "a", png(64, 64))
    out = tmp_path / "out"
    export(archive.root, out, formats=("html",))
    url = (out / session_file("S")).as_uri()

    dom = chromium(tmp_path, "--dump-dom", url).stdout
    assert "<title>Conversation S</title>" in dom  # the page's "script" never ran
    assert "pwned</title>" not in dom and "<script" not in dom.lower()
    assert '&lt;script&gt;document.title="pwned"&lt;/script&gt; café ☕ 👍' in dom
    assert '<span class="ctl">U+202E</span>gpj.exe' in dom

    shot = tmp_path / "page.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,700", url)
    width, height, channels, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1000, 700)
    red = sum(
        1
        for i in range(0, len(pixels), channels)
        if pixels[i] > 220 and pixels[i + 1] < 40 and pixels[i + 2] < 40
    )
    # The 64x64 red attachment is on screen: it was copied, linked and allowed by the CSP.
    assert red >= 64 * 64 * 0.8, red
