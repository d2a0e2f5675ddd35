"""Files that survive a crash whole or not at all (write to a temporary name, fsync, rename),
and the checksum every pinned model file is verified with."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks so 150 MB weights never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_writer(dest: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file that appears at `dest` only if the block completes.

    A crash or an error never leaves a half-written file under `dest`, and two processes racing
    on the same `dest` both end with a complete file. `mode` is the file's permissions: owner-only
    by default (spooled uploads); 0o644 for files other users read (the shared model cache).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            os.fchmod(out.fileno(), mode)  # mkstemp always creates 0600
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    """Make the names just created in `directory` (renames included) survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
