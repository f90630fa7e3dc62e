"""Files the tool writes: all-or-nothing replacement, and checking a place can be written.

`replacing` writes beside the target and renames onto it, so a crash or a kill mid-write
leaves the old file (or none), never half of the new one (the rename is atomic because the
temporary file lives in the target's own folder). `unwritable` tells, before anything is
written, why a path could not be created there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path in `path`'s folder; renamed onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as written:  # on disk before the rename makes it the file
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def unwritable(path: str | Path) -> str | None:
    """Why `path` (a file or folder, existing or not) cannot be created or written, or None.

    It tries: a probe folder is made and removed in the nearest existing ancestor, since
    permission bits say nothing of read-only mounts, and everything is allowed to root.
    """
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    folder = existing if existing.is_dir() else existing.parent
    if existing != path and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mixmo-probe-", dir=folder))
    except OSError as err:
        return f"cannot write in {folder} ({err.strerror})"
    return None
