"""Crash-safe file writing and file hashing, shared by checkpoints, caches and training states.

An atomic write goes to a temporary file ``.<name>.<random>.tmp`` in the target's folder, is
flushed and fsynced, renamed over the target, and the folder is fsynced: the target holds its
old content or all of the new, never a part. A writer killed mid-way leaves only the
temporary file, which :func:`remove_stale_temporaries` clears.

Also here: :func:`write_failure`, the one wording of "this file could not be written, and why"
used by caches, training runs and checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def atomic_write(target: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(stream)`` into a temporary file, then move it over ``target`` atomically."""
    with _atomic_stream(target, "wb") as stream:
        write(stream)


def atomic_text_file(target: Path) -> contextlib.AbstractContextManager[IO[str]]:
    """A UTF-8 text stream for writing ``target`` piece by piece (a large output streamed as it is
    made); it replaces ``target`` atomically when the block ends, and is deleted if the block raises."""
    return _atomic_stream(target, "w")


@contextlib.contextmanager
def _atomic_stream(target: Path, mode: str) -> Iterator[Any]:
    """A stream to a temporary file beside ``target`` (``mode`` "wb" or "w": UTF-8 text), flushed,
    fsynced and renamed over ``target`` when the block ends; deleted if the block raises."""
    target = Path(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the user's group
        with os.fdopen(handle, mode, encoding=None if "b" in mode else "utf-8") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_folder(target.parent)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_write`)."""
    atomic_write(target, lambda stream: stream.write(data))


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_stale_temporaries(folder: Path, targets: Sequence[str] | None = None) -> None:
    """Delete temporary files left in ``folder`` by writers that were killed: all of them, or
    only those of the files named ``targets`` (when other writers share the folder)."""
    patterns = [f".*{TEMP_SUFFIX}"] if targets is None else [f".{name}.*{TEMP_SUFFIX}" for name in targets]
    for pattern in patterns:
        for leftover in Path(folder).glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_failure(target: Path, exc: OSError) -> str:
    """``cannot write PATH: REASON; REMEDY`` for an OSError raised while writing ``target`` (a full
    disk, a read-only or foreign folder, ...). PATH is the file or folder the error names (a
    folder that could not be made, say), else ``target``; never a temporary file."""
    named = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else None
    temporary = named is not None and named.name.startswith(".") and named.name.endswith(TEMP_SUFFIX)
    path = named if named is not None and not temporary else target
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        remedy = "free some disk space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        remedy = f"make {path.parent} writable or choose another folder"
    else:
        remedy = "fix the storage problem"
    return f"cannot write {path}: {reason}; {remedy}"
