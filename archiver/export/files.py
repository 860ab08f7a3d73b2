"""Files of the export: written through SHA-256, named by hashes, blobs copied with a re-check.

No name or id from Zoom ever becomes part of a path here: session pages are named by a hash of
the session id, attachment copies by their content hash plus an extension taken from a fixed
table (never an extension that a browser would run, such as .html or .svg).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final, Protocol

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW

_CHUNK: Final = 1 << 20
_BY_TYPE: Final = {"PNG": "png", "GIF": "gif", "JPG": "jpg", "JPEG": "jpg"}
# Extensions a reviewer's machine opens with a viewer, not a browser or an interpreter.
_SAFE_EXT: Final = frozenset(
    {
        *("png", "gif", "jpg", "jpeg", "webp", "bmp", "heic", "tif", "tiff"),
        *("mp3", "m4a", "aac", "amr", "wav", "ogg", "oga", "opus"),
        *("mp4", "m4v", "mov", "3gp", "webm", "mkv", "avi"),
        *("pdf", "txt", "csv", "vcf", "ics", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "zip"),
    }
)
IMAGE_EXT: Final = frozenset({"png", "gif", "jpg", "jpeg", "webp", "bmp"})


class Registry(Protocol):
    """Where written files are recorded for export.json (the SQLite index)."""

    def add_written(self, path: str, sha256: str, size: int) -> None: ...

    def is_written(self, path: str) -> bool: ...


def session_file(session_id: str) -> str:
    """`sessions/<16 hex>.html`: stable across exports, and no session id ever touches a path."""
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sessions/{digest[:16]}.html"


def attachment_file(sha256: str, zoom_type: str, name: str) -> str:
    """`files/<sha256>.<ext>`; the extension comes from a fixed table, or is `bin`."""
    ext = _BY_TYPE.get(zoom_type.upper())
    if ext is None:
        suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower().lstrip(".")
        ext = suffix if suffix in _SAFE_EXT else "bin"
    return f"files/{sha256}.{ext}"


class OutDir:
    """The export folder, opened once: every file is written relative to its descriptor.

    The folder may be one that already existed (empty), so someone else may be able to write
    in it while the export runs. Nothing planted there is ever followed: folders are opened
    with O_NOFOLLOW (a `files -> /elsewhere` link fails the export instead of receiving its
    copies), files are created with O_EXCL | O_NOFOLLOW, renames replace names, and the
    descriptor keeps pointing at the folder that was checked even if its name is moved.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fds: dict[str, int] = {"": os.open(path, _DIR_FLAGS)}

    def through_descriptor(self) -> str:
        """The folder as a path the kernel resolves through the descriptor, never through
        its name: /proc/self/fd/N (for SQLite, which opens by path)."""
        return f"/proc/self/fd/{self._fds['']}"

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _dir(self, folder: str) -> int:
        """The descriptor of `folder` (relative, "/"-separated), made (0700) when missing."""
        if folder in self._fds:
            return self._fds[folder]
        parent, _, name = folder.rpartition("/")
        parent_fd = self._dir(parent)
        # Exists: ours from earlier, or planted; the O_NOFOLLOW open below tells which.
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            raise OSError(
                exc.errno, f"{self.path / folder} is not a folder the export made", str(folder)
            ) from None
        self._fds[folder] = fd
        return fd

    def create(self, relpath: str, buffering: int = _CHUNK) -> BinaryIO:
        """A new file `relpath` for writing (0600); FileExistsError when the name is taken."""
        folder, _, name = relpath.rpartition("/")
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=self._dir(folder))
        return os.fdopen(fd, "wb", buffering=buffering)

    def rename(self, old: str, new: str) -> None:
        """`old` becomes `new`, in the same folder; whatever held the name `new` is replaced."""
        folder, _, old_name = old.rpartition("/")
        new_folder, _, new_name = new.rpartition("/")
        assert folder == new_folder
        fd = self._dir(folder)
        os.rename(old_name, new_name, src_dir_fd=fd, dst_dir_fd=fd)

    def unlink(self, relpath: str) -> None:
        folder, _, name = relpath.rpartition("/")
        os.unlink(name, dir_fd=self._dir(folder))

    def fsync(self, relpath: str) -> None:
        """fsync the file `relpath` (opened read-only, without following a link)."""
        folder, _, name = relpath.rpartition("/")
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._dir(folder))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class OutputFile:
    """A text file of the export; its SHA-256 and size go to the registry when it is closed.

    Created with O_EXCL: the export folder was checked empty, so meeting a file means two
    outputs were given one name (a bug), or someone planted one: never overwritten.
    """

    def __init__(self, out: OutDir, relpath: str, registry: Registry) -> None:
        self.relpath = relpath
        self._registry = registry
        self._handle: BinaryIO = out.create(relpath)
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, text: str) -> int:
        # Text reaching here went through archiver.export.text, which makes lone surrogates
        # visible; "replace" is only a last guard so that no odd string can stop an export.
        self.write_bytes(text.encode("utf-8", "replace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        self._hash.update(data)
        self._handle.write(data)
        self._size += len(data)

    def close(self) -> None:
        self._handle.close()
        self._registry.add_written(self.relpath, self._hash.hexdigest(), self._size)

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_blob(root: Path, sha256: str, out: OutDir, relpath: str, registry: Registry) -> str | None:
    """Copy blob `sha256` (already validated as 64 hex) to `out/relpath`, re-hashing it.

    Returns None when the copy holds exactly the archived bytes, else the problem (missing,
    or content that no longer matches its name); a bad copy is removed, never left behind.
    """
    if registry.is_written(relpath):
        return None  # content-addressed: the same attachment in two messages is one file
    source = root / "blobs" / "sha256" / sha256[:2] / sha256
    partial = relpath + ".part"
    digest, size = hashlib.sha256(), 0
    try:
        # O_NOFOLLOW: a symlink planted in blobs/ must not pull an outside file into the export.
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        return f"blob {sha256}: cannot be read ({exc.strerror})"
    with os.fdopen(fd, "rb") as src, out.create(partial) as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    if digest.hexdigest() != sha256:
        out.unlink(partial)
        return f"blob {sha256}: content does not match its SHA-256"
    out.rename(partial, relpath)
    registry.add_written(relpath, sha256, size)
    return None
