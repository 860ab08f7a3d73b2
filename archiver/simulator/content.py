"""Attachment bytes: generated on the fly, streamed in chunks, hashed cheaply.

A file of `size` bytes is `magic(type) + body + tail` cut to `size`, where `body` is the first
`size - len(magic) - len(tail)` bytes of one seeded 1 MiB block repeated forever and `tail`
names the attachment, so every file differs. Serving a 2 GiB file therefore costs one shared
block of memory, and hashing all files of a type costs one pass over the *largest*: one
running SHA-256 walks the common body and is copied at each file's body length to be
finished with that file's tail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

from archiver.simulator.generate import seeded
from archiver.simulator.model import Attachment

BLOCK_SIZE: Final = 1 << 20
MAGIC: Final = {
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF89a",
    "JPG": b"\xff\xd8\xff\xe0",
    "AUDIO": b"ID3\x04\x00",
    "VIDEO": b"\x00\x00\x00\x18ftypmp42",
    "OTHER": b"",
}
CONTENT_TYPES: Final = {
    "PNG": "image/png",
    "GIF": "image/gif",
    "JPG": "image/jpeg",
    "AUDIO": "audio/mpeg",
    "VIDEO": "video/mp4",
    "OTHER": "application/octet-stream",
}


class Content:
    def __init__(self, seed: int) -> None:
        self.block = memoryview(seeded(seed, "content").randbytes(BLOCK_SIZE))

    @staticmethod
    def tail(attachment: Attachment) -> bytes:
        return f"\nzoom-sim attachment {attachment.id}\n".encode()

    def chunks(
        self, attachment: Attachment, chunk_size: int = 256 * 1024
    ) -> Iterator[bytes | memoryview]:
        """The file's bytes in order, no chunk larger than `chunk_size`."""
        magic, tail, size = MAGIC[attachment.type], self.tail(attachment), attachment.size
        body = size - len(magic) - len(tail)
        if body < 0:
            if size:
                yield (magic + tail)[:size]
            return
        if magic:
            yield magic
        yield from self._body(0, body, chunk_size)
        yield tail

    def _body(self, start: int, stop: int, chunk_size: int) -> Iterator[bytes | memoryview]:
        position = start
        while position < stop:
            offset = position % BLOCK_SIZE
            length = min(BLOCK_SIZE - offset, stop - position, chunk_size)
            yield self.block[offset : offset + length]
            position += length

    def digest(self, attachment: Attachment) -> str:
        hasher = hashlib.sha256()
        for chunk in self.chunks(attachment, BLOCK_SIZE):
            hasher.update(chunk)
        return hasher.hexdigest()

    def fill_digests(self, attachments: Iterable[Attachment]) -> None:
        """Set `sha256` on each attachment: one pass per type over the longest body."""
        by_type: dict[str, list[tuple[int, Attachment]]] = {}
        for att in attachments:
            body = att.size - len(MAGIC[att.type]) - len(self.tail(att))
            if body < 0:
                att.sha256 = hashlib.sha256(
                    (MAGIC[att.type] + self.tail(att))[: att.size]
                ).hexdigest()
            else:
                by_type.setdefault(att.type, []).append((body, att))
        for kind, items in by_type.items():
            items.sort(key=lambda item: item[0])
            running = hashlib.sha256(MAGIC[kind])
            done = 0
            for body, att in items:
                for chunk in self._body(done, body, BLOCK_SIZE):
                    running.update(chunk)
                done = body
                final = running.copy()
                final.update(self.tail(att))
                att.sha256 = final.hexdigest()
